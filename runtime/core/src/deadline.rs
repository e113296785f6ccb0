//! Deadlines for `ask` without a timer per call.
//!
//! Arming a tokio timer for every ask costs more than the ask itself (timer
//! wheel registration plus timer-aware parking). Instead each pending ask
//! registers a weak handle to its reply slot here, and one reaper task per
//! node, sleeping until the earliest deadline, expires the slots whose
//! deadline passed. A reply that comes in time deregisters nothing: its entry
//! is skipped when it surfaces (the slot is gone or answered), and entries of
//! finished asks are compacted away when they dominate the heap.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::reply::Expire;

struct Entry {
    at: Instant,
    slot: Weak<dyn Expire>,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    /// Earliest deadline first in a max-heap.
    fn cmp(&self, o: &Self) -> Ordering {
        o.at.cmp(&self.at)
    }
}

struct State {
    /// Deadlines registered in non-decreasing order (the common case: every ask of a
    /// caller uses the same timeout), appended in O(1).
    queue: VecDeque<Entry>,
    /// The others.
    heap: BinaryHeap<Entry>,
    /// Compact when the heap grows past this (twice the live entries after the last one).
    compact_at: usize,
    task: Option<tokio::task::JoinHandle<()>>,
    wake_at: Option<Instant>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            heap: BinaryHeap::new(),
            compact_at: MIN_COMPACT,
            task: None,
            wake_at: None,
        }
    }
}

const MIN_COMPACT: usize = 4096;

/// One per node: expires the reply slots of asks whose deadline passed.
#[derive(Default)]
pub(crate) struct Reaper {
    state: Mutex<State>,
    wake: Arc<Notify>,
}

impl Reaper {
    /// Expires `slot` at `deadline` unless it completed by then.
    pub(crate) fn register(self: &Arc<Self>, deadline: Instant, slot: Weak<dyn Expire>) {
        let mut st = self.state.lock();
        let notify = st.wake_at.is_none_or(|w| deadline < w);
        if notify {
            st.wake_at = Some(deadline);
        }
        let entry = Entry { at: deadline, slot };
        if st.queue.back().is_none_or(|b| b.at <= deadline) {
            st.queue.push_back(entry);
        } else {
            st.heap.push(entry);
        }
        if st.queue.len() + st.heap.len() > st.compact_at {
            st.queue.retain(|e| e.slot.strong_count() > 0);
            let old = std::mem::take(&mut st.heap);
            st.heap = old
                .into_iter()
                .filter(|e| e.slot.strong_count() > 0)
                .collect();
            st.compact_at = ((st.queue.len() + st.heap.len()) * 2).max(MIN_COMPACT);
        }
        let needs_task = st.task.as_ref().is_none_or(|t| t.is_finished());
        if needs_task {
            st.task = Some(tokio::spawn(run(self.clone())));
        }
        drop(st);
        if notify {
            self.wake.notify_one();
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(t) = self.state.get_mut().task.take() {
            t.abort();
        }
    }
}

/// The reaper task: holds only a weak reference, so it ends with its node.
async fn run(reaper: Arc<Reaper>) {
    let weak = Arc::downgrade(&reaper);
    drop(reaper);
    loop {
        let Some(reaper) = weak.upgrade() else { return };
        let now = Instant::now();
        let (next, due) = {
            let mut st = reaper.state.lock();
            let mut due = Vec::new();
            let next_heap = loop {
                match st.heap.peek() {
                    Some(e) if e.at <= now => {
                        if let Some(e) = st.heap.pop() {
                            due.push(e.slot);
                        }
                    }
                    Some(e) if e.slot.strong_count() == 0 => {
                        st.heap.pop();
                    }
                    Some(e) => break Some(e.at),
                    None => break None,
                }
            };
            let next_queue = loop {
                match st.queue.front() {
                    Some(e) if e.at <= now => {
                        if let Some(e) = st.queue.pop_front() {
                            due.push(e.slot);
                        }
                    }
                    Some(e) if e.slot.strong_count() == 0 => {
                        st.queue.pop_front();
                    }
                    Some(e) => break Some(e.at),
                    None => break None,
                }
            };
            let next = match (next_heap, next_queue) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            st.wake_at = next;
            (next, due)
        };
        // Expire outside the lock: it takes the slot's lock and wakes the asker.
        for slot in due {
            if let Some(s) = slot.upgrade() {
                s.expire();
            }
        }
        let wake = reaper.wake.clone();
        drop(reaper);
        let notified = wake.notified();
        match next {
            Some(t) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(t.into()) => {}
                    _ = notified => {}
                }
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::reply::{self, NoReply};

    #[tokio::test]
    async fn deadlines_fire_in_order_whatever_the_registration_order() {
        let r = Arc::new(Reaper::default());
        let t0 = Instant::now();
        let (_ltx, long) = reply::channel::<()>();
        r.register(t0 + Duration::from_secs(30), long.expiry());
        for _ in 0..10_000 {
            let (tx, rx) = reply::channel::<()>();
            r.register(t0 + Duration::from_millis(50), rx.expiry());
            tx.send(());
        }
        let (_stx, short) = reply::channel::<()>();
        r.register(t0 + Duration::from_millis(150), short.expiry());
        let fired = tokio::time::timeout(Duration::from_secs(5), short).await;
        assert_eq!(fired, Ok(Err(NoReply::Expired)), "short deadline fired");
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert!(
            tokio::time::timeout(Duration::from_millis(10), long)
                .await
                .is_err(),
            "the 30 s deadline has not fired"
        );
        let live = {
            let st = r.state.lock();
            st.heap.len() + st.queue.len()
        };
        assert!(live < 10_000, "finished asks compacted away: {live}");
    }

    #[tokio::test]
    async fn an_answered_ask_is_not_expired() {
        let r = Arc::new(Reaper::default());
        let t0 = Instant::now();
        let (tx, rx) = reply::channel::<u8>();
        r.register(t0 + Duration::from_millis(20), rx.expiry());
        tx.send(5);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(rx.await, Ok(5));
    }
}
