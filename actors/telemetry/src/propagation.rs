//! W3C trace context (`traceparent`) for the runtime's trace seam.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use abi_runtime::trace::{EntrySpan, SpanKind};

use crate::layer::{Kind, SpanRecord, with_record};
use crate::queue::Queue;

/// `traceparent` in and out of the spans recorded by [`crate::layer::SpanLayer`],
/// entry spans into the same queue; head sampling of new traces at `ratio`.
#[derive(Debug, Clone)]
pub struct W3c {
    /// Fraction of requests without trace context that start a trace (`f64`
    /// bits): changed at run time through the admin API, read per request.
    ratio: Arc<AtomicU64>,
    queue: Queue,
}

impl W3c {
    pub(crate) fn new(ratio: f64, queue: Queue) -> Self {
        Self {
            ratio: Arc::new(AtomicU64::new(ratio.to_bits())),
            queue,
        }
    }
}

impl abi_runtime::trace::Propagation for W3c {
    fn traceparent(&self, span: &tracing::Span) -> Option<String> {
        with_record(span, |r| r.traceparent())
    }

    fn sample_new(&self) -> bool {
        let ratio = self.sampling_ratio();
        ratio >= 1.0 || (ratio > 0.0 && rand::random::<f64>() < ratio)
    }

    fn sampling_ratio(&self) -> f64 {
        f64::from_bits(self.ratio.load(Ordering::Relaxed))
    }

    fn set_sampling_ratio(&self, ratio: f64) -> f64 {
        // A swap: concurrent changes each see the ratio they replaced.
        f64::from_bits(self.ratio.swap(ratio.to_bits(), Ordering::Relaxed))
    }

    fn in_trace(&self, span: &tracing::Span) -> bool {
        use tracing_subscriber::registry::LookupSpan as _;
        span.with_subscriber(|(id, dispatch)| {
            let Some(registry) = dispatch.downcast_ref::<tracing_subscriber::Registry>() else {
                return false;
            };
            registry.span(id).is_some_and(|s| {
                s.scope()
                    .any(|a| a.metadata().target() == abi_runtime::trace::TARGET)
            })
        })
        .unwrap_or(false)
    }

    fn set_parent_ids(&self, span: &tracing::Span, trace_id: u128, parent: u64, remote: bool) {
        with_record(span, |r| {
            r.trace_id = trace_id;
            r.parent_span_id = parent;
            r.parent_remote = remote;
        });
    }

    fn export(&self, span: EntrySpan) {
        self.queue.push(SpanRecord {
            trace_id: span.ids.trace_id,
            span_id: span.ids.span_id,
            parent_span_id: span.ids.parent_span_id,
            // Only a server span's parent lives in another process.
            parent_remote: span.kind == SpanKind::Server && span.ids.parent_span_id != 0,
            name: span.name,
            kind: match span.kind {
                SpanKind::Server => Kind::Server,
                SpanKind::Internal => Kind::Internal,
            },
            error: span.error,
            start: span.start,
            end: span.end,
            attributes: span.attributes,
        });
    }
}
