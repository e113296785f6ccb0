//! Node health, readiness and the live supervision tree.

use std::time::Duration;

use abi_protocol::ActorPath;
use abi_protocol::health::Check;
use abi_protocol::supervision::{
    ActorTree, ChildState, CommandError, GetTree, KillChild, RestartChild,
};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::{ApiError, GatewayState};

/// Registers the cluster routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/v1/cluster/actors", web::get().to(actors))
        .route("/v1/cluster/events", web::get().to(events))
        .route(
            "/v1/cluster/actors/{path:.*}/restart",
            web::post().to(restart),
        )
        .route("/v1/cluster/actors/{path:.*}/kill", web::post().to(kill))
        .route("/v1/admin/keys/reload", web::post().to(reload_keys));
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    node: &'a str,
    incarnation: u64,
    version: &'static str,
}

/// Liveness: the gateway answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "node",
    responses((status = 200, description = "The gateway answers", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn health(state: web::Data<GatewayState>) -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        node: state.node.id().as_str(),
        incarnation: state.node.incarnation(),
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize)]
struct CheckResult {
    path: String,
    ready: bool,
    detail: String,
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    /// Permanent actors that are not running.
    not_running: Vec<String>,
    /// Readiness probes run by subsystems (real work, not pings).
    checks: Vec<CheckResult>,
}

fn not_running(tree: &ActorTree, out: &mut Vec<String>) {
    if tree.restart != "temporary" && tree.state != ChildState::Running {
        let transient_done = tree.restart == "transient" && tree.state == ChildState::Stopped;
        if !transient_done {
            out.push(format!("{} ({:?})", tree.path, tree.state).to_lowercase());
        }
    }
    for c in &tree.children {
        not_running(c, out);
    }
}

