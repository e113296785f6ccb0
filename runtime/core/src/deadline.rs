//! Deadlines for `ask` without a timer per call.
//!
//! Arming a tokio timer for every ask costs more than the ask itself (timer
//! wheel registration plus timer-aware parking). Instead each pending ask
//! registers an expiry channel here, and one reaper task per node, sleeping
//! until the earliest deadline, closes the channels of asks whose deadline
//! passed. Completed asks deregister; their heap entries are discarded
//! lazily (and the heap is rebuilt when stale entries dominate).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

#[derive(Default)]
struct State {
    next_id: u64,
    live: HashMap<u64, (Instant, oneshot::Sender<()>)>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// When the reaper will next look (None: it waits for a registration).
    wake_at: Option<Instant>,
}

/// The node's deadline reaper.
#[derive(Default)]
pub(crate) struct Reaper {
    state: Mutex<State>,
    wake: Arc<Notify>,
}

/// A registered deadline; deregisters on drop.
pub(crate) struct Registration {
    reaper: Arc<Reaper>,
    id: u64,
    /// Resolves (with an error) when the deadline passes.
    pub(crate) expired: oneshot::Receiver<()>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.reaper.state.lock().live.remove(&self.id);
    }
}

impl Reaper {
    /// Registers `deadline`; the returned registration's `expired` resolves then.
    pub(crate) fn register(self: &Arc<Self>, deadline: Instant) -> Registration {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock();
        let id = st.next_id;
        st.next_id += 1;
        let notify = st.wake_at.is_none_or(|w| deadline < w);
        if notify {
            st.wake_at = Some(deadline);
        }
        st.live.insert(id, (deadline, tx));
        st.heap.push(Reverse((deadline, id)));
        // Completed asks leave their heap entries behind: rebuild when they dominate.
        if st.heap.len() > 4 * st.live.len() + 4096 {
            let fresh: BinaryHeap<_> = st
                .live
                .iter()
                .map(|(id, (t, _))| Reverse((*t, *id)))
                .collect();
            st.heap = fresh;
        }
        let needs_task = st.task.as_ref().is_none_or(|t| t.is_finished());
        if needs_task {
            // Owned by the node: aborted when the node is dropped.
            st.task = Some(tokio::spawn(run(self.clone())));
        }
        drop(st);
        if notify {
            self.wake.notify_one();
        }
        Registration {
            reaper: self.clone(),
            id,
            expired: rx,
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

async fn run(reaper: Arc<Reaper>) {
    // Hold only a weak reference while sleeping so that dropping the node ends the task.
    let weak = Arc::downgrade(&reaper);
    drop(reaper);
    loop {
        let Some(reaper) = weak.upgrade() else { return };
        let now = Instant::now();
        let next = {
            let mut st = reaper.state.lock();
            let next = loop {
                match st.heap.peek().copied() {
                    Some(Reverse((t, id))) if t <= now => {
                        st.heap.pop();
                        // Dropping the sender wakes the waiting ask with "expired".
                        st.live.remove(&id);
                    }
                    Some(Reverse((_, id))) if !st.live.contains_key(&id) => {
                        st.heap.pop();
                    }
                    Some(Reverse((t, _))) => break Some(t),
                    None => break None,
                }
            };
            st.wake_at = next;
            next
        };
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

    #[tokio::test]
    async fn deadlines_fire_in_order_whatever_the_registration_order() {
        let r = Arc::new(Reaper::default());
        let t0 = Instant::now();
        let mut long = r.register(t0 + Duration::from_secs(30));
        // Many completed asks leave stale entries behind.
        for _ in 0..10_000 {
            drop(r.register(t0 + Duration::from_millis(50)));
        }
        let mut short = r.register(t0 + Duration::from_millis(150));
        let fired = tokio::time::timeout(Duration::from_secs(5), &mut short.expired).await;
        assert!(fired.is_ok(), "short deadline fired");
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert!(
            long.expired
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        assert!(
            r.state.lock().heap.len() < 10_000,
            "stale entries compacted"
        );
    }

    #[tokio::test]
    async fn a_deregistered_deadline_never_fires() {
        let r = Arc::new(Reaper::default());
        let t0 = Instant::now();
        drop(r.register(t0 + Duration::from_millis(20)));
        let mut other = r.register(t0 + Duration::from_millis(60));
        assert!(
            tokio::time::timeout(Duration::from_secs(5), &mut other.expired)
                .await
                .is_ok()
        );
        assert!(r.state.lock().live.is_empty() || r.state.lock().live.len() == 1);
    }
}
