//! Trace-context seam: spans for actor messages and W3C `traceparent` strings,
//! without making the runtime depend on OpenTelemetry.
//!
//! The telemetry crate installs a [`Propagation`] once per process; until then
//! (telemetry off) [`enabled`] is false and `ask`/`tell` create no spans at all,
//! so a node without an exporter pays one atomic load per message.
//!
//! A trace starts at an entry point (the gateway) with an [`EntrySpan`]: its
//! ids are chosen up front, the request runs inside [`in_entry`] (a context set
//! in a thread-local around each poll, not a `tracing` span: creating, entering
//! and closing one through the subscriber cost more than the rest of a
//! `/health` request), and the finished span goes to the exporter with
//! [`export`]. A direct read (an actor's work done in the caller's task) below
//! it is recorded the same way, as a [`ChildSpan::Light`]. Messages queued in a mailbox get `tracing` spans
//! parented on it; from there on the context travels with `tracing` (ractor
//! runs handlers inside the message's span) and in transport envelopes.

use std::cell::Cell;
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
    fn set_parent(&self, span: &Span, traceparent: &str) {
        if let Some((trace_id, parent, _)) = parse_traceparent(traceparent) {
            self.set_parent_ids(span, trace_id, parent, true);
        }
    }
    /// Makes span `parent_span_id` of trace `trace_id` the parent of `span`
    /// (not entered yet); `remote` when that span lives in another process.
    fn set_parent_ids(&self, span: &Span, trace_id: u128, parent_span_id: u64, remote: bool);
    /// Queues a finished entry span for export (never blocks).
    fn export(&self, span: EntrySpan);
    /// True when `span` or one of its ancestors is a trace span (target
    /// [`TARGET`]). Other crates' spans (the gateway's request-id log span)
    /// may sit between a request's span and the code that sends a message.
    fn in_trace(&self, span: &Span) -> bool {
        span.metadata().is_some_and(|m| m.target() == TARGET)
    }
    /// Whether a request that arrives without trace context starts a trace
    /// (the sampling ratio). Deciding before any span exists makes an
    /// unsampled request cost no span at all.
    fn sample_new(&self) -> bool {
        true
    }
    /// The fraction of requests without trace context that start a trace.
    fn sampling_ratio(&self) -> f64;
    /// Changes that fraction while the process runs (an operator turns tracing
    /// up for an incident and down after it); `ratio` is within `0.0..=1.0`.
    /// Returns the fraction it replaced.
    fn set_sampling_ratio(&self, ratio: f64) -> f64;
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

/// Whether a request without trace context should be traced (false when tracing is off).
pub fn sample_new() -> bool {
    HOOK.get().is_some_and(|h| h.sample_new())
}

/// Why the sampling ratio could not be changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// No exporter is configured in this process: there is nothing to sample for.
    #[error("tracing is off on this node (no OTLP endpoint configured)")]
    TracingOff,
    /// The ratio is not a fraction.
    #[error("the sampling ratio must be between 0.0 and 1.0, got {0}")]
    OutOfRange(f64),
}

/// The fraction of new traces sampled; `None` when tracing is off.
pub fn sampling_ratio() -> Option<f64> {
    HOOK.get().map(|h| h.sampling_ratio())
}

/// Changes the fraction of new traces sampled from now on; returns the previous one.
///
/// # Errors
/// [`SamplingError::TracingOff`] without an exporter, [`SamplingError::OutOfRange`]
/// for a ratio outside `0.0..=1.0` (NaN included).
pub fn set_sampling_ratio(ratio: f64) -> Result<f64, SamplingError> {
    let hook = HOOK.get().ok_or(SamplingError::TracingOff)?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(SamplingError::OutOfRange(ratio));
    }
    Ok(hook.set_sampling_ratio(ratio))
}

/// A span attribute value (the types `tracing` fields and OTLP share).
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Text.
    Str(String),
    /// Text known at compile time (a message type), without a copy.
    Static(&'static str),
    /// Text shared with its owner (an actor's path), without a copy.
    Shared(std::sync::Arc<str>),
    /// An integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A flag.
    Bool(bool),
}

