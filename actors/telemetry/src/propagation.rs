//! W3C trace context (`traceparent`) for the runtime's trace seam.

use crate::layer::with_record;

/// `traceparent` in and out of the spans recorded by [`crate::layer::SpanLayer`];
/// head sampling of new traces at `ratio`.
#[derive(Debug, Clone, Copy)]
pub struct W3c {
    /// Fraction of requests without trace context that start a trace.
    pub ratio: f64,
}

impl abi_runtime::trace::Propagation for W3c {
    fn traceparent(&self, span: &tracing::Span) -> Option<String> {
        with_record(span, |r| r.traceparent())
    }

    fn sample_new(&self) -> bool {
        self.ratio >= 1.0 || (self.ratio > 0.0 && rand::random::<f64>() < self.ratio)
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

    fn set_parent(&self, span: &tracing::Span, traceparent: &str) {
        // An invalid header leaves the span the root of a new trace.
        if let Some((trace_id, parent, _)) = abi_runtime::trace::parse_traceparent(traceparent) {
            with_record(span, |r| {
                r.trace_id = trace_id;
                r.parent_span_id = parent;
                r.parent_remote = true;
            });
        }
    }
}
