//! Deadlines for `ask` without a timer per call.
//!
//! Arming a tokio timer for every ask costs more than the ask itself (timer
//! wheel registration plus timer-aware parking). Instead each pending ask
//! registers a weak handle to its reply slot here, and one reaper thread per
//! node, sleeping until the earliest deadline, expires the slots whose
//! deadline passed. A reply that comes in time deregisters nothing: its entry
//! is skipped when it surfaces (the slot is gone or answered), and entries of
//! finished asks are compacted away often, so their memory is reused while hot.
//!
//! The reaper is a plain thread, not a runtime task: a sleeping task would
//! keep a timer armed in the runtime, and every worker park would then arm a
//! kernel timer too (measured: a fifth of the ask's cost on two workers).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, MutexGuard};

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
    /// Compact when the entries grow past this (twice the live entries after the last one).
    compact_at: usize,
    /// When the reaper thread wakes next; `None` while it waits for a first entry.
    wake_at: Option<Instant>,
    /// Set when the node goes: the thread ends.
    stop: bool,
    thread: Option<JoinHandle<()>>,
}

/// Entries kept before finished ones are dropped: small, so that the reply slots they
/// hold weakly are freed while still in cache and reused by the next asks.
const MIN_COMPACT: usize = 16;

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// One per node: expires the reply slots of asks whose deadline passed.
pub(crate) struct Reaper {
    shared: Arc<Shared>,
}

impl Default for Reaper {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    heap: BinaryHeap::new(),
                    compact_at: MIN_COMPACT,
                    wake_at: None,
                    stop: false,
                    thread: None,
                }),
                wake: Condvar::new(),
            }),
        }
    }
}

impl Reaper {
    /// Expires `slot` at `deadline` unless it completed by then.
    pub(crate) fn register(&self, deadline: Instant, slot: Weak<dyn Expire>) {
        let mut st = self.shared.state.lock();
        let notify = st.wake_at.is_none_or(|w| deadline < w);
        if notify {
            st.wake_at = Some(deadline);
        }
        // The previous ask of a sequential caller is usually answered by now: dropping
        // its entry here frees its slot at once, so the allocator hands the same memory
        // to the next ask (two slots in rotation stay in cache; sixteen did not).
        while st.queue.back().is_some_and(|b| b.slot.strong_count() == 0) {
            st.queue.pop_back();
        }
        let entry = Entry { at: deadline, slot };
        if st.queue.back().is_none_or(|b| b.at <= deadline) {
            st.queue.push_back(entry);
        } else {
            st.heap.push(entry);
        }
        if st.queue.len() + st.heap.len() > st.compact_at {
            compact(&mut st);
        }
        if st.thread.is_none() {
            self.start(&mut st);
        }
        drop(st);
        if notify {
            self.shared.wake.notify_one();
        }
    }

    fn start(&self, st: &mut State) {
        let shared = self.shared.clone();
        match std::thread::Builder::new()
            .name("abi-ask-reaper".into())
            .spawn(move || run(&shared))
        {
            Ok(handle) => st.thread = Some(handle),
            // Without a thread no ask times out, but each still gets its reply; a
            // later registration tries again.
            Err(e) => tracing::error!(error = %e, "cannot start the ask deadline thread"),
        }
    }
}

/// Drops the entries of finished asks.
fn compact(st: &mut State) {
    st.queue.retain(|e| e.slot.strong_count() > 0);
    let old = std::mem::take(&mut st.heap);
    st.heap = old
        .into_iter()
        .filter(|e| e.slot.strong_count() > 0)
        .collect();
    st.compact_at = ((st.queue.len() + st.heap.len()) * 2).max(MIN_COMPACT);
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let thread = {
            let mut st = self.shared.state.lock();
            st.stop = true;
            st.thread.take()
        };
        self.shared.wake.notify_all();
        if let Some(t) = thread {
            // The thread itself never holds the reaper (only its shared state), but a
            // waker it fires may drop the last node on a runtime that shut down:
            // then it must not wait for itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

/// One of the two deadline orders (the in-order queue, the heap of the rest),
/// seen from its earliest entry.
trait Earliest {
    fn earliest(&self) -> Option<&Entry>;
    fn pop_earliest(&mut self) -> Option<Entry>;
}

impl Earliest for VecDeque<Entry> {
    fn earliest(&self) -> Option<&Entry> {
        self.front()
    }
    fn pop_earliest(&mut self) -> Option<Entry> {
        self.pop_front()
    }
}

impl Earliest for BinaryHeap<Entry> {
    fn earliest(&self) -> Option<&Entry> {
        self.peek()
    }
    fn pop_earliest(&mut self) -> Option<Entry> {
        self.pop()
    }
}

/// Moves the entries of `q` due at `now` into `due` (dropping finished ones on the
/// way); returns the next deadline left in `q`.
fn drain(q: &mut impl Earliest, now: Instant, due: &mut Vec<Weak<dyn Expire>>) -> Option<Instant> {
    loop {
        let e = q.earliest()?;
        if e.at <= now {
            due.extend(q.pop_earliest().map(|e| e.slot));
        } else if e.slot.strong_count() == 0 {
            q.pop_earliest();
        } else {
            return Some(e.at);
        }
    }
}

/// Pops the entries due at `now` (and finished ones on the way); returns them with the
/// next deadline.
fn due(st: &mut State, now: Instant) -> (Option<Instant>, Vec<Weak<dyn Expire>>) {
    let mut due = Vec::new();
    let next_heap = drain(&mut st.heap, now, &mut due);
    let next_queue = drain(&mut st.queue, now, &mut due);
    let next = match (next_heap, next_queue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    (next, due)
}

/// The reaper thread: sleeps until the earliest deadline or a new earlier one.
fn run(shared: &Shared) {
    let mut st = shared.state.lock();
    loop {
        if st.stop {
            return;
        }
        let (next, due) = due(&mut st, Instant::now());
        st.wake_at = next;
        if !due.is_empty() {
            // Expire outside the lock: it takes the slot's lock and wakes the asker.
            MutexGuard::unlocked(&mut st, || {
                for slot in due {
                    if let Some(s) = slot.upgrade() {
                        s.expire();
                    }
                }
            });
            continue;
        }
        match next {
            Some(t) => {
                shared.wake.wait_until(&mut st, t);
            }
            None => shared.wake.wait(&mut st),
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
        let r = Reaper::default();
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
            let st = r.shared.state.lock();
            st.heap.len() + st.queue.len()
        };
        assert!(live < 10_000, "finished asks compacted away: {live}");
    }

    #[tokio::test]
    async fn a_sequential_callers_answered_asks_leave_no_entries() {
        let r = Reaper::default();
        let t0 = Instant::now();
        for i in 0..100u32 {
            let (tx, rx) = reply::channel::<u32>();
            r.register(t0 + Duration::from_secs(5), rx.expiry());
            tx.send(i);
            assert_eq!(rx.await, Ok(i));
            let st = r.shared.state.lock();
            assert!(
                st.queue.len() + st.heap.len() <= 1,
                "only the last ask's entry"
            );
        }
    }

    #[tokio::test]
    async fn an_answered_ask_is_not_expired() {
        let r = Reaper::default();
        let t0 = Instant::now();
        let (tx, rx) = reply::channel::<u8>();
        r.register(t0 + Duration::from_millis(20), rx.expiry());
        tx.send(5);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(rx.await, Ok(5));
    }
}