/// OpenTelemetry kind of an [`EntrySpan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Serves a request from outside the process (its parent, if any, is remote).
    Server,
    /// Work inside the process, below a span of the same process.
    Internal,
}

/// A finished span recorded without `tracing` (see the module docs): a
/// server span that started a trace or continued a caller's (the gateway's
/// `http.request`), or an actor's work below one.
#[derive(Debug, Clone)]
pub struct EntrySpan {
    /// Its ids (and the parent span, if any).
    pub ids: SpanIds,
    /// Span name.
    pub name: &'static str,
    /// Server or internal.
    pub kind: SpanKind,
    /// Start and end, wall clock in nanoseconds since the Unix epoch (what OTLP
    /// carries; see [`now_unix_nanos`]).
    pub start: u64,
    /// See `start`.
    pub end: u64,
    /// OpenTelemetry status `ERROR`.
    pub error: bool,
    /// Attributes (OpenTelemetry semantic-convention keys).
    pub attributes: Attributes,
}

/// The attributes of a span record.
#[derive(Debug, Clone, PartialEq)]
pub enum Attributes {
    /// Any attributes.
    List(Vec<(&'static str, AttrValue)>),
    /// An actor's work on a message in the caller's task: `actor.path`,
    /// `message_type` and `remote = false`, kept without a vector (a search
    /// records one such span per shard).
    Actor {
        /// `actor.path`: an `AttrValue::Str` or `AttrValue::Shared`.
        path: AttrValue,
        /// `message_type`.
        message_type: &'static str,
    },
    /// A server's request: `http.request.method`, `http.route` and
    /// `http.response.status_code`, kept without a vector (one per request).
    Http {
        /// The method, or `_OTHER` for a non-standard one (OpenTelemetry's convention).
        method: &'static str,
        /// The matched route pattern.
        route: &'static str,
        /// The response status.
        status: u16,
    },
}

impl Attributes {
    /// Calls `f` on each key-value pair, in order, without building a vector (the
    /// exporter writes them straight out). The one place the fixed sets' keys live.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, &AttrValue)) {
        match self {
            Attributes::List(list) => {
                for (k, v) in list {
                    f(k, v);
                }
            }
            Attributes::Actor { path, message_type } => {
                f("actor.path", path);
                f("message_type", &AttrValue::Static(message_type));
                f("remote", &AttrValue::Bool(false));
            }
            Attributes::Http {
                method,
                route,
                status,
            } => {
                f("http.request.method", &AttrValue::Static(method));
                f("http.route", &AttrValue::Static(route));
                f(
                    "http.response.status_code",
                    &AttrValue::I64(i64::from(*status)),
                );
            }
        }
    }

    /// The attributes as key-value pairs (allocates only for `Actor` and `Http`, off the
    /// request path).
    pub fn into_pairs(self) -> Vec<(&'static str, AttrValue)> {
        match self {
            Attributes::List(list) => list,
            fixed => {
                let mut list = Vec::with_capacity(3);
                fixed.for_each(|k, v| list.push((k, v.clone())));
                list
            }
        }
    }

    /// Sets `key` to `value`, replacing an earlier value of the same key.
    pub fn set(&mut self, key: &'static str, value: AttrValue) {
        let taken = std::mem::replace(self, Attributes::List(Vec::new()));
        let mut list = taken.into_pairs();
        match list.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => list.push((key, value)),
        }
        *self = Attributes::List(list);
    }
}

thread_local! {
    /// The entry span of the future being polled on this thread, set by [`InEntry`]
    /// around each poll (what a tokio task-local does, without its `RefCell` swaps:
    /// `SpanIds` is `Copy`).
    static ENTRY: Cell<Option<SpanIds>> = const { Cell::new(None) };
}

/// Runs `fut` inside the entry span `ids`: messages it sends are traced as its children.
pub fn in_entry<F: std::future::Future>(ids: SpanIds, fut: F) -> InEntry<F> {
    InEntry { ids, fut }
}

