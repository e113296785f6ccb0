//! What an actor receives for a request, and how it answers.

use std::fmt;
use std::time::Instant;

use abi_protocol::Request;

/// A request delivered to an actor, with the means to answer it.
///
/// An actor that serves `R` has a message type implementing `From<Call<R>>`.
/// Dropping a `Call` without replying makes the caller see
/// [`AskError::ActorStopped`](crate::AskError::ActorStopped), never a hang.
pub struct Call<R: Request> {
    request: R,
    reply: ReplyTo<R::Reply>,
}

impl<R: Request> Call<R> {
    pub(crate) fn new(request: R, reply: ReplyTo<R::Reply>) -> Self {
        Self { request, reply }
    }

    /// The request.
    pub fn request(&self) -> &R {
        &self.request
    }

    /// When the caller stops waiting; work past it is wasted.
    pub fn deadline(&self) -> Instant {
        self.reply.deadline
    }

    /// True once the caller is gone (deadline passed, or it was dropped).
    pub fn is_abandoned(&self) -> bool {
        self.reply.is_closed()
    }

    /// Answers the caller (a no-op for `tell`).
    pub fn reply(self, reply: R::Reply) {
        self.reply.send(reply);
    }

    /// Splits into the request and the reply handle, e.g. to answer from a blocking task.
    pub fn into_parts(self) -> (R, ReplyTo<R::Reply>) {
        (self.request, self.reply)
    }
}

impl<R: Request> fmt::Debug for Call<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call").field("type", &R::TYPE).finish()
    }
}

/// The answering half of a [`Call`]; can be moved to another task or thread.
pub struct ReplyTo<T> {
    tx: Option<crate::reply::Sender<T>>,
    deadline: Instant,
}

impl<T> ReplyTo<T> {
    pub(crate) fn new(tx: Option<crate::reply::Sender<T>>, deadline: Instant) -> Self {
        Self { tx, deadline }
    }

    /// Sends the answer; silently dropped if the caller is gone or this was a `tell`.
    pub fn send(self, value: T) {
        if let Some(tx) = self.tx {
            tx.send(value);
        }
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// True once nobody waits for the answer any more.
    pub fn is_closed(&self) -> bool {
        match &self.tx {
            Some(tx) => tx.is_closed(),
            None => false,
        }
    }
}

impl<T> fmt::Debug for ReplyTo<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplyTo")
            .field("wants_reply", &self.tx.is_some())
            .finish()
    }
}
