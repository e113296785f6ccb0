//! Observation: Prometheus `/metrics`, the dashboard, and its live stream.

use std::time::Duration;

use abi_protocol::supervision::{ActorTree, GetTree};
use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::{ApiError, GatewayState};

const DASHBOARD_HTML: &str = include_str!("../../assets/dashboard.html");

/// Registers the observation routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(root))
        .route("/metrics", web::get().to(metrics))
        .route("/dashboard", web::get().to(dashboard))
        .route("/dashboard/", web::get().to(dashboard_slash))
        .route("/v1/cluster/snapshot", web::get().to(snapshot))
        .route("/v1/cluster/stream", web::get().to(stream))
        .route("/v1/admin/telemetry/sampling", web::get().to(sampling))
        .route("/v1/admin/telemetry/sampling", web::put().to(set_sampling));
}

/// The trace sampling of this node.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Sampling {
    /// Whether spans are exported (an OTLP endpoint is configured).
    tracing: bool,
    /// Fraction of requests without trace context that start a trace; null when tracing is off.
    sampling_ratio: Option<f64>,
    /// The ratio before this change (only in the answer to a change).
    #[serde(skip_serializing_if = "Option::is_none")]
    previous: Option<f64>,
}

/// A new sampling ratio.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"ratio": 0.1}))]
pub(crate) struct SamplingBody {
    /// Fraction of new traces sampled, 0.0 to 1.0.
    ratio: f64,
}

/// The trace sampling ratio in force on this node.
#[utoipa::path(
    get,
    path = "/v1/admin/telemetry/sampling",
    tag = "admin",
    responses((status = 200, description = "Sampling in force", body = Sampling), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn sampling() -> HttpResponse {
    let ratio = abi_runtime::trace::sampling_ratio();
    HttpResponse::Ok().json(Sampling {
        tracing: ratio.is_some(),
        sampling_ratio: ratio,
        previous: None,
    })
}

/// Changes the fraction of new traces sampled, without a restart (turn tracing up for
/// an incident, down after it). Requests already traced stay traced.
#[utoipa::path(
    put,
    path = "/v1/admin/telemetry/sampling",
    tag = "admin",
    request_body(content = SamplingBody, content_type = "application/json"),
    responses((status = 200, description = "Ratio changed", body = Sampling), (status = 409, description = "Tracing is off on this node", body = crate::openapi::ErrorDoc), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn set_sampling(body: web::Json<SamplingBody>) -> Result<HttpResponse, ApiError> {
    use abi_runtime::trace::SamplingError;
    let ratio = body.ratio;
    let previous = abi_runtime::trace::set_sampling_ratio(ratio).map_err(|e| match e {
        SamplingError::TracingOff => ApiError::new(
            actix_web::http::StatusCode::CONFLICT,
            "tracing_off",
            e.to_string(),
        ),
        SamplingError::OutOfRange(_) => ApiError::bad_request(e.to_string()),
    })?;
    tracing::info!(ratio, previous, "trace sampling ratio changed");
    Ok(HttpResponse::Ok().json(Sampling {
        tracing: true,
        sampling_ratio: Some(ratio),
        previous: Some(previous),
    }))
}

/// Prometheus exposition: OpenMetrics when the scraper asks for it (as
/// Prometheus does), else the classic text format 0.0.4 (curl, promtool).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "observe",
    responses((status = 200, description = "Prometheus exposition", content_type = "text/plain", body = String), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn metrics(state: web::Data<GatewayState>, req: actix_web::HttpRequest) -> HttpResponse {
    // Make sure the HTTP families exist even before the first request is recorded.
    crate::http_metrics::HttpMetrics::of(&state.node);
    let open_metrics = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = state.node.metrics().encode();
    if open_metrics {
        HttpResponse::Ok()
            .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(body)
    } else {
        HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(to_text_format(&body))
    }
}

/// OpenMetrics -> Prometheus text 0.0.4: counter families are named with
/// their `_total` suffix, and `# UNIT` / `# EOF` lines do not exist there.
fn to_text_format(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// The Qdrant REST API level our collections subset follows (tested with that
/// `qdrant-client`), reported where Qdrant reports its version so the official
/// client's compatibility check passes.
const QDRANT_API_VERSION: &str = "1.20.0";

/// Server identity, as Qdrant answers `GET /`.
#[utoipa::path(
    get,
    path = "/",
    tag = "node",
    responses((status = 200, description = "Server identity (as Qdrant answers GET /)", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn root(state: web::Data<GatewayState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "title": "abi — Qdrant-compatible collections API (subset)",
        "version": QDRANT_API_VERSION,
        "abi_version": env!("CARGO_PKG_VERSION"),
        "node": state.node.id().as_str(),
    }))
}

/// The supervisor dashboard: one self-contained page, no external assets.
#[utoipa::path(
    get,
    path = "/dashboard",
    tag = "observe",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn dashboard() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(DASHBOARD_HTML)
}

/// `/dashboard/` serves the same page (a separate function only so that the
/// OpenAPI document lists both paths).
#[utoipa::path(
    get,
    path = "/dashboard/",
    tag = "observe",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String))
)]
async fn dashboard_slash() -> HttpResponse {
    dashboard().await
}

#[derive(Serialize)]
struct Snapshot {
    node: String,
    incarnation: u64,
    version: &'static str,
    tree: ActorTree,
    events: Vec<abi_runtime::events::Event>,
    events_total: u64,
    http: Vec<crate::live::Point>,
    /// Completion tokens generated so far (the page derives tokens/s).
    generated_tokens_total: f64,
}

async fn build(state: &GatewayState) -> Result<Snapshot, ApiError> {
    let node = &state.node;
    let tree = node
        .ask(&node.root_path(), GetTree, Duration::from_secs(2))
        .await?;
    let mut events = node.events().snapshot();
    let keep = events.len().saturating_sub(200);
    events.drain(..keep);
    Ok(Snapshot {
        node: node.id().to_string(),
        incarnation: node.incarnation(),
        version: env!("CARGO_PKG_VERSION"),
        tree,
        events,
        events_total: node.events().total(),
        http: state.live.series(60),
        generated_tokens_total: crate::live::counter_sum(
            &node.metrics().encode(),
            "abi_inference_generated_tokens_total",
        ),
    })
}

/// Everything the dashboard shows, once.
#[utoipa::path(
    get,
    path = "/v1/cluster/snapshot",
    tag = "observe",
    responses((status = 200, description = "Dashboard snapshot", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn snapshot(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(build(&state).await?))
}

/// The same snapshot every second as Server-Sent Events.
#[utoipa::path(
    get,
    path = "/v1/cluster/stream",
    tag = "observe",
    responses((status = 200, description = "Server-Sent Events, one snapshot per second (never ends)", content_type = "text/event-stream", body = String), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn stream(state: web::Data<GatewayState>) -> HttpResponse {
    let state = state.into_inner();
    let events = futures::stream::unfold((state, true), |(state, first)| async move {
        if !first {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let frame = match build(&state).await {
            Ok(s) => match serde_json::to_string(&s) {
                Ok(json) => format!("event: snapshot\ndata: {json}\n\n"),
                Err(e) => format!(
                    "event: error\ndata: {}\n\n",
                    serde_json::json!({"message": e.to_string()})
                ),
            },
            Err(e) => format!(
                "event: error\ndata: {}\n\n",
                serde_json::json!({"message": e.message})
            ),
        };
        Some((
            Ok::<_, actix_web::Error>(Bytes::from(frame)),
            (state, false),
        ))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .streaming(events)
}
