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
    slot: Arc<Slot<T>>,
}

/// The asking side: a future of the reply.
pub(crate) struct Receiver<T> {
    slot: Arc<Slot<T>>,
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
    (Sender { slot: slot.clone() }, Receiver { slot })
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
        let waker = {
            let mut s = self.slot.state.lock();
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
        let s = self.slot.state.lock();
        s.receiver_gone || s.expired
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.slot.state.lock();
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
        self.slot.state.lock().receiver_gone = true;
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, NoReply>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.slot.state.lock();
        if let Some(v) = s.value.take() {
            return Poll::Ready(Ok(v));
        }
        if s.expired {
            return Poll::Ready(Err(NoReply::Expired));
        }
        if s.sender_gone {
            return Poll::Ready(Err(NoReply::Dropped));
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
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