pin_project_lite::pin_project! {
    /// A future polled inside an entry span ([`in_entry`]).
    #[must_use = "futures do nothing unless polled"]
    pub struct InEntry<F> {
        ids: SpanIds,
        #[pin]
        fut: F,
    }
}

impl<F: std::future::Future> std::future::Future for InEntry<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _outer = RestoreEntry(ENTRY.replace(Some(*this.ids)));
        this.fut.poll(cx)
    }
}

/// Puts back the entry span that was current before a poll, even when the poll panics.
struct RestoreEntry(Option<SpanIds>);

impl Drop for RestoreEntry {
    fn drop(&mut self) {
        ENTRY.set(self.0);
    }
}

/// Queues a finished entry span for export (nothing when tracing is off).
pub fn export(span: EntrySpan) {
    if let Some(h) = HOOK.get() {
        h.export(span);
    }
}

/// The parts of a valid W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`):
/// trace id, parent span id, sampled flag; `None` when the value is malformed
/// or names the invalid all-zero ids.
pub fn parse_traceparent(traceparent: &str) -> Option<(u128, u64, bool)> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    // Version 00 has exactly four fields; later versions may append more.
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace_id, 16).ok()?;
    let span_id = u64::from_str_radix(span_id, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((trace_id, span_id, flags & 1 == 1))
}

/// Ids of an [`EntrySpan`], chosen when the request arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanIds {
    /// W3C trace id.
    pub trace_id: u128,
    /// This span's id.
    pub span_id: u64,
    /// The remote parent's span id, 0 for the root of a new trace.
    pub parent_span_id: u64,
}

impl SpanIds {
    /// Ids of the root span of a new trace.
    pub fn root() -> Self {
        Self {
            trace_id: trace_id(),
            span_id: span_id(),
            parent_span_id: 0,
        }
    }

    /// Ids of a child of the remote span `parent_span_id` in trace `trace_id`
    /// (from [`parse_traceparent`]).
    pub fn child(trace_id: u128, parent_span_id: u64) -> Self {
        Self {
            trace_id,
            span_id: span_id(),
            parent_span_id,
        }
    }

    /// The W3C `traceparent` naming this (sampled) span.
    pub fn traceparent(&self) -> String {
        format!("00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
    }

    /// [`SpanIds::traceparent`] as bytes, without allocating (for a header).
    pub fn traceparent_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
        out[3..19].copy_from_slice(&hex16((self.trace_id >> 64) as u64));
        out[19..35].copy_from_slice(&hex16(self.trace_id as u64));
        out[36..52].copy_from_slice(&hex16(self.span_id));
        out
    }
}

/// `v` as 16 lowercase hex digits, a byte (two digits) at a time from a table.
fn hex16(v: u64) -> [u8; 16] {
    const PAIRS: [[u8; 2]; 256] = {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [HEX[i >> 4], HEX[i & 0xf]];
            i += 1;
        }
        t
    };
    let mut out = [0u8; 16];
    for (i, b) in v.to_be_bytes().into_iter().enumerate() {
        let [hi, lo] = PAIRS[usize::from(b)];
        out[2 * i] = hi;
        out[2 * i + 1] = lo;
    }
    out
}

/// The wall-clock time for span records, in nanoseconds since the Unix epoch
/// (what OTLP carries, so a record never converts through `SystemTime`). Read
/// from the TSC through fastant where the kernel trusts it (in a VM about a
/// third of what `SystemTime::now` costs; a traced search reads the time eight
/// times) and converted with an anchor each thread renews every second, so
/// wall-clock steps reach span times within a second; elsewhere fastant reads
/// the system clock.
pub fn now_unix_nanos() -> u64 {
    thread_local! {
        static ANCHOR: std::cell::Cell<Option<(fastant::Anchor, fastant::Instant)>> =
            const { std::cell::Cell::new(None) };
    }
    let t = fastant::Instant::now();
    // The anchor and when it expires: comparing instants is one integer compare.
    let anchor = ANCHOR.with(|cell| match cell.get() {
        Some((anchor, until)) if t < until => anchor,
        _ => {
            let anchor = fastant::Anchor::new();
            cell.set(Some((anchor, t + std::time::Duration::from_secs(1))));
            anchor
        }
    });
    t.as_unix_nanos(&anchor)
}

