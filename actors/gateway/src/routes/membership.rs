//! `GET /v1/cluster/nodes`: the cluster's nodes as this node sees them,
//! answered by the membership actor (`abi-discovery`) at `<node>/membership`.

use abi_protocol::membership::{ListNodes, NodeView, PATH};
use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::{ApiError, GatewayState};

/// Registers the membership routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/cluster/nodes", web::get().to(nodes));
}

#[derive(Serialize)]
struct Nodes {
    nodes: Vec<NodeView>,
}

/// `{"nodes": [{"id", "addr", "status", "incarnation", "labels"}]}`, this node first.
#[utoipa::path(
    get,
    path = "/v1/cluster/nodes",
    tag = "cluster",
    responses((status = 200, description = "Cluster members and their states", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn nodes(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    let node = &state.node;
    let path = node
        .path(PATH)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let nodes = node.ask(&path, ListNodes, state.request_timeout).await?;
    Ok(HttpResponse::Ok().json(Nodes { nodes }))
}
