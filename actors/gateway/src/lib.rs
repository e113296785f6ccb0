//! The HTTP gateway: an actix-web server owned by a supervised ractor actor.
//!
//! Handlers only parse, validate and forward to actors with
//! [`Node::ask`](abi_runtime::Node::ask); no model or index work runs on
//! actix's worker threads. Every error answers with the JSON body
//! `{"error":{"code":..,"message":..}}`.
//!
//! # Layout
//! - [`actor`]: the gateway actor (binds, serves, stops with its supervisor).
//! - [`auth`]: API keys, roles per route, rate limits, request ids, deadlines.
//! - [`cors`]: CORS for browser clients (off by default).
//! - [`error`]: [`ApiError`], the mapping from failures to HTTP statuses.
//! - [`http_metrics`]: per-route request counters and latency histograms.
//! - [`openapi`]: the OpenAPI 3 document (`GET /openapi.json`).
//! - [`routes`]: one module per API family.
//! - [`tls`]: the HTTPS server configuration.

pub mod actor;
pub mod auth;
pub mod cors;
pub mod error;
pub mod http_metrics;
pub mod live;
pub mod openapi;
pub mod routes;
pub mod tls;

use std::time::Duration;

use abi_runtime::Node;

pub use actor::{GatewayActor, GatewayConfig, child_spec};
pub use error::ApiError;

/// What every handler can reach: the node and the request deadline.
#[derive(Debug, Clone)]
pub struct GatewayState {
    /// The local node, for `ask`/`tell` by path.
    pub node: Node,
    /// Deadline for a request forwarded to an actor.
    pub request_timeout: Duration,
    /// Rolling request statistics for the dashboard.
    pub live: std::sync::Arc<live::LiveStats>,
    /// Authentication, roles, limits.
    pub security: std::sync::Arc<auth::middleware::Security>,
    /// Which other node holds a collection this one does not.
    pub holders: std::sync::Arc<routes::collection_route::Holders>,
    /// The HTTP metric families, looked up once (not per request).
    pub http_metrics: http_metrics::HttpMetrics,
}
