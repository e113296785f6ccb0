//! A bounded log of supervision events (starts, exits, restarts, escalations),
//! for operators and the dashboard.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// What happened to an actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A child exited abnormally.
    Failed,
    /// A child exited normally.
    Exited,
    /// A child was started again by its supervisor.
    Restarted,
    /// A supervisor gave up (restart intensity exceeded) and failed itself.
    Escalated,
    /// A child could not be started.
    StartFailed,
    /// The Raft group's leader changed (as seen by this node's member).
    LeaderChanged,
    /// A cluster member joined, became suspect or dead, recovered or left.
    MembershipChanged,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// Actor path.
    pub path: String,
    /// What happened.
    pub kind: EventKind,
    /// Reason or detail.
    pub detail: String,
}

/// Ring buffer of the most recent events.
#[derive(Debug)]
pub struct EventLog {
    cap: usize,
    entries: Mutex<VecDeque<Event>>,
    total: Mutex<u64>,
}

impl EventLog {
    /// Keeps at most `cap` events.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            entries: Mutex::new(VecDeque::with_capacity(cap)),
            total: Mutex::new(0),
        }
    }

    /// Appends an event (dropping the oldest when full).
    pub fn push(&self, path: String, kind: EventKind, detail: String) {
        let ev = Event {
            at_unix_ms: unix_ms(SystemTime::now()),
            path,
            kind,
            detail,
        };
        let mut q = self.entries.lock();
        if q.len() == self.cap {
            q.pop_front();
        }
        q.push_back(ev);
        *self.total.lock() += 1;
    }

    /// The retained events, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.entries.lock().iter().cloned().collect()
    }

    /// How many events were ever logged.
    pub fn total(&self) -> u64 {
        *self.total.lock()
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
