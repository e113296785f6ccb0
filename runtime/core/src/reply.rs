//! The reply slot of an ask: a one-shot channel that either the replying actor or the
//! node's deadline reaper completes, whichever comes first.
//!
//! One allocation per ask (the shared slot). The reaper holds only a `Weak` to it, so a
//! reply that arrives in time costs no deregistration: the reaper later finds the slot
//! gone (or already answered) and skips it.
//!
//! The slot is lock-free, in the manner of tokio's oneshot: one atomic state word says who
//! owns the value and waker cells at each moment. An ask's reply takes three atomic
//! read-modify-writes on the state (the receiver storing its waker, the completion, the
//! receiver leaving) where a mutex took six; they are a fifth of a local ask's cost. This
//! module holds the crate's only `unsafe` code.

use std::cell::UnsafeCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

/// Why a receiver got no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoReply {
    /// The sender was dropped without replying (actor stopped or discarded the call).
    Dropped,
    /// The deadline passed first.
    Expired,
}

/// The waker cell holds the receiver's waker; completers may wake it. While unset, the
/// receiver alone owns the cell.
const RX_WAKER: usize = 1;
/// The value cell holds the reply; from then on the receiver alone owns it.
const VALUE: usize = 2;
/// The sender went without replying.
const TX_GONE: usize = 4;
/// The deadline passed before a reply.
const EXPIRED: usize = 8;
/// The receiver left (answered, expired, or dropped its future).
const RX_GONE: usize = 16;

/// Any of these ends the slot for the receiver; exactly one of them is ever set.
const COMPLETE: usize = VALUE | TX_GONE | EXPIRED;

struct Slot<T> {
    state: AtomicUsize,
    value: UnsafeCell<Option<T>>,
    waker: UnsafeCell<Option<Waker>>,
}

// SAFETY: the cells are only accessed by the party the state word gives them to (see the
// constants above): the value by the sender before `VALUE` and by the receiver after it,
// the waker by the receiver while `RX_WAKER` is unset and read-only by everyone while it
// is set. `T` crosses threads, hence `T: Send`; a `&Slot` never hands out `&T`, so `Sync`
// needs no `T: Sync`.
unsafe impl<T: Send> Send for Slot<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Slot<T> {}

impl<T> Slot<T> {
    /// Sets `bit` (one of the completions) unless the slot already completed or the
    /// receiver left; returns whether it was set. Wakes the receiver when it was.
    fn complete(&self, bit: usize) -> bool {
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if cur & (COMPLETE | RX_GONE) != 0 {
                return false;
            }
            match self.state.compare_exchange_weak(
                cur,
                cur | bit,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        if cur & RX_WAKER != 0 {
            // SAFETY: `RX_WAKER` was set when we completed, so the receiver stored its
            // waker before (Release on its side, Acquire on ours) and will not modify the
            // cell again: it sees the completion in every later state change.
            if let Some(w) = unsafe { &*self.waker.get() } {
                w.wake_by_ref();
            }
        }
        true
    }
}

/// What the reaper can do to a pending slot.
pub(crate) trait Expire: Send + Sync {
    /// Completes the slot with [`NoReply::Expired`] unless it was answered.
    fn expire(&self);
}

impl<T: Send> Expire for Slot<T> {
    fn expire(&self) {
        self.complete(EXPIRED);
    }
}

/// The replying side, carried inside the request (one pointer: it is part of every
/// message an ask sends).
pub(crate) struct Sender<T> {
    slot: Arc<Slot<T>>,
}

/// The asking side: a future of the reply.
pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
    /// Set once the future returned `Ready`: the slot is then finished with.
    done: bool,
}

/// A new slot.
pub(crate) fn channel<T: Send + 'static>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: AtomicUsize::new(0),
        value: UnsafeCell::new(None),
        waker: UnsafeCell::new(None),
    });
    (
        Sender { slot: slot.clone() },
        Receiver { slot, done: false },
    )
}

impl<T: Send + 'static> Receiver<T> {
    /// A weak handle for the reaper.
    pub(crate) fn expiry(&self) -> std::sync::Weak<dyn Expire> {
        let weak: std::sync::Weak<Slot<T>> = Arc::downgrade(&self.slot);
        weak
    }
}

impl<T> Sender<T> {
    /// Delivers the reply (dropped silently when the asker gave up).
    pub(crate) fn send(self, value: T) {
        let slot = &*self.slot;
        if slot.state.load(Ordering::Acquire) & (COMPLETE | RX_GONE) != 0 {
            return;
        }
        // SAFETY: `VALUE` is not set, so the sender owns the value cell; the receiver
        // reads it only after seeing `VALUE`, which `complete` publishes with Release.
        unsafe { *slot.value.get() = Some(value) };
        if !slot.complete(VALUE) {
            // Expired or abandoned meanwhile: nobody will read the value; drop it here.
            // SAFETY: `VALUE` was not set by us, so the cell is still the sender's.
            drop(unsafe { (*slot.value.get()).take() });
        }
        // Dropping `self` now finds the slot complete: a load, no write.
    }