/// Readiness: every required actor is running and every subsystem probe passes.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "node",
    responses((status = 200, description = "Every required actor runs and every probe passes", body = Object), (status = 503, description = "Not ready: the failing checks", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn ready(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    let node = &state.node;
    let tree = node
        .ask(&node.root_path(), GetTree, Duration::from_secs(2))
        .await?;
    let mut missing = Vec::new();
    not_running(&tree, &mut missing);
    let probes = node.health_checks().into_iter().map(|path| async move {
        match node.ask(&path, Check, Duration::from_secs(5)).await {
            Ok(r) => CheckResult {
                path: path.to_string(),
                ready: r.ready,
                detail: r.detail,
            },
            Err(e) => CheckResult {
                path: path.to_string(),
                ready: false,
                detail: e.to_string(),
            },
        }
    });
    let checks = futures::future::join_all(probes).await;
    let ready = missing.is_empty() && checks.iter().all(|c| c.ready);
    let body = Readiness {
        ready,
        not_running: missing,
        checks,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(HttpResponse::build(status).json(body))
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TreeQuery {
    /// Another node's id: its tree is fetched through the cluster transport.
    node: Option<String>,
}

/// The live supervision tree of this node, or of `?node=<id>` (a remote ask).
#[utoipa::path(
    get,
    path = "/v1/cluster/actors",
    tag = "cluster",
    params(TreeQuery),
    responses((status = 200, description = "The live supervision tree", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn actors(
    state: web::Data<GatewayState>,
    q: web::Query<TreeQuery>,
) -> Result<HttpResponse, ApiError> {
    let node = &state.node;
    let root = match &q.node {
        Some(id) if id != node.id().as_str() => {
            let id = abi_protocol::NodeId::new(id.clone())
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            // A node the cluster does not know is the caller's mistake (404);
            // only a known member that cannot be reached is a 503.
            if !is_member(&state, &id).await? {
                return Err(ApiError::not_found(format!(
                    "node {id} is not a member of this cluster"
                )));
            }
            ActorPath::root(id, 0)
        }
        _ => node.root_path(),
    };
    let tree = node.ask(&root, GetTree, Duration::from_secs(5)).await?;
    Ok(HttpResponse::Ok().json(tree))
}

/// Whether the membership view lists `id`; a node without a membership actor
/// (no cluster transport) has no other members.
async fn is_member(state: &GatewayState, id: &abi_protocol::NodeId) -> Result<bool, ApiError> {
    use abi_protocol::membership::{ListNodes, PATH};
    let node = &state.node;
    let Ok(path) = node.path(PATH) else {
        return Ok(false);
    };
    match node.ask(&path, ListNodes, Duration::from_secs(2)).await {
        Ok(nodes) => Ok(nodes.iter().any(|n| &n.id == id)),
        Err(abi_runtime::AskError::NoSuchActor(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Recent supervision events (restarts, failures, escalations).
#[utoipa::path(
    get,
    path = "/v1/cluster/events",
    tag = "cluster",
    responses((status = 200, description = "Recent supervision events", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn events(state: web::Data<GatewayState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "total": state.node.events().total(),
        "events": state.node.events().snapshot(),
    }))
}

fn parent_and_leaf(raw: &str) -> Result<(ActorPath, String), ApiError> {
    let path: ActorPath = raw
        .parse()
        .map_err(|e| ApiError::bad_request(format!("bad actor path {raw:?}: {e}")))?;
    let parent = path.parent().ok_or_else(|| {
        ApiError::bad_request(
            "the root supervisor cannot be restarted or killed; stop the node instead",
        )
    })?;
    Ok((parent, path.leaf().to_string()))
}

fn command_result(
    raw: &str,
    r: Result<(), CommandError>,
    action: &str,
) -> Result<HttpResponse, ApiError> {
    match r {
        Ok(()) => Ok(HttpResponse::Ok().json(serde_json::json!({ "path": raw, action: true }))),
        Err(CommandError::NoSuchChild(n)) => Err(ApiError::not_found(format!(
            "no actor {raw:?} (no child {n:?})"
        ))),
        Err(e @ CommandError::StartFailed(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "restart_failed",
            e.to_string(),
        )),
        Err(e @ CommandError::ShuttingDown) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        )),
    }
}

/// True when `target` is this gateway or one of its ancestors: a synchronous
/// answer would wait on our own shutdown, so such commands are accepted (202)
/// and carried out after the answer.
fn hits_self(state: &GatewayState, target: &ActorPath) -> bool {
    let node = &state.node;
    if target.node != *node.id() {
        return false;
    }
    let me = abi_protocol::paths::GATEWAY;
    target.name.is_empty() || me == target.name || me.starts_with(&format!("{}/", target.name))
}

/// Restarts an actor through its supervisor (graceful stop, start again).
#[utoipa::path(
    post,
    path = "/v1/cluster/actors/{path}/restart",
    tag = "admin",
    params(("path" = String, Path, description = "Actor path, e.g. node-a/vector/docs")),
    responses((status = 200, description = "Restarted", body = Object), (status = 202, description = "Accepted: the target is the gateway or an ancestor", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn restart(
    state: web::Data<GatewayState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    command(
        &state,
        path.into_inner(),
        |name| RestartChild { name },
        "restarted",
    )
    .await
}

/// Kills an actor abruptly, as a crash would (fault injection for operators and tests).
#[utoipa::path(
    post,
    path = "/v1/cluster/actors/{path}/kill",
    tag = "admin",
    params(("path" = String, Path, description = "Actor path, e.g. node-a/vector/docs")),
    responses((status = 200, description = "Killed", body = Object), (status = 202, description = "Accepted: the target is the gateway or an ancestor", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn kill(
    state: web::Data<GatewayState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    command(
        &state,
        path.into_inner(),
        |name| KillChild { name },
        "killed",
    )
    .await
}

/// Sends an operator command to the supervisor of the actor at `raw`.
async fn command<R>(
    state: &GatewayState,
    raw: String,
    make: fn(String) -> R,
    done: &str,
) -> Result<HttpResponse, ApiError>
where
    R: abi_protocol::Request<Reply = Result<(), CommandError>>,
{
    let (parent, name) = parent_and_leaf(&raw)?;
    let target = parent
        .child(&name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if hits_self(state, &target) {
        // Answer first: the command stops this very gateway. The short delay
        // lets the 202 leave before an abrupt kill closes the connection.
        let node = state.node.clone();
        let msg = make(name);
        actix_web::rt::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = node.tell(&parent, msg);
        });
        return Ok(
            HttpResponse::Accepted().json(serde_json::json!({ "path": raw, "accepted": done }))
        );
    }
    let r = state
        .node
        .ask(&parent, make(name), state.request_timeout)
        .await
        .map_err(|e| match e {
            abi_runtime::AskError::Unsupported { .. } | abi_runtime::AskError::NoSuchActor(_) => {
                ApiError::not_found(format!("no supervised actor at {raw:?}"))
            }
            other => other.into(),
        })?;
    command_result(&raw, r, done)
}

/// Re-reads the keys file (also done on SIGHUP): rotation and revocation without restart.
#[utoipa::path(
    post,
    path = "/v1/admin/keys/reload",
    tag = "admin",
    responses((status = 200, description = "Keys reloaded", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn reload_keys(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    let Some(keys) = &state.security.keys else {
        return Err(ApiError::bad_request(
            "authentication is off (no --keys-file)",
        ));
    };
    let active = keys.reload().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "keys_reload_failed",
            e.to_string(),
        )
    })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "reloaded": true, "active_keys": active })))
}
