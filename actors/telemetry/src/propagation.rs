//! W3C trace context (`traceparent`) for the runtime's trace seam.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// `traceparent` in and out of `tracing` spans, through `tracing-opentelemetry`;
/// head sampling of new traces at `ratio`.
#[derive(Debug, Clone, Copy)]
pub struct W3c {
    /// Fraction of requests without trace context that start a trace.
    pub ratio: f64,
}

impl abi_runtime::trace::Propagation for W3c {
    fn traceparent(&self, span: &tracing::Span) -> Option<String> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        if !sc.is_valid() {
            return None;
        }
        Some(format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ))
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
        let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        // An invalid header yields an empty context: the span then starts a new trace.
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}
