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

/// The `http.request` span of one request, or `None` when it is not traced.
///
/// Head sampling happens here, before any span exists: a client's valid
/// `traceparent` decides (its sampled flag), else the sampling ratio does.
/// An unsampled request then makes no span anywhere (actor messages are only
/// traced inside a traced request), which is what keeps tracing cheap.
fn request_span(req: &ServiceRequest, method: &str) -> Option<tracing::Span> {
    let parent = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|tp| abi_runtime::trace::sampled_flag(tp).map(|sampled| (tp, sampled)));
    match parent {
        Some((_, false)) => return None,
        Some((_, true)) => {}
        None if !abi_runtime::trace::sample_new() => return None,
        None => {}
    }
    let span = tracing::info_span!(
        target: abi_runtime::trace::TARGET,
        "http.request",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some((tp, _)) = parent {
        abi_runtime::trace::set_parent(&span, tp);
    }
    Some(span)
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
    let span = if abi_runtime::trace::enabled() {
        request_span(&req, &method)
    } else {
        None
    };
    let mut res = match &span {
        Some(span) => next.call(req).instrument(span.clone()).await?,
        None => next.call(req).await?,
    };
    if let Some(span) = &span {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_string());
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
