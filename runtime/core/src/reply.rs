//! The reply slot of an ask: a one-shot channel that either the replying actor or the
//! node's deadline reaper completes, whichever comes first.
//!
//! One allocation per ask (the shared slot). The reaper holds only a `Weak` to it, so a
//! reply that arrives in time costs no deregistration: the reaper later finds the slot
//! gone (or already answered) and skips it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// Why a receiver got no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoReply {
    /// The sender was dropped without replying (actor stopped or discarded the call).
    Dropped,
    /// The deadline passed first.
    Expired,
}

struct State<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
    receiver_gone: bool,
    expired: bool,
}

struct Slot<T> {
    state: Mutex<State<T>>,
}

/// What the reaper can do to a pending slot.
pub(crate) trait Expire: Send + Sync {
    /// Completes the slot with [`NoReply::Expired`] unless it was answered.
    fn expire(&self);
}

impl<T: Send> Expire for Slot<T> {
    fn expire(&self) {
        let waker = {
            let mut s = self.state.lock();
            if s.value.is_some() || s.sender_gone || s.receiver_gone {
                return;
            }
            s.expired = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The replying side, carried inside the request.
pub(crate) struct Sender<T> {
    /// `None` once sent, so that dropping a sender that replied takes no lock.
    slot: Option<Arc<Slot<T>>>,
}

/// The asking side: a future of the reply.
pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
    /// Set once the future returned `Ready`: dropping it then takes no lock.
    done: bool,
}

/// A new slot.
pub(crate) fn channel<T: Send + 'static>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State {
            value: None,
            waker: None,
            sender_gone: false,
            receiver_gone: false,
            expired: false,
        }),
    });
    (
        Sender {
            slot: Some(slot.clone()),
        },
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
    pub(crate) fn send(mut self, value: T) {
        let Some(slot) = self.slot.take() else { return };
        let waker = {
            let mut s = slot.state.lock();
            if s.receiver_gone || s.expired {
                return;
            }
            s.value = Some(value);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether the asker stopped waiting (timed out or dropped its future).
    pub(crate) fn is_closed(&self) -> bool {
        self.slot.as_ref().is_none_or(|slot| {
            let s = slot.state.lock();
            s.receiver_gone || s.expired
        })
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        let waker = {
            let mut s = slot.state.lock();
            s.sender_gone = true;
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if !self.done {
            self.slot.state.lock().receiver_gone = true;
        }
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, NoReply>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut s = this.slot.state.lock();
        let ready = if let Some(v) = s.value.take() {
            Ok(v)
        } else if s.expired {
            Err(NoReply::Expired)
        } else if s.sender_gone {
            Err(NoReply::Dropped)
        } else {
            match &mut s.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                w => *w = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        };
        // Answered or expired: nothing can reach the slot any more that needs to know
        // the receiver left.
        s.receiver_gone = true;
        drop(s);
        this.done = true;
        Poll::Ready(ready)
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
}
