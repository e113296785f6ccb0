//! The tracer provider's span processor: a bounded queue that never blocks.

use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tokio::sync::mpsc;

use crate::Counters;

/// `reason` label of spans dropped because the queue was full.
pub const QUEUE_FULL: &str = "queue_full";

/// Hands finished spans to the flusher; drops (and counts) them when the
/// queue is full or the flusher is gone, so ending a span is a `try_send`.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: mpsc::Sender<SpanData>,
    counters: Counters,
}

impl QueueProcessor {
    pub(crate) fn new(tx: mpsc::Sender<SpanData>, counters: Counters) -> Self {
        Self { tx, counters }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        match self.tx.try_send(span) {
            Ok(()) => {
                self.counters.queued.inc();
            }
            Err(_) => {
                self.counters.dropped(QUEUE_FULL).inc();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Export is the flusher's job, on its own schedule; nothing is buffered here.
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
