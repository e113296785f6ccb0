//! Per-route request counters and latency histograms, recorded by a middleware.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use abi_runtime::trace::{Attributes, EntrySpan, SpanIds, SpanKind};

use crate::GatewayState;

/// Labels of a finished request. Static text: the label sets are looked up on every
/// request, and building them must not allocate.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method (`_OTHER` for a non-standard one: bounded cardinality).
    pub method: &'static str,
    /// The matched route pattern (never the raw path: bounded cardinality).
    pub route: &'static str,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route pattern.
    pub route: &'static str,
}

/// A standard method's name; `_OTHER` for the rest (OpenTelemetry's convention).
fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The one static copy of a route pattern. Patterns are the gateway's own routes (plus
/// `unmatched`), a bounded set, so each is leaked once; a per-thread map finds it without
/// sharing a lock between the workers.
fn route_name(pattern: Option<String>) -> &'static str {
    use std::cell::RefCell;
    use std::collections::HashSet;
    use std::sync::{LazyLock, Mutex};
    thread_local! {
        static SEEN: RefCell<rustc_hash::FxHashMap<String, &'static str>> = RefCell::default();
    }
    static ALL: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);
    let Some(pattern) = pattern else {
        return "unmatched";
    };
    SEEN.with(|seen| {
        if let Some(name) = seen.borrow().get(&pattern) {
            return *name;
        }
        let name = {
            let mut all = ALL.lock().unwrap_or_else(|e| e.into_inner());
            match all.get(pattern.as_str()) {
                Some(name) => *name,
                None => {
                    let name: &'static str = Box::leak(pattern.clone().into_boxed_str());
                    all.insert(name);
                    name
                }
            }
        };
        seen.borrow_mut().insert(pattern, name);
        name
    })
}

/// The gateway's HTTP metric families (registered once per process).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    /// `abi_http_requests_total{method,route,status}`.
    pub requests: Family<RequestLabels, Counter>,
    /// `abi_http_request_duration_seconds{route}`.
    pub duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    /// Registers (or finds) the families in the node's registry.
    pub fn of(node: &abi_runtime::Node) -> Self {
        node.metrics().get_or_init(|reg| {
            let requests = Family::<RequestLabels, Counter>::default();
            let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.5, 14))
            });
            reg.register(
                "abi_http_requests",
                "HTTP requests answered by the gateway",
                requests.clone(),
            );
            reg.register_with_unit(
                "abi_http_request_duration",
                "Time to answer an HTTP request",
                prometheus_client::registry::Unit::Seconds,
                duration.clone(),
            );
            HttpMetrics { requests, duration }
        })
    }
}

/// Built once: `HeaderName::from_static` checks its text on every call.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The ids of the `http.request` span of one request, or `None` when it is
/// not traced.
///
/// Head sampling happens here, before any span exists: a client's valid
/// `traceparent` decides (its sampled flag), else the sampling ratio does.
/// An unsampled request then makes no span anywhere (actor messages are only
/// traced inside a traced request), which is what keeps tracing cheap.
fn request_ids(req: &ServiceRequest) -> Option<SpanIds> {
    let parent = req
        .headers()
        .get(&TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(abi_runtime::trace::parse_traceparent);
    match parent {
        Some((_, _, false)) => None,
        Some((trace_id, parent_span_id, true)) => Some(SpanIds::child(trace_id, parent_span_id)),
        None if !abi_runtime::trace::sample_new() => None,
        None => Some(SpanIds::root()),
    }
}

/// Middleware: times every request and counts it by route and status; with
/// tracing on, runs it as an `http.request` entry span
/// ([`abi_runtime::trace::in_entry`]) and answers the span's `traceparent` so
/// that a client can find its trace.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = method_name(req.method());
    let state = req
        .app_data::<actix_web::web::Data<GatewayState>>()
        .cloned();
    let traced = if abi_runtime::trace::enabled() {
        request_ids(&req).map(|ids| (ids, abi_runtime::trace::now_unix_nanos()))
    } else {
        None
    };
    // Pinned where it is made, so the entry scope wraps a pointer to the service's
    // (large) future rather than moving the future into itself.
    let call = std::pin::pin!(next.call(req));
    let mut res = match traced {
        Some((ids, _)) => abi_runtime::trace::in_entry(ids, call).await?,
        None => call.await?,
    };
    let route = route_name(res.request().match_pattern());
    let status = res.status();
    let elapsed = start.elapsed();
    if let Some(state) = state {
        let m = &state.http_metrics;
        state
            .live
            .record(elapsed.as_secs_f32() * 1000.0, status.is_server_error());
        m.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status: status.as_u16(),
            })
            .inc();
        m.duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }
    if let Some((ids, started)) = traced {
        let traceparent = ids.traceparent_bytes();
        // SAFETY: a `traceparent` is ASCII hex digits and dashes, all valid header value
        // bytes; checking the 55 of them on every traced request cost more than making
        // the span (debug builds check anyway).
        let v = unsafe { HeaderValue::from_maybe_shared_unchecked(traceparent) };
        res.headers_mut().insert(TRACEPARENT, v);
        abi_runtime::trace::export(EntrySpan {
            ids,
            name: "http.request",
            kind: SpanKind::Server,
            start: started,
            end: abi_runtime::trace::now_unix_nanos(),
            error: status.is_server_error(),
            attributes: Attributes::Http {
                method,
                route,
                status: status.as_u16(),
            },
        });
    }
    Ok(res)
}
