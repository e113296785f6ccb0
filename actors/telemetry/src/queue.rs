//! The span queue: one small buffer per thread that records spans, drained by
//! the flusher.
//!
//! A shared bounded channel made every closing span contend on the channel's
//! tail, the `queued` gauge and, once full, the drop counter: cache lines that
//! the gateway's workers and the flusher all write. Here a span goes into its
//! own thread's buffer under that buffer's lock, which only the flusher also
//! takes (once per poll, to swap the buffer's vector for an empty one), so the
//! request path touches no line another thread writes in the meantime. Spans
//! that find their thread's buffer full are counted there and added to
//! `abi_telemetry_spans_dropped_total{reason="queue_full"}` by the flusher.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;

use crate::Counters;
use crate::layer::SpanRecord;

/// `reason` label of spans dropped because the queue was full.
pub const QUEUE_FULL: &str = "queue_full";

/// One thread's spans not yet taken by the flusher.
#[derive(Debug, Default)]
struct Pending {
    spans: Vec<SpanRecord>,
    /// Spans that found the buffer full since the flusher last looked.
    dropped: u64,
}

type Buffer = Arc<Mutex<Pending>>;

/// The buffers of every thread that recorded a span for one sink.
#[derive(Debug)]
pub(crate) struct Buffers {
    /// Tells this sink's buffers from another sink's in a thread's list.
    id: u64,
    /// Spans a thread's buffer holds at most (`queue_size`).
    cap: usize,
    threads: Mutex<Vec<Buffer>>,
}

thread_local! {
    /// This thread's buffer for each sink it recorded spans for (one, in a node).
    static LOCAL: RefCell<Vec<(u64, Buffer)>> = const { RefCell::new(Vec::new()) };
}

impl Buffers {
    pub(crate) fn new(cap: usize) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            cap,
            threads: Mutex::new(Vec::new()),
        }
    }

    /// Puts `record` in this thread's buffer; `false` when it was not queued
    /// and is not counted anywhere yet (the thread is exiting).
    #[inline]
    fn push(&self, record: SpanRecord) -> bool {
        LOCAL
            .try_with(|local| {
                let Ok(mut local) = local.try_borrow_mut() else {
                    return false;
                };
                let buffer = match local.iter().find(|(id, _)| *id == self.id) {
                    Some((_, b)) => b,
                    None => {
                        let b = Buffer::default();
                        self.threads.lock().push(b.clone());
                        local.push((self.id, b));
                        &local[local.len() - 1].1
                    }
                };
                let mut pending = buffer.lock();
                if pending.spans.len() < self.cap {
                    pending.spans.push(record);
                } else {
                    pending.dropped += 1;
                }
                true
            })
            .unwrap_or(false)
    }

    /// Moves every thread's spans to the end of `into` and returns how many
    /// spans found a full buffer since the last call. `spare` is an empty
    /// vector handed to a thread in exchange for its full one, so that the
    /// lock is held only for the swap and the thread keeps a vector with room.
    pub(crate) fn drain(&self, into: &mut Vec<SpanRecord>, spare: &mut Vec<SpanRecord>) -> u64 {
        let mut dropped = 0;
        let mut threads = self.threads.lock();
        for buffer in threads.iter() {
            {
                let mut pending = buffer.lock();
                dropped += std::mem::take(&mut pending.dropped);
                if pending.spans.is_empty() {
                    continue;
                }
                std::mem::swap(&mut pending.spans, spare);
            }
            into.append(spare);
        }
        // A thread that ended left its buffer to us alone; it is empty now.
        threads.retain(|b| Arc::strong_count(b) > 1);
        dropped
    }
}

/// The recording side of the queue, held by the span layer and the runtime's
/// trace hook.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    buffers: Arc<Buffers>,
    /// For spans of a thread that is exiting (its buffer is gone).
    queue_full: Counter,
    closed: Arc<AtomicBool>,
}

impl Queue {
    pub(crate) fn new(buffers: Arc<Buffers>, counters: &Counters, closed: Arc<AtomicBool>) -> Self {
        Self {
            buffers,
            queue_full: counters.dropped(QUEUE_FULL),
            closed,
        }
    }

    /// Queues a finished span, or drops and counts it when its thread's buffer is full.
    #[inline]
    pub(crate) fn push(&self, record: SpanRecord) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if !self.buffers.push(record) {
            self.queue_full.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Kind;

    fn record(i: u64) -> SpanRecord {
        SpanRecord {
            trace_id: 1,
            span_id: i,
            parent_span_id: 0,
            parent_remote: false,
            name: "t",
            kind: Kind::Internal,
            error: false,
            start: 0,
            end: 0,
            attributes: abi_runtime::trace::Attributes::List(Vec::new()),
        }
    }

    #[test]
    fn every_threads_spans_are_drained_and_overflow_is_counted() {
        let buffers = Arc::new(Buffers::new(10));
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let b = buffers.clone();
                std::thread::spawn(move || {
                    for i in 0..15 {
                        assert!(b.push(record(t * 100 + i)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let (mut got, mut spare) = (Vec::new(), Vec::new());
        assert_eq!(buffers.drain(&mut got, &mut spare), 15, "5 over per thread");
        assert_eq!(got.len(), 30);
        // Each thread's first ten, in order.
        for t in 0..3u64 {
            let ids: Vec<u64> = got
                .iter()
                .map(|r| r.span_id)
                .filter(|id| id / 100 == t)
                .collect();
            assert_eq!(ids, (0..10).map(|i| t * 100 + i).collect::<Vec<_>>());
        }
        // The threads ended: their buffers are gone after the drain.
        assert!(buffers.threads.lock().is_empty());
        assert_eq!(buffers.drain(&mut got, &mut spare), 0);
    }

    #[test]
    fn two_sinks_on_one_thread_keep_their_spans_apart() {
        let (a, b) = (Buffers::new(4), Buffers::new(4));
        assert!(a.push(record(1)));
        assert!(b.push(record(2)));
        assert!(b.push(record(3)));
        let (mut got, mut spare) = (Vec::new(), Vec::new());
        a.drain(&mut got, &mut spare);
        assert_eq!(got.iter().map(|r| r.span_id).collect::<Vec<_>>(), [1]);
        got.clear();
        b.drain(&mut got, &mut spare);
        assert_eq!(got.iter().map(|r| r.span_id).collect::<Vec<_>>(), [2, 3]);
    }
}