    /// Whether the asker stopped waiting (timed out or dropped its future).
    pub(crate) fn is_closed(&self) -> bool {
        self.slot.state.load(Ordering::Acquire) & (EXPIRED | RX_GONE) != 0
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        // No-op after a reply (the slot is complete).
        self.slot.complete(TX_GONE);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if !self.done {
            // Tells the sender its work is wasted; a value sent meanwhile is dropped
            // with the slot.
            self.slot.state.fetch_or(RX_GONE, Ordering::AcqRel);
        }
    }
}

impl<T> Receiver<T> {
    /// The outcome of a completed slot (`state` has a `COMPLETE` bit, read with Acquire).
    fn outcome(&mut self, state: usize) -> Result<T, NoReply> {
        if state & VALUE != 0 {
            // SAFETY: `VALUE` is set (observed with Acquire after the sender's Release),
            // so the receiver owns the value cell.
            let v = unsafe { (*self.slot.value.get()).take() };
            v.ok_or(NoReply::Dropped)
        } else if state & EXPIRED != 0 {
            Err(NoReply::Expired)
        } else {
            Err(NoReply::Dropped)
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, NoReply>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let slot = &*this.slot;
        let mut state = slot.state.load(Ordering::Acquire);
        if state & COMPLETE == 0 {
            if state & RX_WAKER != 0 {
                // SAFETY: with `RX_WAKER` set the cell is only read, by anyone.
                let same = unsafe { &*slot.waker.get() }
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()));
                if same {
                    return Poll::Pending;
                }
                // Take the cell back to replace the waker.
                state = slot.state.fetch_and(!RX_WAKER, Ordering::AcqRel);
                if state & COMPLETE != 0 {
                    // A completer may be waking the old waker right now: leave the cell
                    // alone (it is dropped with the slot) and take the outcome.
                    return this.finish(state);
                }
            }
            // SAFETY: `RX_WAKER` is unset, so the receiver alone owns the cell.
            unsafe { *slot.waker.get() = Some(cx.waker().clone()) };
            state = slot.state.fetch_or(RX_WAKER, Ordering::AcqRel);
            if state & COMPLETE == 0 {
                return Poll::Pending;
            }
            // Completed before the waker was published: nobody woke us, answer now.
        }
        this.finish(state)
    }
}

impl<T> Receiver<T> {
    fn finish(&mut self, state: usize) -> Poll<Result<T, NoReply>> {
        // Answered or expired: whatever comes later finds the slot complete.
        self.done = true;
        Poll::Ready(self.outcome(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reply_expiry_and_drop() {
        let (tx, rx) = channel::<u32>();
        tx.send(7);
        assert_eq!(rx.await, Ok(7));

        let (tx, rx) = channel::<u32>();
        let e = rx.expiry();
        e.upgrade().expect("alive").expire();
        assert!(tx.is_closed());
        tx.send(1);
        assert_eq!(rx.await, Err(NoReply::Expired));

        let (tx, rx) = channel::<u32>();
        drop(tx);
        assert_eq!(rx.await, Err(NoReply::Dropped));

        // A late expiry after the reply changes nothing.
        let (tx, rx) = channel::<u32>();
        let e = rx.expiry();
        tx.send(3);
        e.upgrade().expect("alive").expire();
        assert_eq!(rx.await, Ok(3));
    }

    /// Counts live values, so a test sees every sent value dropped exactly once.
    struct Counted(Arc<std::sync::atomic::AtomicIsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Replies, expiries, and receivers that give up race on three threads; each slot
    /// ends exactly one way and no value is leaked or dropped twice.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_reply_expiry_and_abandon() {
        let live = Arc::new(std::sync::atomic::AtomicIsize::new(0));
        for round in 0..2_000u32 {
            let (tx, rx) = channel::<Counted>();
            let expiry = rx.expiry();
            let l = live.clone();
            let replier = std::thread::spawn(move || {
                l.fetch_add(1, Ordering::SeqCst);
                tx.send(Counted(l));
            });
            let reaper = std::thread::spawn(move || {
                if let Some(s) = expiry.upgrade() {
                    s.expire();
                }
            });
            if round % 3 == 0 {
                drop(rx);
            } else {
                match rx.await {
                    Ok(v) => drop(v),
                    Err(e) => assert_eq!(e, NoReply::Expired),
                }
            }
            replier.join().expect("replier");
            reaper.join().expect("reaper");
        }
        assert_eq!(live.load(Ordering::SeqCst), 0, "every value dropped once");
    }

    /// A receiver polled with a new waker each time still hears the completion.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waker_replaced_between_polls() {
        for _ in 0..500 {
            let (tx, mut rx) = channel::<u8>();
            let first = futures::poll!(&mut rx);
            assert!(first.is_pending());
            let sender = std::thread::spawn(move || tx.send(9));
            // Polled again from another task: the waker changes.
            let got = tokio::spawn(rx).await.expect("task");
            sender.join().expect("sender");
            assert_eq!(got, Ok(9));
        }
    }
}
