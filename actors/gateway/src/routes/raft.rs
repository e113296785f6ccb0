//! The cluster metadata group over HTTP: its status (`GET /v1/cluster/raft`), membership
//! changes (admin) and the replicated metadata itself, served by `<node>/raft` on any
//! member (followers forward to the leader).

use std::collections::BTreeMap;

use abi_protocol::raft::{
    ChangeMembership, ClusterMeta, GetStatus, MembershipChange, MetaCommand, PATH, Propose,
    RaftFailure, RaftStatus, ReadMeta,
};
use abi_protocol::{ActorPath, Request};
use abi_runtime::AskError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::{ApiError, GatewayState};

/// Registers the Raft routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/cluster/raft", web::get().to(status))
        .route("/v1/cluster/raft/learners", web::post().to(add_learner))
        .route("/v1/cluster/raft/voters", web::post().to(promote))
        .route("/v1/cluster/raft/members/{node}", web::delete().to(remove))
        .route("/v1/cluster/meta", web::get().to(meta))
        .route("/v1/cluster/meta/kv/{key}", web::get().to(get_key))
        .route("/v1/cluster/meta/kv/{key}", web::put().to(put_key))
        .route("/v1/cluster/meta/kv/{key}", web::delete().to(delete_key));
}

impl From<RaftFailure> for ApiError {
    fn from(f: RaftFailure) -> Self {
        let (status, code) = match &f {
            RaftFailure::Disabled => (StatusCode::NOT_FOUND, "raft_disabled"),
            RaftFailure::NoLeader => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            RaftFailure::LeaderUnreachable { .. } | RaftFailure::TooManyForwards(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "leader_unreachable")
            }
            RaftFailure::Invalid(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            RaftFailure::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "raft_error"),
        };
        let e = ApiError::new(status, code, f.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            e.retry_after(1)
        } else {
            e
        }
    }
}

/// Asks the local Raft actor; a node without `[raft]` answers 404 `raft_disabled`.
async fn ask<R, T>(state: &GatewayState, req: R) -> Result<T, ApiError>
where
    R: Request<Reply = Result<T, RaftFailure>>,
{
    let path: ActorPath = state
        .node
        .path(PATH)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match state.node.ask(&path, req, state.request_timeout).await {
        Ok(r) => Ok(r?),
        Err(AskError::NoSuchActor(_)) => Err(RaftFailure::Disabled.into()),
        Err(e) => Err(e.into()),
    }
}

