//! Open streamed chat completions: what the generating worker has produced and who waits for it.
//! Shared by a pool and its workers (always in one process); remote callers only see
//! `ChatPoll` answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use abi_protocol::inference::{ChatChunk, ChatDelta, ChatFinished, InferenceError};
use abi_runtime::ReplyTo;
use parking_lot::Mutex;

/// A generation is stopped when nobody has polled it for this long (client gone without
/// a cancel, e.g. its gateway node died).
pub const ABANDON_AFTER: Duration = Duration::from_secs(60);

type PollReply = ReplyTo<Result<ChatChunk, InferenceError>>;

struct Stream {
    pending: Vec<ChatDelta>,
    finished: Option<ChatFinished>,
    waiter: Option<PollReply>,
    cancel: Arc<AtomicBool>,
    last_poll: Instant,
}

/// All open streams of one pool.
#[derive(Clone, Default)]
pub struct Streams {
    inner: Arc<Mutex<HashMap<u64, Stream>>>,
}

impl Streams {
    /// Registers stream `id`; returns its cancel flag (read by the generating worker).
    pub fn open(&self, id: u64) -> Arc<AtomicBool> {
        let cancel = Arc::new(AtomicBool::new(false));
        self.inner.lock().insert(
            id,
            Stream {
                pending: Vec::new(),
                finished: None,
                waiter: None,
                cancel: cancel.clone(),
                last_poll: Instant::now(),
            },
        );
        cancel
    }

    /// Answers a poll now if there is news, else parks it until there is.
    pub fn poll(&self, id: u64, reply: PollReply) {
        let mut map = self.inner.lock();
        let Some(s) = map.get_mut(&id) else {
            drop(map);
            reply.send(Err(InferenceError::UnknownStream(id)));
            return;
        };
        s.last_poll = Instant::now();
        if s.pending.is_empty() && s.finished.is_none() {
            if let Some(old) = s.waiter.replace(reply) {
                old.send(Ok(ChatChunk {
                    deltas: Vec::new(),
                    finished: None,
                }));
            }
            return;
        }
        let chunk = ChatChunk {
            deltas: std::mem::take(&mut s.pending),
            finished: s.finished.take(),
        };
        if chunk.finished.is_some() {
            map.remove(&id);
        }
        drop(map);
        reply.send(Ok(chunk));
    }

    /// Appends a delta (worker side). Returns false when the stream should stop (cancelled,
    /// abandoned or gone).
    pub fn push(&self, id: u64, delta: ChatDelta) -> bool {
        let mut map = self.inner.lock();
        let Some(s) = map.get_mut(&id) else {
            return false;
        };
        if s.cancel.load(Ordering::Relaxed) {
            return false;
        }
        if s.last_poll.elapsed() > ABANDON_AFTER {
            s.cancel.store(true, Ordering::Relaxed);
            return false;
        }
        s.pending.push(delta);
        if let Some(w) = s.waiter.take() {
            let chunk = ChatChunk {
                deltas: std::mem::take(&mut s.pending),
                finished: None,
            };
            drop(map);
            w.send(Ok(chunk));
        }
        true
    }

    /// Marks the stream finished (worker side) and wakes a parked poll.
    pub fn finish(&self, id: u64, finished: ChatFinished) {
        let mut map = self.inner.lock();
        let Some(s) = map.get_mut(&id) else {
            return;
        };
        if let Some(w) = s.waiter.take() {
            let chunk = ChatChunk {
                deltas: std::mem::take(&mut s.pending),
                finished: Some(finished),
            };
            map.remove(&id);
            drop(map);
            w.send(Ok(chunk));
        } else {
            s.finished = Some(finished);
        }
    }

    /// Cancels and forgets the stream (the client went away).
    pub fn cancel(&self, id: u64) {
        if let Some(s) = self.inner.lock().remove(&id) {
            s.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Number of open streams.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    /// True when no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
