//! The span layer: abi's trace spans recorded as compact records and queued
//! for export when they close.
//!
//! `tracing-opentelemetry` builds SDK span objects (builders, contexts,
//! attribute vectors, a sampler call) for every span, which cost about 2 us per
//! request span on the gateway's hot path. This layer keeps only what a trace
//! needs (ids, parent, name, kind, times, a few attributes) in the span's
//! registry extensions, and hands the finished record to the span queue
//! ([`crate::queue`]: its thread's buffer, never waiting); the flusher turns
//! records into OTLP spans off the request path.

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use abi_runtime::trace::{AttrValue as Value, Attributes as Attrs, span_id, trace_id};

use crate::queue::Queue;

/// OpenTelemetry span kind, from the `otel.kind` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

/// One span: what the exporter needs, nothing more.
#[derive(Debug, Clone)]
pub(crate) struct SpanRecord {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    /// 0 for a root span.
    pub(crate) parent_span_id: u64,
    /// The parent came from another process (a `traceparent`).
    pub(crate) parent_remote: bool,
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// `otel.status_code = "ERROR"` was recorded.
    pub(crate) error: bool,
    /// Wall clock, nanoseconds since the Unix epoch.
    pub(crate) start: u64,
    /// See `start`.
    pub(crate) end: u64,
    pub(crate) attributes: Attrs,
}

impl SpanRecord {
    /// The W3C `traceparent` naming this span (always sampled: unsampled
    /// requests make no spans).
    pub(crate) fn traceparent(&self) -> String {
        abi_runtime::trace::SpanIds {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
        }
        .traceparent()
    }
}

/// Collects a span's fields into its record. `otel.kind` and
/// `otel.status_code` set the kind and status; the rest become attributes.
struct Fields<'a>(&'a mut SpanRecord);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .attributes
            .set(field.name(), Value::Str(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "otel.kind" => {
                self.0.kind = match value {
                    "server" => Kind::Server,
                    "client" => Kind::Client,
                    "producer" => Kind::Producer,
                    "consumer" => Kind::Consumer,
                    _ => Kind::Internal,
                }
            }
            "otel.status_code" => self.0.error = value.eq_ignore_ascii_case("error"),
            name => self.0.attributes.set(name, Value::Str(value.to_owned())),
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.attributes.set(field.name(), Value::I64(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        // OTLP integers are signed; larger values keep their digits as text.
        let v = i64::try_from(value).map_or_else(|_| Value::Str(value.to_string()), Value::I64);
        self.0.attributes.set(field.name(), v);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.attributes.set(field.name(), Value::F64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.attributes.set(field.name(), Value::Bool(value));
    }
}

/// The `tracing` layer that records trace spans (see the module docs).
pub struct SpanLayer {
    queue: Queue,
}

impl SpanLayer {
    pub(crate) fn new(queue: Queue) -> Self {
        Self { queue }
    }
}

impl<S> Layer<S> for SpanLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut record = SpanRecord {
            trace_id: 0,
            span_id: 0,
            parent_span_id: 0,
            parent_remote: false,
            name: attrs.metadata().name(),
            kind: Kind::Internal,
            error: false,
            start: abi_runtime::trace::now_unix_nanos(),
            end: 0,
            attributes: Attrs::List(Vec::with_capacity(attrs.fields().len())),
        };
        attrs.record(&mut Fields(&mut record));
        // Under this layer's filter, `parent()` is the nearest trace span: log
        // spans in between (the gateway's request-id span) are skipped. Without
        // one, the caller parents the span with `set_parent_ids` or it is a root.
        let parent = span.parent().and_then(|p| {
            p.extensions()
                .get::<SpanRecord>()
                .map(|r| (r.trace_id, r.span_id))
        });
        (record.trace_id, record.parent_span_id) = parent.unwrap_or_else(|| (trace_id(), 0));
        record.span_id = span_id();
        span.extensions_mut().insert(record);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(record) = span.extensions_mut().get_mut::<SpanRecord>()
        {
            values.record(&mut Fields(record));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut record) = span.extensions_mut().remove::<SpanRecord>() else {
            return;
        };
        record.end = abi_runtime::trace::now_unix_nanos();
        self.queue.push(record);
    }
}

/// Runs `f` on the record of `span` (a span of the current or given
/// dispatcher, recorded by a [`SpanLayer`] over a [`Registry`]).
pub(crate) fn with_record<R>(
    span: &tracing::Span,
    f: impl FnOnce(&mut SpanRecord) -> R,
) -> Option<R> {
    span.with_subscriber(|(id, dispatch): (&Id, &Dispatch)| {
        let registry = dispatch.downcast_ref::<Registry>()?;
        let span = registry.span(id)?;
        let mut ext = span.extensions_mut();
        ext.get_mut::<SpanRecord>().map(f)
    })
    .flatten()
}
