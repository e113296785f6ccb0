//! Trace-context seam: spans for actor messages and W3C `traceparent` strings,
//! without making the runtime depend on OpenTelemetry.
//!
//! The telemetry crate installs a [`Propagation`] once per process; until then
//! (telemetry off) [`enabled`] is false and `ask`/`tell` create no spans at all,
//! so a node without an exporter pays one atomic load per message.

use std::sync::OnceLock;

use tracing::Span;

/// Target of every span the runtime and gateway create for tracing; the log
/// formatter filters it out so that spans go to the exporter, not to stderr.
pub const TARGET: &str = "abi::trace";

/// Converts between `tracing` spans and W3C trace context strings.
pub trait Propagation: Send + Sync + 'static {
    /// The `traceparent` of `span`, or `None` when it is not sampled/recorded.
    fn traceparent(&self, span: &Span) -> Option<String>;
    /// Makes the remote context in `traceparent` the parent of `span` (which must
    /// not have been entered yet). Malformed values are ignored: a bad header
    /// from a client starts a new trace instead of failing the request.
    fn set_parent(&self, span: &Span, traceparent: &str);
}

static HOOK: OnceLock<Box<dyn Propagation>> = OnceLock::new();

/// Installs the process's propagation; only the first call wins.
pub fn install(p: Box<dyn Propagation>) -> bool {
    HOOK.set(p).is_ok()
}

/// True once tracing export is set up in this process.
#[inline]
pub fn enabled() -> bool {
    HOOK.get().is_some()
}

/// The `traceparent` of the current span (what goes into a transport envelope).
pub fn current_traceparent() -> Option<String> {
    HOOK.get().and_then(|h| h.traceparent(&Span::current()))
}

/// The `traceparent` of `span`.
pub fn traceparent_of(span: &Span) -> Option<String> {
    HOOK.get().and_then(|h| h.traceparent(span))
}

/// Parents `span` on a remote context (incoming HTTP header or envelope field).
pub fn set_parent(span: &Span, traceparent: &str) {
    if let Some(h) = HOOK.get() {
        h.set_parent(span, traceparent);
    }
}

/// The span of one message to an actor: a child of the current span, named
/// `actor.handle`. ractor (feature `message_span_propogation`) runs the
/// actor's `handle` inside the span that was current when the message was
/// sent, so asks made while handling nest below it.
pub fn message_span(path: &dyn std::fmt::Display, type_name: &str, remote: bool) -> Span {
    tracing::info_span!(
        target: TARGET,
        "actor.handle",
        otel.kind = if remote { "client" } else { "internal" },
        actor.path = %path,
        message_type = type_name,
        remote,
    )
}

/// The span of a message that arrived from another node, parented on the
/// sender's `traceparent`.
pub fn inbound_span(
    path: &dyn std::fmt::Display,
    type_name: &str,
    traceparent: Option<&str>,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        "actor.handle",
        otel.kind = "server",
        actor.path = %path,
        message_type = type_name,
        remote = true,
    );
    if let Some(tp) = traceparent {
        set_parent(&span, tp);
    }
    span
}