/// A fresh random span id (never zero, W3C's "invalid").
pub fn span_id() -> u64 {
    nonzero(next_random)
}

/// A fresh random trace id (never zero).
pub fn trace_id() -> u128 {
    nonzero(|| (u128::from(next_random()) << 64) | u128::from(next_random()))
}

/// The next value of this thread's id generator (wyrand, seeded once per
/// thread from `rand`'s OS-seeded generator): ids must be unique, not secret,
/// and `rand::random` takes a thread-local handle and a ChaCha block per call,
/// four times per traced search.
fn next_random() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(rand::random());
    }
    STATE.with(|state| {
        let x = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A fresh non-zero id (zero is W3C's "invalid").
fn nonzero<T: PartialEq + Default>(mut draw: impl FnMut() -> T) -> T {
    loop {
        let v = draw();
        if v != T::default() {
            return v;
        }
    }
}

/// The `traceparent` of the current span (what goes into a transport envelope).
pub fn current_traceparent() -> Option<String> {
    let hook = HOOK.get()?;
    if !in_trace() {
        return None;
    }
    hook.traceparent(&Span::current())
}

/// Parents `span` on a remote context (incoming HTTP header or envelope field).
pub fn set_parent(span: &Span, traceparent: &str) {
    if let Some(h) = HOOK.get() {
        h.set_parent(span, traceparent);
    }
}

/// True when a message sent from here would get a span ([`message_span`]):
/// tracing is on and this code runs for a traced request. Lets a caller skip
/// preparing a span's fields (paths) that would not be used.
pub fn traced() -> bool {
    enabled() && (ENTRY.get().is_some() || in_trace())
}

/// True when the current span is one of ours, i.e. this code runs on behalf
/// of a traced request below an entry span.
fn in_trace() -> bool {
    let current = Span::current();
    if current.is_none() {
        return false;
    }
    HOOK.get().is_some_and(|h| h.in_trace(&current))
}

/// The span of an actor's work on behalf of a traced request, in the form the
/// current context calls for; see [`child_span`].
#[derive(Debug)]
pub enum ChildSpan {
    /// Below an entry span: ids chosen here, exported when dropped.
    Light(LightSpan),
    /// Below a `tracing` span (inside an actor's handler).
    Tracing(Span),
}

impl ChildSpan {
    /// Runs the synchronous `f` inside this span, on any thread; the span
    /// ends when `f` returns (a light span started when it was made, so a
    /// hand-off to another thread counts as part of the work).
    pub fn run<T>(self, f: impl FnOnce() -> T) -> T {
        match self {
            ChildSpan::Light(span) => {
                let out = f();
                drop(span);
                out
            }
            ChildSpan::Tracing(span) => span.in_scope(f),
        }
    }

    /// Runs `fut` inside this span: messages it sends are the span's children,
    /// and the span ends when `fut` finishes or is dropped.
    pub fn instrument<F>(self, fut: F) -> futures::future::BoxFuture<'static, F::Output>
    where
        F: std::future::Future + Send + 'static,
    {
        match self {
            ChildSpan::Light(span) => Box::pin(async move {
                let out = in_entry(span.ids, fut).await;
                drop(span);
                out
            }),
            ChildSpan::Tracing(span) => Box::pin(tracing::Instrument::instrument(fut, span)),
        }
    }
}

/// An `actor.handle` span below an entry span, kept as plain ids and times
/// (no subscriber involved) and exported as an internal [`EntrySpan`] when
/// dropped, so that a span is recorded even for work cut off by a deadline.
#[derive(Debug)]
pub struct LightSpan {
    ids: SpanIds,
    start: u64,
    /// `AttrValue::Str` or `AttrValue::Shared`.
    path: AttrValue,
    type_name: &'static str,
}

impl LightSpan {
    /// Starts the span of the actor at `path` (an `AttrValue::Str` or
    /// `AttrValue::Shared`) handling a `type_name` message, as a child of `parent`.
    fn child_of(parent: SpanIds, path: AttrValue, type_name: &'static str) -> Self {
        Self {
            ids: SpanIds::child(parent.trace_id, parent.span_id),
            start: now_unix_nanos(),
            path,
            type_name,
        }
    }

    /// Its ids: what a child of this span names as its parent.
    pub fn ids(&self) -> SpanIds {
        self.ids
    }
}

impl Drop for LightSpan {
    fn drop(&mut self) {
        let path = std::mem::replace(&mut self.path, AttrValue::Bool(false));
        export(EntrySpan {
            ids: self.ids,
            name: "actor.handle",
            kind: SpanKind::Internal,
            start: self.start,
            end: now_unix_nanos(),
            error: false,
            attributes: Attributes::Actor {
                path,
                message_type: self.type_name,
            },
        });
    }
}

/// The ids of the entry span (or light span) the current task runs in, when
/// tracing is on; work recorded below it names it as parent.
pub fn current_entry() -> Option<SpanIds> {
    if !enabled() {
        return None;
    }
    ENTRY.get()
}

/// The span of `path`'s work on a `type_name` message handled in the caller's
/// task (a direct read, a shard scan): a [`ChildSpan::Light`] in an entry
/// span's task, a `tracing` span ([`message_span`]) below a trace span, and
/// `None` when tracing is off or no traced request is current.
pub fn child_span(path: &dyn std::fmt::Display, type_name: &'static str) -> Option<ChildSpan> {
    child_span_with(path, || AttrValue::Str(path.to_string()), type_name)
}

/// [`child_span`] for an actor whose path string is kept shared (a shard that
/// searches read on every request): a light span takes no copy of it.
pub fn child_span_shared(path: &std::sync::Arc<str>, type_name: &'static str) -> Option<ChildSpan> {
    child_span_with(&&**path, || AttrValue::Shared(path.clone()), type_name)
}

/// [`child_span`] with the light span's path attribute made by `attr`, only when needed.
fn child_span_with(
    path: &dyn std::fmt::Display,
    attr: impl FnOnce() -> AttrValue,
    type_name: &'static str,
) -> Option<ChildSpan> {
    match current_entry() {
        Some(parent) => Some(ChildSpan::Light(LightSpan::child_of(
            parent,
            attr(),
            type_name,
        ))),
        None => message_span(path, type_name, false).map(ChildSpan::Tracing),
    }
}

/// The span of one message to an actor, named `actor.handle`, child of the
/// current span; `None` when tracing is off or no traced request is current.
///
/// Only messages sent on behalf of a traced request get a span: background
/// traffic (heartbeats, health probes, timers) would otherwise start a new
/// one-span trace per message. ractor (feature `message_span_propogation`)
/// runs the actor's `handle` inside the span that was current when the
/// message was sent, so asks made while handling nest below this one.
pub fn message_span(path: &dyn std::fmt::Display, type_name: &str, remote: bool) -> Option<Span> {
    let hook = HOOK.get()?;
    // In an entry span's task the new span is the entry span's child (no
    // `tracing` span of ours is ever current there across an await); else,
    // below a trace span, that span's child.
    let entry = ENTRY.get();
    if entry.is_none() && !in_trace() {
        return None;
    }
    let span = tracing::info_span!(
        target: TARGET,
        "actor.handle",
        otel.kind = if remote { "client" } else { "internal" },
        actor.path = %path,
        message_type = type_name,
        remote,
    );
    if let Some(ids) = entry {
        hook.set_parent_ids(&span, ids.trace_id, ids.span_id, false);
    }
    Some(span)
}

/// The span of a message that arrived from another node with the sender's
/// `traceparent`; `None` when tracing is off or the sender sent none.
pub fn inbound_span(
    path: &dyn std::fmt::Display,
    type_name: &str,
    traceparent: Option<&str>,
) -> Option<Span> {
    let tp = traceparent.filter(|_| enabled())?;
    let span = tracing::info_span!(
        target: TARGET,
        "actor.handle",
        otel.kind = "server",
        actor.path = %path,
        message_type = type_name,
        remote = true,
    );
    set_parent(&span, tp);
    Some(span)
}

#[cfg(test)]
mod tests {
    use super::{ENTRY, SpanIds, in_entry, now_unix_nanos, parse_traceparent, span_id};

    #[test]
    fn an_entry_span_is_current_only_while_its_future_is_polled() {
        let (outer, inner) = (SpanIds::root(), SpanIds::root());
        let seen = futures::executor::block_on(in_entry(outer, async {
            let before = ENTRY.get();
            let nested = in_entry(inner, async { ENTRY.get() }).await;
            (before, nested, ENTRY.get())
        }));
        assert_eq!(seen, (Some(outer), Some(inner), Some(outer)));
        assert_eq!(ENTRY.get(), None);
        // A poll that panics leaves no entry behind.
        let panicked = std::panic::catch_unwind(|| {
            futures::executor::block_on(in_entry(outer, async { panic!("handler failed") }))
        });
        assert!(panicked.is_err());
        assert_eq!(ENTRY.get(), None);
    }

    #[test]
    fn span_clock_follows_the_system_clock() {
        let now = || {
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(now_unix_nanos())
        };
        let mut last = now();
        for _ in 0..1_000 {
            let (ours, system) = (now(), std::time::SystemTime::now());
            let off = system
                .duration_since(ours)
                .or_else(|e| Ok::<_, ()>(e.duration()))
                .expect("difference");
            assert!(off < std::time::Duration::from_millis(5), "{off:?} apart");
            assert!(ours >= last, "went back");
            last = ours;
        }
        let slept = now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let d = now().duration_since(slept).expect("forward");
        assert!(d >= std::time::Duration::from_millis(19), "{d:?}");
    }

    #[test]
    fn span_ids_are_distinct_and_never_zero() {
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| span_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
        let other = std::thread::spawn(|| (0..10_000).map(|_| span_id()).collect::<Vec<_>>())
            .join()
            .expect("thread");
        assert!(
            other.iter().all(|id| !ids.contains(id)),
            "threads seed apart"
        );
    }

    fn sampled_flag(traceparent: &str) -> Option<bool> {
        parse_traceparent(traceparent).map(|(_, _, sampled)| sampled)
    }

    #[test]
    fn span_ids_round_trip_through_traceparent() {
        let root = SpanIds::root();
        assert!(root.trace_id != 0 && root.span_id != 0 && root.parent_span_id == 0);
        let (trace_id, parent, sampled) = parse_traceparent(&root.traceparent()).expect("valid");
        assert!(sampled);
        let child = SpanIds::child(trace_id, parent);
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(
            root.traceparent().as_bytes(),
            &root.traceparent_bytes()[..],
            "both spellings agree"
        );
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, true))
        );
        assert_eq!(parse_traceparent("00-4bf92f35-00f067aa0ba902b7-01"), None);
    }

    #[test]
    fn traceparent_flags() {
        let id = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            sampled_flag(&format!("00-{id}-b7ad6b7169203331-01")),
            Some(true)
        );
        assert_eq!(
            sampled_flag(&format!("00-{id}-b7ad6b7169203331-00")),
            Some(false)
        );
        assert_eq!(
            sampled_flag(&format!("01-{id}-b7ad6b7169203331-03-extra")),
            Some(true)
        );
        for bad in [
            "",
            "garbage",
            &format!("00-{id}-b7ad6b7169203331"),
            &format!("00-{id}-b7ad6b7169203331-01-extra"),
            &format!("ff-{id}-b7ad6b7169203331-01"),
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            &format!("00-{id}-0000000000000000-01"),
            &format!("00-{id}-b7ad6b716920333x-01"),
        ] {
            assert_eq!(sampled_flag(bad), None, "{bad}");
        }
    }
}
