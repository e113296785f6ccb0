//! Per-route request counters and latency histograms, recorded by a middleware.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tracing::Instrument as _;

use crate::GatewayState;

/// Labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// The matched route pattern (never the raw path: bounded cardinality).
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// Labels of a latency series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The matched route pattern.
    pub route: String,
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

/// The `http.request` span of one request, parented on the client's W3C
/// `traceparent` header when it sent a valid one (else a new trace starts).
fn request_span(req: &ServiceRequest, method: &str) -> tracing::Span {
    let span = tracing::info_span!(
        target: abi_runtime::trace::TARGET,
        "http.request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        url.path = req.path(),
    );
    if let Some(tp) = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
    {
        abi_runtime::trace::set_parent(&span, tp);
    }
    span
}

/// Middleware: times every request and counts it by route and status; with
/// tracing on, runs it inside an `http.request` span and answers the span's
/// `traceparent` so that a client can find its trace.
pub async fn record(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let state = req
        .app_data::<actix_web::web::Data<GatewayState>>()
        .cloned();
    let span = abi_runtime::trace::enabled().then(|| request_span(&req, &method));
    let mut res = match &span {
        Some(span) => next.call(req).instrument(span.clone()).await?,
        None => next.call(req).await?,
    };
    if let Some(span) = &span {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        span.record("otel.name", format!("{method} {route}"));
        span.record("http.route", route);
        span.record("http.response.status_code", res.status().as_u16());
        if res.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        if let Some(tp) = abi_runtime::trace::traceparent_of(span)
            && let Ok(v) = HeaderValue::from_str(&tp)
        {
            res.headers_mut()
                .insert(HeaderName::from_static("traceparent"), v);
        }
    }
    if let Some(state) = state {
        let m = HttpMetrics::of(&state.node);
        let elapsed = start.elapsed();
        state.live.record(
            elapsed.as_secs_f32() * 1000.0,
            res.status().is_server_error(),
        );
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
        let status = res.status().as_u16();
        m.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
        m.duration
            .get_or_create(&RouteLabels { route })
            .observe(elapsed.as_secs_f64());
    }
    Ok(res)
}
