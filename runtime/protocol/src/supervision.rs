//! What every supervisor answers: its live tree, and operator commands.

use serde::{Deserialize, Serialize};

use crate::Request;

/// Lifecycle state of a supervised child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChildState {
    /// Being started (its start function has not returned yet).
    Starting,
    /// Started and linked.
    Running,
    /// Exited; waiting out its restart backoff.
    Restarting,
    /// Stopped on purpose (or exited normally and not restarted).
    Stopped,
    /// Exited abnormally and will not be restarted (temporary child, or start failed).
    Failed,
}

/// The last abnormal exit of a child.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Panic message, error, or "killed".
    pub reason: String,
    /// Wall-clock time of the failure, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// One node of the live supervision tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorTree {
    /// The actor's path, e.g. `node-a/vector`.
    pub path: String,
    /// `supervisor` or `worker`.
    pub kind: String,
    /// Restart policy: `permanent`, `transient` or `temporary` (the root says `permanent`).
    pub restart: String,
    /// Current lifecycle state.
    pub state: ChildState,
    /// How many times it was restarted by its supervisor.
    pub restarts: u64,
    /// The most recent abnormal exit, if any.
    pub last_failure: Option<Failure>,
    /// Seconds since the current incarnation started (0 when not running).
    pub uptime_secs: f64,
    /// Supervision strategy, for supervisors.
    pub strategy: Option<String>,
    /// Children, in start order (empty for workers).
    pub children: Vec<ActorTree>,
}

impl ActorTree {
    /// Depth-first search for a path.
    pub fn find(&self, path: &str) -> Option<&ActorTree> {
        if self.path == path {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(path))
    }
}

/// Returns the supervisor's tree (itself and everything below it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetTree;

impl Request for GetTree {
    type Reply = ActorTree;
    const TYPE: &'static str = "supervision.get_tree";
}

/// Why a supervisor command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// No child of that name under this supervisor.
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    /// The child could not be started again.
    #[error("restart failed: {0}")]
    StartFailed(String),
    /// The supervisor is shutting down.
    #[error("supervisor is shutting down")]
    ShuttingDown,
}

/// Operator restart: stop the named child gracefully and start it again
/// (counted as a restart, with the strategy applied to its siblings).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartChild {
    /// Child name (last path segment).
    pub name: String,
}

impl Request for RestartChild {
    type Reply = Result<(), CommandError>;
    const TYPE: &'static str = "supervision.restart_child";
}

/// Fault injection: kill the named child abruptly, as a crash would; the
/// supervisor then reacts exactly as to any abnormal exit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KillChild {
    /// Child name (last path segment).
    pub name: String,
}

impl Request for KillChild {
    type Reply = Result<(), CommandError>;
    const TYPE: &'static str = "supervision.kill_child";
}