/// `{"leader", "term", "commit_index", "voters", "learners", ...}` as this member sees it.
#[utoipa::path(
    get,
    path = "/v1/cluster/raft",
    tag = "raft",
    responses((status = 200, description = "This member's view of the Raft group", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn status(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    let s: RaftStatus = ask(&state, GetStatus).await?;
    Ok(HttpResponse::Ok().json(s))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct AddLearner {
    node: String,
    addr: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct Promote {
    nodes: Vec<String>,
}

async fn change(state: &GatewayState, change: MembershipChange) -> Result<HttpResponse, ApiError> {
    let s: RaftStatus = ask(
        state,
        ChangeMembership {
            change,
            forwards: 0,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(s))
}

/// `POST /v1/cluster/raft/learners {"node", "addr"}`: adds a learner, answers once it caught up.
#[utoipa::path(
    post,
    path = "/v1/cluster/raft/learners",
    tag = "raft",
    request_body(content = AddLearner, content_type = "application/json"),
    responses((status = 200, description = "The group after the change", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn add_learner(
    state: web::Data<GatewayState>,
    body: web::Json<AddLearner>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    change(
        &state,
        MembershipChange::AddLearner {
            node: b.node,
            addr: b.addr,
        },
    )
    .await
}

/// `POST /v1/cluster/raft/voters {"nodes": [...]}`: promotes learners to voters.
#[utoipa::path(
    post,
    path = "/v1/cluster/raft/voters",
    tag = "raft",
    request_body(content = Promote, content_type = "application/json"),
    responses((status = 200, description = "The group after the change", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn promote(
    state: web::Data<GatewayState>,
    body: web::Json<Promote>,
) -> Result<HttpResponse, ApiError> {
    if body.nodes.is_empty() {
        return Err(ApiError::bad_request("nodes must not be empty"));
    }
    change(
        &state,
        MembershipChange::Promote {
            nodes: body.into_inner().nodes,
        },
    )
    .await
}

/// `DELETE /v1/cluster/raft/members/{node}`: removes a voter or learner from the group.
#[utoipa::path(
    delete,
    path = "/v1/cluster/raft/members/{node}",
    tag = "raft",
    params(("node" = String, Path, description = "Node id")),
    responses((status = 200, description = "The group after the change", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn remove(
    state: web::Data<GatewayState>,
    node: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    change(
        &state,
        MembershipChange::Remove {
            nodes: vec![node.into_inner()],
        },
    )
    .await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ReadQuery {
    /// `linearizable` (default: confirmed with a quorum) or `local` (this member's state).
    consistency: Option<String>,
}

fn linearizable(q: &ReadQuery) -> Result<bool, ApiError> {
    match q.consistency.as_deref() {
        None | Some("linearizable") => Ok(true),
        Some("local") => Ok(false),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be `linearizable` or `local`, not {other:?}"
        ))),
    }
}

/// The metadata at the consistency the query asks for.
async fn read_meta(state: &GatewayState, q: &ReadQuery) -> Result<ClusterMeta, ApiError> {
    ask(
        state,
        ReadMeta {
            linearizable: linearizable(q)?,
        },
    )
    .await
}

/// The metadata as JSON (values as UTF-8 text, lossy for binary values).
#[derive(Serialize)]
struct MetaJson {
    collections: BTreeMap<String, abi_protocol::raft::CollectionMeta>,
    pools: BTreeMap<String, abi_protocol::raft::PoolMeta>,
    nodes: BTreeMap<String, String>,
    kv: BTreeMap<String, String>,
}

impl From<ClusterMeta> for MetaJson {
    fn from(m: ClusterMeta) -> Self {
        Self {
            collections: m.collections,
            pools: m.pools,
            nodes: m.nodes,
            kv: m
                .kv
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
        }
    }
}

/// `GET /v1/cluster/meta[?consistency=local]`.
#[utoipa::path(
    get,
    path = "/v1/cluster/meta",
    tag = "raft",
    params(ReadQuery),
    responses((status = 200, description = "The replicated cluster metadata", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn meta(
    state: web::Data<GatewayState>,
    q: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let m = read_meta(&state, &q).await?;
    Ok(HttpResponse::Ok().json(MetaJson::from(m)))
}

#[derive(Serialize)]
struct KeyValue {
    key: String,
    value: String,
}

/// `GET /v1/cluster/meta/kv/{key}`: 404 when absent.
#[utoipa::path(
    get,
    path = "/v1/cluster/meta/kv/{key}",
    tag = "raft",
    params(("key" = String, Path, description = "Metadata key"), ReadQuery),
    responses((status = 200, description = "The key and its value", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn get_key(
    state: web::Data<GatewayState>,
    key: web::Path<String>,
    q: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    let m = read_meta(&state, &q).await?;
    match m.kv.get(&key) {
        Some(v) => Ok(HttpResponse::Ok().json(KeyValue {
            value: String::from_utf8_lossy(v).into_owned(),
            key,
        })),
        None => Err(ApiError::not_found(format!("no metadata key {key:?}"))),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(crate) struct PutBody {
    value: String,
}

#[derive(Serialize)]
struct Written {
    index: u64,
    leader: String,
    previous: Option<String>,
}

async fn propose(state: &GatewayState, command: MetaCommand) -> Result<HttpResponse, ApiError> {
    let a = ask(state, Propose::new(command)).await?;
    Ok(HttpResponse::Ok().json(Written {
        index: a.index,
        leader: a.leader,
        previous: a.previous.map(|p| String::from_utf8_lossy(&p).into_owned()),
    }))
}

/// `PUT /v1/cluster/meta/kv/{key} {"value"}`: answered once a majority has it durable.
#[utoipa::path(
    put,
    path = "/v1/cluster/meta/kv/{key}",
    tag = "raft",
    params(("key" = String, Path, description = "Metadata key")),
    request_body(content = PutBody, content_type = "application/json"),
    responses((status = 200, description = "Committed: log index and leader", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn put_key(
    state: web::Data<GatewayState>,
    key: web::Path<String>,
    body: web::Json<PutBody>,
) -> Result<HttpResponse, ApiError> {
    let key = key.into_inner();
    if key.is_empty() || key.len() > 1024 {
        return Err(ApiError::bad_request("key must be 1 to 1024 bytes"));
    }
    propose(
        &state,
        MetaCommand::Put {
            key,
            value: body.into_inner().value.into_bytes(),
        },
    )
    .await
}

/// `DELETE /v1/cluster/meta/kv/{key}`.
#[utoipa::path(
    delete,
    path = "/v1/cluster/meta/kv/{key}",
    tag = "raft",
    params(("key" = String, Path, description = "Metadata key")),
    responses((status = 200, description = "Committed: log index and leader", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, no leader, or Raft is not enabled", body = crate::openapi::ErrorDoc))
)]
pub(crate) async fn delete_key(
    state: web::Data<GatewayState>,
    key: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    propose(
        &state,
        MetaCommand::Delete {
            key: key.into_inner(),
        },
    )
    .await
}
