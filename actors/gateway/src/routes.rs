//! HTTP routes, one module per API family.

pub mod cluster;
pub mod collection_route;
pub mod compute;
pub mod membership;
pub mod observe;
pub mod openai;
pub mod qdrant;
pub mod raft;
pub mod text_vectors;

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::ApiError;

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // The data paths first: actix tries services in registration order.
    qdrant::configure(cfg);
    openai::configure(cfg);
    cluster::configure(cfg);
    compute::configure(cfg);
    membership::configure(cfg);
    observe::configure(cfg);
    raft::configure(cfg);
    cfg.route("/openapi.json", web::get().to(crate::openapi::openapi_json));
}

/// JSON 404 for unknown routes.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    ApiError::not_found(format!("no route for {} {}", req.method(), req.path())).error_response()
}
