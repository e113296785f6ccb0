//! Qdrant-compatible REST API (the subset the official `qdrant-client` uses): collections,
//! upsert/retrieve/delete points, search, batch search, query, scroll and count.
//!
//! Handlers parse Qdrant's JSON, validate it and forward typed requests to the vector manager
//! actor at [`MANAGER_PATH`]; answers use Qdrant's envelope
//! `{"result": .., "status": "ok", "time": seconds}`. Errors are 4xx/5xx with the project's JSON
//! error body. Non-standard extension: `"abi_fsync": "always" | "never" | {"group_commit_ms": n}`
//! in the create-collection body picks the WAL policy (default: always).

use std::time::{Duration, Instant};

use abi_protocol::vector::{
    CollectionConfig, CollectionInfo, Condition, Count, CreateCollection, DeleteCollection,
    DeletePoints, Distance, Filter, FsyncPolicy, GetCollection, GetPoints, HnswParams,
    ListCollections, MANAGER_PATH, MatchValue, PointId, PointInput, PointRecord, Range,
    ReadConsistency, ScoredPoint, Scroll, Search, SearchQuery, Upsert, VectorError,
};
use abi_protocol::{ActorPath, Request};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::collection_route::{self, Scoped};
use super::text_vectors::{self, VectorOrText};
use crate::error::extractor_error;
use crate::{ApiError, GatewayState};

/// Largest request body (a 10k x 1536-d float batch as JSON is ~150 MB; keep well below).
const MAX_BODY: usize = 64 << 20;
/// Most points in one upsert, ids in one retrieve/delete, or queries in one batch.
const MAX_BATCH: usize = 65_536;
/// Largest `limit` of a search or scroll.
const MAX_LIMIT: u64 = 10_000;
/// Writes may take long on big batches (index inserts).
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let json = || {
        web::JsonConfig::default()
            .limit(MAX_BODY)
            .error_handler(|e, _| extractor_error(e))
    };
    // One scope: requests for other paths pay a prefix check, not one pattern match per
    // route; the hot data-path routes come first (actix tries them in order).
    let r = |p: &str| web::resource(p).app_data(json());
    cfg.service(
        web::scope("/collections")
            .service(r("/{name}/points/search").route(web::post().to(search)))
            .service(r("/{name}/points/query").route(web::post().to(query)))
            .service(
                r("/{name}/points")
                    .route(web::put().to(upsert))
                    .route(web::post().to(retrieve)),
            )
            .service(r("/{name}/points/search/batch").route(web::post().to(search_batch)))
            .service(r("/{name}/points/query/batch").route(web::post().to(query_batch)))
            .service(r("/{name}/points/delete").route(web::post().to(delete_points)))
            .service(r("/{name}/points/scroll").route(web::post().to(scroll)))
            .service(r("/{name}/points/count").route(web::post().to(count)))
            .service(web::resource("/{name}/points/{id}").route(web::get().to(get_point)))
            .service(web::resource("/{name}/exists").route(web::get().to(exists)))
            .service(
                r("/{name}")
                    .route(web::get().to(get_collection))
                    .route(web::put().to(create_collection))
                    .route(web::delete().to(delete_collection)),
            )
            .service(web::resource("").route(web::get().to(list_collections))),
    );
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/// Qdrant's answer envelope.
#[derive(Serialize)]
struct Answer<T> {
    result: T,
    status: &'static str,
    time: f64,
}

fn ok<T: Serialize>(result: T, started: Instant) -> HttpResponse {
    HttpResponse::Ok().json(Answer {
        result,
        status: "ok",
        time: started.elapsed().as_secs_f64(),
    })
}

/// One query's hits in Qdrant's answer envelope, written without the derived
/// serializers: their per-key escaping and struct plumbing were a tenth of a small
/// search's CPU. The keys are fixed ASCII; values still go through serde_json. The
/// bytes are those of `ok` (see the test).
fn ok_hits(hits: &[Scored], started: Instant) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(hits_body(hits, started.elapsed().as_secs_f64()))
}

fn hits_body(hits: &[Scored], time: f64) -> Vec<u8> {
    let mut out = Vec::with_capacity(48 + hits.len() * 120);
    out.extend_from_slice(b"{\"result\":[");
    for (i, h) in hits.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":");
        json_into(&mut out, &h.id);
        out.extend_from_slice(b",\"version\":");
        json_into(&mut out, &h.version);
        out.extend_from_slice(b",\"score\":");
        json_into(&mut out, &h.score);
        out.extend_from_slice(b",\"payload\":");
        json_into(&mut out, &h.payload);
        out.extend_from_slice(b",\"vector\":");
        json_into(&mut out, &h.vector);
        out.extend_from_slice(b",\"shard_key\":null,\"order_value\":null}");
    }
    out.extend_from_slice(b"],\"status\":\"ok\",\"time\":");
    json_into(&mut out, &time);
    out.push(b'}');
    out
}

/// Appends `v` as JSON. Numbers, JSON values and float lists always serialize, and a
/// vector takes every byte; `null` covers the impossible.
fn json_into<T: Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

fn vector_error(e: VectorError) -> ApiError {
    let (status, code) = match &e {
        VectorError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        VectorError::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
        VectorError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        VectorError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        VectorError::Unavailable(_) | VectorError::NotLeader(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        VectorError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
    };
    ApiError::new(status, code, e.to_string())
}

fn manager(state: &GatewayState) -> Result<ActorPath, ApiError> {
    state
        .node
        .path(MANAGER_PATH)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Asks the manager holding the collection (this node's or another member's) and
/// unwraps both the transport and the vector error.
async fn ask<R, T>(state: &GatewayState, req: R, timeout: Duration) -> Result<T, ApiError>
where
    R: Request<Reply = Result<T, VectorError>> + Scoped + Clone,
{
    if let Some(c) = req.collection().map(str::to_string) {
        return collection_route::ask(state, &c, req, timeout)
            .await?
            .map_err(vector_error);
    }
    let path = manager(state)?;
    state
        .node
        .ask(&path, req, timeout)
        .await?
        .map_err(vector_error)
}

fn too_many(what: &str, n: usize) -> Result<(), ApiError> {
    if n > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("{n} {what} in one request; the limit is {MAX_BATCH}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JSON <-> protocol

fn parse_uuid(s: &str) -> Option<u128> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let shape_ok = match s.len() {
        32 => true,
        36 => [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-'),
        _ => false,
    };
    if !shape_ok || hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

fn point_id(v: &Value) -> Result<PointId, ApiError> {
    match v {
        Value::Number(n) => n.as_u64().map(PointId::Num).ok_or_else(|| {
            bad(format!(
                "point id {n} must be an unsigned integer or a UUID"
            ))
        }),
        Value::String(s) => parse_uuid(s)
            .map(PointId::Uuid)
            .ok_or_else(|| bad(format!("point id {s:?} is not a UUID"))),
        other => Err(bad(format!(
            "point id {other} must be an unsigned integer or a UUID string"
        ))),
    }
}

fn id_json(id: PointId) -> Value {
    match id {
        PointId::Num(n) => json!(n),
        PointId::Uuid(_) => json!(id.to_string()),
    }
}

fn payload_text(v: Option<&Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(p @ Value::Object(_)) => Ok(Some(p.to_string())),
        Some(_) => Err(bad("payload must be a JSON object")),
    }
}

fn match_value(v: &Value) -> Result<MatchValue, ApiError> {
    match v {
        Value::String(s) => Ok(MatchValue::Str(s.clone())),
        Value::Bool(b) => Ok(MatchValue::Bool(*b)),
        Value::Number(n) => n.as_i64().map(MatchValue::Int).ok_or_else(|| {
            bad(format!(
                "match value {n} must be an integer, string or bool"
            ))
        }),
        other => Err(bad(format!(
            "match value {other} must be an integer, string or bool"
        ))),
    }
}

fn bound(r: &Map<String, Value>, k: &str) -> Result<Option<f64>, ApiError> {
    match r.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| bad(format!("range bound {k} must be a number"))),
    }
}

fn condition(v: &Value) -> Result<Condition, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("filter condition must be an object"))?;
    if let Some(ids) = obj.get("has_id") {
        let ids = ids
            .as_array()
            .ok_or_else(|| bad("has_id must be an array"))?
            .iter()
            .map(point_id)
            .collect::<Result<_, _>>()?;
        return Ok(Condition::HasId(ids));
    }
    if obj.contains_key("must") || obj.contains_key("should") || obj.contains_key("must_not") {
        return Ok(Condition::Nested(Box::new(filter(v)?)));
    }
    let key = obj
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("unsupported filter condition {v}")))?
        .to_string();
    if let Some(m) = obj.get("match").filter(|m| !m.is_null()) {
        let m = m
            .as_object()
            .ok_or_else(|| bad("match must be an object"))?;
        if let Some(value) = m.get("value") {
            return Ok(Condition::Match {
                key,
                value: match_value(value)?,
            });
        }
        if let Some(any) = m.get("any") {
            let any = any
                .as_array()
                .ok_or_else(|| bad("match.any must be an array"))?
                .iter()
                .map(match_value)
                .collect::<Result<_, _>>()?;
            return Ok(Condition::MatchAny { key, any });
        }
        return Err(bad(format!(
            "unsupported match on {key:?} (supported: value, any)"
        )));
    }
    if let Some(r) = obj.get("range").filter(|r| !r.is_null()) {
        let r = r
            .as_object()
            .ok_or_else(|| bad("range must be an object"))?;
        return Ok(Condition::Range {
            key,
            range: Range {
                gt: bound(r, "gt")?,
                gte: bound(r, "gte")?,
                lt: bound(r, "lt")?,
                lte: bound(r, "lte")?,
            },
        });
    }
    Err(bad(format!(
        "unsupported condition on {key:?} (supported: match.value, match.any, range, has_id, nested must/should/must_not)"
    )))
}

fn conditions(v: Option<&Value>) -> Result<Vec<Condition>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(condition).collect(),
        Some(one @ Value::Object(_)) => Ok(vec![condition(one)?]),
        Some(_) => Err(bad(
            "filter clauses must be a condition or an array of them",
        )),
    }
}

fn filter(v: &Value) -> Result<Filter, ApiError> {
    let obj = v
        .as_object()
        .ok_or_else(|| bad("filter must be an object"))?;
    if obj.get("min_should").is_some_and(|m| !m.is_null()) {
        return Err(bad("min_should is not supported"));
    }
    Ok(Filter {
        must: conditions(obj.get("must"))?,
        should: conditions(obj.get("should"))?,
        must_not: conditions(obj.get("must_not"))?,
    })
}

fn opt_filter(v: &Option<Value>) -> Result<Option<Filter>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(f) => filter(f).map(Some),
    }
}

/// `with_payload`: bool, or a list of keys to include, or `{"include": [..]}` / `{"exclude": [..]}`.
#[derive(Debug, Clone)]
enum PayloadSel {
    None,
    All,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

fn payload_sel(v: &Option<Value>, default: bool) -> Result<PayloadSel, ApiError> {
    let keys = |v: &Value| -> Result<Vec<String>, ApiError> {
        v.as_array()
            .ok_or_else(|| bad("with_payload keys must be an array of strings"))?
            .iter()
            .map(|k| {
                k.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("with_payload keys must be strings"))
            })
            .collect()
    };
    Ok(match v {
        None | Some(Value::Null) => {
            if default {
                PayloadSel::All
            } else {
                PayloadSel::None
            }
        }
        Some(Value::Bool(true)) => PayloadSel::All,
        Some(Value::Bool(false)) => PayloadSel::None,
        Some(a @ Value::Array(_)) => PayloadSel::Include(keys(a)?),
        Some(Value::Object(o)) if o.contains_key("include") => {
            PayloadSel::Include(keys(&o["include"])?)
        }
        Some(Value::Object(o)) if o.contains_key("exclude") => {
            PayloadSel::Exclude(keys(&o["exclude"])?)
        }
        Some(_) => return Err(bad("with_payload must be a bool or a list of keys")),
    })
}

fn with_vector(v: &Option<Value>) -> Result<bool, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Array(a)) => Ok(!a.is_empty()),
        Some(_) => Err(bad("with_vector must be a bool")),
    }
}

fn render_payload(text: &Option<String>, sel: &PayloadSel) -> Value {
    let Some(t) = text else {
        return match sel {
            PayloadSel::None => Value::Null,
            _ => json!({}),
        };
    };
    let Ok(Value::Object(mut map)) = serde_json::from_str::<Value>(t) else {
        return Value::Null;
    };
    match sel {
        PayloadSel::None => Value::Null,
        PayloadSel::All => Value::Object(map),
        PayloadSel::Include(keys) => {
            map.retain(|k, _| keys.contains(k));
            Value::Object(map)
        }
        PayloadSel::Exclude(keys) => {
            map.retain(|k, _| !keys.contains(k));
            Value::Object(map)
        }
    }
}

/// One hit as Qdrant answers it; serialized straight into the response (no JSON tree).
#[derive(Serialize)]
struct Scored {
    id: Value,
    version: u64,
    score: f32,
    payload: Value,
    vector: Option<Vec<f32>>,
    shard_key: (),
    order_value: (),
}

/// The hits of one query in the Query API's shape.
#[derive(Serialize)]
struct QueryPoints {
    points: Vec<Scored>,
}

fn scored(p: ScoredPoint, sel: &PayloadSel) -> Scored {
    Scored {
        id: id_json(p.id),
        version: 0,
        score: p.score,
        payload: render_payload(&p.payload_json, sel),
        vector: p.vector,
        shard_key: (),
        order_value: (),
    }
}

fn record_json(p: &PointRecord, sel: &PayloadSel) -> Value {
    json!({
        "id": id_json(p.id),
        "payload": render_payload(&p.payload_json, sel),
        "vector": p.vector,
        "shard_key": null,
        "order_value": null,
    })
}

fn distance_name(d: Distance) -> &'static str {
    match d {
        Distance::Cosine => "Cosine",
        Distance::Dot => "Dot",
        Distance::Euclid => "Euclid",
    }
}

fn collection_json(info: &CollectionInfo) -> Value {
    let c = &info.config;
    json!({
        "status": "green",
        "optimizer_status": "ok",
        "indexed_vectors_count": info.points,
        "points_count": info.points,
        "segments_count": c.shards,
        "config": {
            "params": {
                "vectors": {"size": c.dim, "distance": distance_name(c.distance)},
                "shard_number": c.shards,
                "replication_factor": c.replication,
                "write_consistency_factor": match c.write_consistency {
                    0 => c.replication / 2 + 1,
                    w => w,
                },
                "on_disk_payload": false,
            },
            "hnsw_config": {
                "m": c.hnsw.m,
                "ef_construct": c.hnsw.ef_construct,
                "full_scan_threshold": 10000,
                "max_indexing_threads": 0,
                "on_disk": false,
            },
            "optimizer_config": {
                "deleted_threshold": 0.2,
                "vacuum_min_vector_number": 1000,
                "default_segment_number": 0,
                "flush_interval_sec": 5,
            },
            "wal_config": {"wal_capacity_mb": 64, "wal_segments_ahead": 0},
        },
        "payload_schema": {},
    })
}

// ---------------------------------------------------------------------------------------------
// Collections

#[utoipa::path(
    get,
    path = "/collections",
    tag = "qdrant",
    responses((status = 200, description = "Collections", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn list_collections(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let path = manager(&state)?;
    let names = state
        .node
        .ask(&path, ListCollections, state.request_timeout)
        .await?;
    let list: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
    Ok(ok(json!({ "collections": list }), t))
}

#[utoipa::path(
    get,
    path = "/collections/{name}",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name")),
    responses((status = 200, description = "Collection info", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn get_collection(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let info = ask(
        &state,
        GetCollection {
            name: name.into_inner(),
        },
        state.request_timeout,
    )
    .await?;
    Ok(ok(collection_json(&info), t))
}

#[utoipa::path(
    get,
    path = "/collections/{name}/exists",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name")),
    responses((status = 200, description = "Whether it exists", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn exists(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let name = name.into_inner();
    // Through the holder lookup, so a collection on another node exists too.
    let found = collection_route::ask(
        &state,
        &name,
        GetCollection { name: name.clone() },
        state.request_timeout,
    )
    .await?;
    let exists = match found {
        Ok(_) => true,
        Err(VectorError::NotFound(_)) => false,
        Err(e) => return Err(vector_error(e)),
    };
    Ok(ok(json!({ "exists": exists }), t))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 1}))]
struct CreateBody {
    vectors: Option<Value>,
    shard_number: Option<u32>,
    replication_factor: Option<u32>,
    write_consistency_factor: Option<u32>,
    hnsw_config: Option<Value>,
    abi_fsync: Option<Value>,
    abi_embed_with: Option<String>,
}

fn u32_field(obj: &Map<String, Value>, k: &str) -> Result<Option<u32>, ApiError> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(format!("{k} must be a non-negative integer"))),
    }
}

fn create_config(name: String, b: CreateBody) -> Result<CollectionConfig, ApiError> {
    let vectors = b
        .vectors
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(|| bad("`vectors` with `size` and `distance` is required"))?;
    if !vectors.contains_key("size") {
        return Err(bad(
            "named vectors are not supported: give `vectors: {size, distance}`",
        ));
    }
    let dim = u32_field(vectors, "size")?.ok_or_else(|| bad("vectors.size is required"))?;
    let distance = match vectors.get("distance").and_then(Value::as_str) {
        Some("Cosine") => Distance::Cosine,
        Some("Dot") => Distance::Dot,
        Some("Euclid") => Distance::Euclid,
        Some(other) => {
            return Err(bad(format!(
                "distance {other:?} is not supported (Cosine, Dot, Euclid)"
            )));
        }
        None => return Err(bad("vectors.distance is required")),
    };
    let mut hnsw = HnswParams::default();
    for h in [vectors.get("hnsw_config"), b.hnsw_config.as_ref()]
        .into_iter()
        .flatten()
        .filter(|h| !h.is_null())
    {
        let h = h
            .as_object()
            .ok_or_else(|| bad("hnsw_config must be an object"))?;
        if let Some(m) = u32_field(h, "m")? {
            hnsw.m = u16::try_from(m).map_err(|_| bad("hnsw_config.m is too large"))?;
        }
        if let Some(ef) = u32_field(h, "ef_construct")? {
            hnsw.ef_construct = ef;
        }
        if let Some(ef) = u32_field(h, "abi_ef")? {
            hnsw.ef = ef;
        }
    }
    let fsync = match &b.abi_fsync {
        None | Some(Value::Null) => FsyncPolicy::Always,
        Some(Value::String(s)) if s == "always" => FsyncPolicy::Always,
        Some(Value::String(s)) if s == "never" => FsyncPolicy::Never,
        Some(Value::Object(o)) => match o.get("group_commit_ms").and_then(Value::as_u64) {
            Some(ms) if ms <= 10_000 => FsyncPolicy::GroupCommitMs(ms as u32),
            _ => return Err(bad("abi_fsync.group_commit_ms must be 0..=10000")),
        },
        Some(_) => {
            return Err(bad(
                "abi_fsync must be \"always\", \"never\" or {\"group_commit_ms\": n}",
            ));
        }
    };
    Ok(CollectionConfig {
        name,
        dim,
        distance,
        shards: b.shard_number.unwrap_or(1),
        replication: b.replication_factor.unwrap_or(1),
        write_consistency: b.write_consistency_factor.unwrap_or(0),
        hnsw,
        fsync,
        embed_with: b.abi_embed_with,
    })
}

#[utoipa::path(
    put,
    path = "/collections/{name}",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name")),
    request_body(content = CreateBody, content_type = "application/json"),
    responses((status = 200, description = "Created", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn create_collection(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    body: web::Json<CreateBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let config = create_config(name.into_inner(), body.into_inner())?;
    ask(&state, CreateCollection { config }, WRITE_TIMEOUT).await?;
    Ok(ok(json!(true), t))
}

#[utoipa::path(
    delete,
    path = "/collections/{name}",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name")),
    responses((status = 200, description = "Deleted", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn delete_collection(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let existed = ask(
        &state,
        DeleteCollection {
            name: name.into_inner(),
        },
        WRITE_TIMEOUT,
    )
    .await?;
    Ok(ok(json!(existed), t))
}

// ---------------------------------------------------------------------------------------------
// Points

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"points": [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4], "payload": {"tag": "a"}}]}))]
struct UpsertBody {
    points: Option<Vec<PointBody>>,
    batch: Option<Value>,
}

/// One point of an upsert in the list form: typed, so that its vector is read straight
/// into floats ([`text_vectors::VectorArg`]) rather than through a JSON value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
struct PointBody {
    /// An unsigned integer or a UUID.
    #[schema(value_type = Value)]
    id: Value,
    /// Numbers, or a text to embed (collections with `embed_with`).
    #[schema(value_type = Option<Value>)]
    vector: Option<text_vectors::VectorArg>,
    payload: Option<Value>,
}

/// Points with their vectors still to resolve (texts are embedded by the caller).
fn upsert_points(b: UpsertBody) -> Result<Vec<(PointInput, VectorOrText)>, ApiError> {
    match (b.points, b.batch) {
        (Some(points), None) => {
            too_many("points", points.len())?;
            points
                .into_iter()
                .map(|p| {
                    let v = text_vectors::parse_arg(
                        p.vector.ok_or_else(|| bad("point without vector"))?,
                    )?;
                    Ok((
                        PointInput {
                            id: point_id(&p.id)?,
                            vector: Vec::new(),
                            payload_json: payload_text(p.payload.as_ref())?,
                        },
                        v,
                    ))
                })
                .collect()
        }
        (None, Some(batch)) => {
            let o = batch
                .as_object()
                .ok_or_else(|| bad("batch must be an object"))?;
            let ids = o
                .get("ids")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("batch.ids must be an array"))?;
            too_many("points", ids.len())?;
            let vectors = o
                .get("vectors")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("batch.vectors must be an array of vectors"))?;
            let payloads = match o.get("payloads") {
                None | Some(Value::Null) => None,
                Some(Value::Array(p)) => Some(p),
                Some(_) => return Err(bad("batch.payloads must be an array")),
            };
            if vectors.len() != ids.len() || payloads.is_some_and(|p| p.len() != ids.len()) {
                return Err(bad(
                    "batch.ids, vectors and payloads must have the same length",
                ));
            }
            ids.iter()
                .enumerate()
                .map(|(i, id)| {
                    Ok((
                        PointInput {
                            id: point_id(id)?,
                            vector: Vec::new(),
                            payload_json: payload_text(payloads.map(|p| &p[i]))?,
                        },
                        text_vectors::parse(&vectors[i])?,
                    ))
                })
                .collect()
        }
        _ => Err(bad("give exactly one of `points` or `batch`")),
    }
}

#[utoipa::path(
    put,
    path = "/collections/{name}/points",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name")),
    request_body(content = UpsertBody, content_type = "application/json"),
    responses((status = 200, description = "Acknowledged after the WAL write", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn upsert(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    body: web::Json<UpsertBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let name = name.into_inner();
    let (mut points, pending): (Vec<PointInput>, Vec<VectorOrText>) =
        upsert_points(body.into_inner())?.into_iter().unzip();
    for (p, v) in points
        .iter_mut()
        .zip(text_vectors::resolve(&state, &name, pending).await?)
    {
        p.vector = v;
    }
    // Always acknowledged after the WAL fsync (policy permitting), i.e. `wait=true` semantics.
    let ack = ask(
        &state,
        Upsert {
            collection: name,
            points,
        },
        WRITE_TIMEOUT,
    )
    .await?;
    Ok(ok(
        json!({"operation_id": ack.seq, "status": "completed"}),
        t,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"points": [1]}))]
struct DeleteBody {
    points: Option<Vec<Value>>,
    filter: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points/delete",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name")),
    request_body(content = DeleteBody, content_type = "application/json"),
    responses((status = 200, description = "Deleted", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn delete_points(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    body: web::Json<DeleteBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let collection = name.into_inner();
    let body = body.into_inner();
    let ids: Vec<PointId> = match (body.points, &body.filter) {
        (Some(points), None) => {
            too_many("ids", points.len())?;
            points.iter().map(point_id).collect::<Result<_, _>>()?
        }
        (None, Some(f)) => {
            // Delete by filter: collect the matching ids page by page, then delete them.
            let filter = Some(filter(f)?);
            let mut ids = Vec::new();
            let mut offset = None;
            loop {
                let page = ask(
                    &state,
                    Scroll {
                        collection: collection.clone(),
                        offset,
                        limit: 1000,
                        filter: filter.clone(),
                        with_payload: false,
                        with_vector: false,
                        consistency: Default::default(),
                    },
                    state.request_timeout,
                )
                .await?;
                ids.extend(page.points.iter().map(|p| p.id));
                match page.next {
                    Some(n) => offset = Some(n),
                    None => break,
                }
            }
            ids
        }
        _ => return Err(bad("give exactly one of `points` or `filter`")),
    };
    let ack = ask(&state, DeletePoints { collection, ids }, WRITE_TIMEOUT).await?;
    Ok(ok(
        json!({"operation_id": ack.seq, "status": "completed"}),
        t,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"ids": [1], "with_payload": true, "with_vector": true}))]
struct RetrieveBody {
    ids: Vec<Value>,
    with_payload: Option<Value>,
    with_vector: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), ReadQuery),
    request_body(content = RetrieveBody, content_type = "application/json"),
    responses((status = 200, description = "Points", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn retrieve(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    q: web::Query<ReadQuery>,
    body: web::Json<RetrieveBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let b = body.into_inner();
    too_many("ids", b.ids.len())?;
    let ids = b.ids.iter().map(point_id).collect::<Result<_, _>>()?;
    let sel = payload_sel(&b.with_payload, true)?;
    let got = ask(
        &state,
        GetPoints {
            collection: name.into_inner(),
            ids,
            with_payload: !matches!(sel, PayloadSel::None),
            with_vector: with_vector(&b.with_vector)?,
            consistency: read_consistency(&q.consistency)?,
        },
        state.request_timeout,
    )
    .await?;
    let list: Vec<Value> = got.iter().map(|p| record_json(p, &sel)).collect();
    Ok(ok(Value::Array(list), t))
}

#[utoipa::path(
    get,
    path = "/collections/{name}/points/{id}",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), ("id" = String, Path, description = "Point id: unsigned integer or UUID"), ReadQuery),
    responses((status = 200, description = "The point", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn get_point(
    state: web::Data<GatewayState>,
    path: web::Path<(String, String)>,
    q: web::Query<ReadQuery>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let (collection, raw) = path.into_inner();
    let id = match raw.parse::<u64>() {
        Ok(n) => PointId::Num(n),
        Err(_) => PointId::Uuid(
            parse_uuid(&raw).ok_or_else(|| bad(format!("point id {raw:?} is not valid")))?,
        ),
    };
    let got = ask(
        &state,
        GetPoints {
            collection,
            ids: vec![id],
            with_payload: true,
            with_vector: true,
            consistency: read_consistency(&q.consistency)?,
        },
        state.request_timeout,
    )
    .await?;
    match got.first() {
        Some(p) => Ok(ok(record_json(p, &PayloadSel::All), t)),
        None => Err(ApiError::not_found(format!("point {id} not found"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Search, query, scroll, count

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"vector": [0.1, 0.2, 0.3, 0.4], "limit": 3, "with_payload": true}))]
struct SearchBody {
    #[schema(value_type = Option<Value>)]
    vector: Option<text_vectors::VectorArg>,
    query: Option<Value>,
    filter: Option<Value>,
    params: Option<Value>,
    limit: Option<u64>,
    top: Option<u64>,
    offset: Option<u64>,
    with_payload: Option<Value>,
    with_vector: Option<Value>,
    score_threshold: Option<f32>,
    prefetch: Option<Value>,
    using: Option<Value>,
    timeout: Option<u64>,
}

/// A parsed query plus how to render its payloads.
struct Parsed {
    /// The query vector, or text still to embed into `query.vector`.
    pending: VectorOrText,
    query: SearchQuery,
    sel: PayloadSel,
    timeout_ms: u32,
}

fn parse_search(
    b: SearchBody,
    is_query: bool,
    default_timeout: Duration,
) -> Result<Parsed, ApiError> {
    if b.prefetch.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(bad("prefetch is not supported"));
    }
    if b.using.as_ref().is_some_and(|u| !u.is_null()) {
        return Err(bad("named vectors (`using`) are not supported"));
    }
    let pending = if is_query {
        let raw = match &b.query {
            Some(Value::Object(o)) if o.contains_key("nearest") => &o["nearest"],
            Some(v @ (Value::Array(_) | Value::String(_))) => v,
            Some(v @ Value::Object(o)) if o.contains_key("text") => v,
            Some(other) => {
                return Err(bad(format!(
                    "unsupported query {other} (a vector or {{\"nearest\": vector}})"
                )));
            }
            None => return Err(bad("query without `query` vector is not supported")),
        };
        text_vectors::parse(raw)?
    } else {
        text_vectors::parse_arg(b.vector.ok_or_else(|| bad("`vector` is required"))?)?
    };
    let limit = b.limit.or(b.top).unwrap_or(10);
    if limit > MAX_LIMIT {
        return Err(bad(format!("limit {limit} exceeds {MAX_LIMIT}")));
    }
    let offset = b.offset.unwrap_or(0);
    if offset > MAX_LIMIT {
        return Err(bad(format!("offset {offset} exceeds {MAX_LIMIT}")));
    }
    let mut ef = None;
    if let Some(p) = b.params.as_ref().filter(|p| !p.is_null()) {
        let p = p
            .as_object()
            .ok_or_else(|| bad("params must be an object"))?;
        if p.get("exact").and_then(Value::as_bool) == Some(true) {
            // Exact search: a width as large as the limit allows makes the walk exhaustive
            // enough for small collections; larger ones stay approximate.
            ef = Some(MAX_LIMIT as u32);
        }
        if let Some(h) = p.get("hnsw_ef").filter(|h| !h.is_null()) {
            let h = h
                .as_u64()
                .filter(|h| (1..=MAX_LIMIT).contains(h))
                .ok_or_else(|| bad(format!("params.hnsw_ef must be in 1..={MAX_LIMIT}")))?;
            ef = Some(h as u32);
        }
    }
    // `search` returns no payload by default, `query` returns it (as qdrant-client expects).
    let sel = payload_sel(&b.with_payload, false)?;
    let timeout_ms = b
        .timeout
        .map(|s| s.saturating_mul(1000))
        .unwrap_or(default_timeout.as_millis() as u64)
        .min(u32::MAX as u64) as u32;
    Ok(Parsed {
        pending,
        query: SearchQuery {
            vector: Vec::new(),
            limit: limit as u32,
            offset: offset as u32,
            ef,
            filter: opt_filter(&b.filter)?,
            with_payload: !matches!(sel, PayloadSel::None),
            with_vector: with_vector(&b.with_vector)?,
            score_threshold: b.score_threshold,
        },
        sel,
        timeout_ms,
    })
}

async fn run_search(
    state: &GatewayState,
    collection: String,
    parsed: Vec<Parsed>,
    q: &PartialQuery,
) -> Result<Vec<Vec<Scored>>, ApiError> {
    too_many("searches", parsed.len())?;
    let allow_partial = q.abi_allow_partial == Some(true);
    let consistency = read_consistency(&q.consistency)?;
    let (mut parsed, pending): (Vec<Parsed>, Vec<VectorOrText>) = parsed
        .into_iter()
        .map(|mut p| {
            let v = std::mem::replace(&mut p.pending, VectorOrText::Vector(Vec::new()));
            (p, v)
        })
        .unzip();
    for (p, v) in parsed
        .iter_mut()
        .zip(text_vectors::resolve(state, &collection, pending).await?)
    {
        p.query.vector = v;
    }
    let timeout_ms = parsed.iter().map(|p| p.timeout_ms).max().unwrap_or(1000);
    let sels: Vec<PayloadSel> = parsed.iter().map(|p| p.sel.clone()).collect();
    let res = ask(
        state,
        Search {
            collection,
            queries: parsed.into_iter().map(|p| p.query).collect(),
            allow_partial,
            timeout_ms,
            consistency,
        },
        Duration::from_millis(timeout_ms as u64) + Duration::from_secs(1),
    )
    .await?;
    Ok(res
        .hits
        .into_iter()
        .zip(&sels)
        .map(|(hits, sel)| hits.into_iter().map(|h| scored(h, sel)).collect())
        .collect())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct PartialQuery {
    /// Non-standard: accept results from the shards that answered in time.
    abi_allow_partial: Option<bool>,
    /// Replicated collections: `majority`, `quorum`, `all` or a number above 1 read
    /// through each shard's leader (sees every acknowledged write); absent or `1` reads
    /// any live replica.
    consistency: Option<String>,
}

/// The read-consistency query parameter of point reads.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReadQuery {
    /// Replicated collections: `majority`, `quorum`, `all` or a number above 1 read
    /// through each shard's leader (sees every acknowledged write); absent or `1` reads
    /// any live replica.
    consistency: Option<String>,
}

/// Qdrant's `consistency` values: more than one replica agreeing maps to a read through
/// the leader, which a quorum confirmed.
fn read_consistency(v: &Option<String>) -> Result<ReadConsistency, ApiError> {
    match v.as_deref() {
        None | Some("1") => Ok(ReadConsistency::Any),
        Some("majority" | "quorum" | "all") => Ok(ReadConsistency::Leader),
        Some(n) => match n.parse::<u32>() {
            Ok(k) if k >= 2 => Ok(ReadConsistency::Leader),
            _ => Err(bad(format!(
                "consistency must be majority, quorum, all or a positive number, not {n:?}"
            ))),
        },
    }
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points/search",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), PartialQuery),
    request_body(content = SearchBody, content_type = "application/json"),
    responses((status = 200, description = "Scored points", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn search(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    q: web::Query<PartialQuery>,
    body: web::Json<SearchBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let parsed = parse_search(body.into_inner(), false, state.request_timeout)?;
    let mut out = run_search(&state, name.into_inner(), vec![parsed], &q).await?;
    Ok(ok_hits(&out.pop().unwrap_or_default(), t))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"searches": [{"vector": [0.1, 0.2, 0.3, 0.4], "limit": 3}]}))]
struct BatchBody {
    searches: Vec<SearchBody>,
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points/search/batch",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), PartialQuery),
    request_body(content = BatchBody, content_type = "application/json"),
    responses((status = 200, description = "Scored points per search", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn search_batch(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    q: web::Query<PartialQuery>,
    body: web::Json<BatchBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let parsed = body
        .into_inner()
        .searches
        .into_iter()
        .map(|b| parse_search(b, false, state.request_timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let out = run_search(&state, name.into_inner(), parsed, &q).await?;
    Ok(ok(out, t))
}

fn query_defaults(mut b: SearchBody) -> SearchBody {
    // The Query API returns payloads unless told otherwise... in qdrant-client it always sends
    // with_payload explicitly; the server default is false, kept here.
    if b.with_payload.is_none() {
        b.with_payload = Some(Value::Bool(false));
    }
    b
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points/query",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), PartialQuery),
    request_body(content = SearchBody, content_type = "application/json"),
    responses((status = 200, description = "Scored points", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn query(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    q: web::Query<PartialQuery>,
    body: web::Json<SearchBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let parsed = parse_search(
        query_defaults(body.into_inner()),
        true,
        state.request_timeout,
    )?;
    let mut out = run_search(&state, name.into_inner(), vec![parsed], &q).await?;
    let points = out.pop().unwrap_or_default();
    Ok(ok(QueryPoints { points }, t))
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points/query/batch",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), PartialQuery),
    request_body(content = BatchBody, content_type = "application/json"),
    responses((status = 200, description = "Scored points per query", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn query_batch(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    q: web::Query<PartialQuery>,
    body: web::Json<BatchBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let parsed = body
        .into_inner()
        .searches
        .into_iter()
        .map(|b| parse_search(query_defaults(b), true, state.request_timeout))
        .collect::<Result<Vec<_>, _>>()?;
    let out = run_search(&state, name.into_inner(), parsed, &q).await?;
    let list: Vec<QueryPoints> = out
        .into_iter()
        .map(|points| QueryPoints { points })
        .collect();
    Ok(ok(list, t))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"limit": 10, "with_payload": true}))]
struct ScrollBody {
    offset: Option<Value>,
    limit: Option<u64>,
    filter: Option<Value>,
    with_payload: Option<Value>,
    with_vector: Option<Value>,
    order_by: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points/scroll",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), ReadQuery),
    request_body(content = ScrollBody, content_type = "application/json"),
    responses((status = 200, description = "A page of points", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn scroll(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    q: web::Query<ReadQuery>,
    body: web::Json<ScrollBody>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let b = body.into_inner();
    if b.order_by.as_ref().is_some_and(|o| !o.is_null()) {
        return Err(bad("order_by is not supported"));
    }
    let limit = b.limit.unwrap_or(10);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(bad(format!("limit must be in 1..={MAX_LIMIT}")));
    }
    let offset = match &b.offset {
        None | Some(Value::Null) => None,
        Some(v) => Some(point_id(v)?),
    };
    let sel = payload_sel(&b.with_payload, true)?;
    let page = ask(
        &state,
        Scroll {
            collection: name.into_inner(),
            offset,
            limit: limit as u32,
            filter: opt_filter(&b.filter)?,
            with_payload: !matches!(sel, PayloadSel::None),
            with_vector: with_vector(&b.with_vector)?,
            consistency: read_consistency(&q.consistency)?,
        },
        state.request_timeout,
    )
    .await?;
    let points: Vec<Value> = page.points.iter().map(|p| record_json(p, &sel)).collect();
    Ok(ok(
        json!({ "points": points, "next_page_offset": page.next.map(id_json) }),
        t,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"filter": {"must": [{"key": "tag", "match": {"value": "a"}}]}}))]
struct CountBody {
    filter: Option<Value>,
}

#[utoipa::path(
    post,
    path = "/collections/{name}/points/count",
    tag = "qdrant",
    params(("name" = String, Path, description = "Collection name"), ReadQuery),
    request_body(content = CountBody, content_type = "application/json"),
    responses((status = 200, description = "Number of points", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn count(
    state: web::Data<GatewayState>,
    name: web::Path<String>,
    q: web::Query<ReadQuery>,
    body: Option<web::Json<CountBody>>,
) -> Result<HttpResponse, ApiError> {
    let t = Instant::now();
    let filter = match body {
        Some(b) => opt_filter(&b.into_inner().filter)?,
        None => None,
    };
    let n = ask(
        &state,
        Count {
            collection: name.into_inner(),
            filter,
            consistency: read_consistency(&q.consistency)?,
        },
        state.request_timeout,
    )
    .await?;
    Ok(ok(json!({ "count": n }), t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_written_as_the_derived_serializer_writes_them() {
        let hits = [
            Scored {
                id: id_json(PointId::Num(7)),
                version: 0,
                score: 0.993_999_1,
                payload: Value::Null,
                vector: None,
                shard_key: (),
                order_value: (),
            },
            Scored {
                id: id_json(PointId::Uuid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef)),
                version: 3,
                score: -1.5e-7,
                payload: json!({"city": "Zürich \"quoted\"\n", "n": [1, 2.5, null]}),
                vector: Some(vec![0.1, -2.0, 1e30]),
                shard_key: (),
                order_value: (),
            },
            Scored {
                id: id_json(PointId::Num(u64::MAX)),
                version: 1,
                score: f32::NAN,
                payload: json!({}),
                vector: Some(Vec::new()),
                shard_key: (),
                order_value: (),
            },
        ];
        for n in 0..=hits.len() {
            let derived = serde_json::to_vec(&Answer {
                result: &hits[..n],
                status: "ok",
                time: 0.000_061_5,
            })
            .expect("serializes");
            assert_eq!(
                String::from_utf8_lossy(&hits_body(&hits[..n], 0.000_061_5)),
                String::from_utf8_lossy(&derived),
                "{n} hits"
            );
        }
    }

    #[test]
    fn filters_parse_like_qdrant() {
        let f = filter(&json!({
            "must": [{"key": "city", "match": {"value": "Paris"}}],
            "should": {"key": "n", "range": {"gte": 1, "lt": 3.5}},
            "must_not": [{"has_id": [1, "01234567-89ab-cdef-0123-456789abcdef"]},
                         {"key": "tag", "match": {"any": ["a", 2]}}]
        }))
        .expect("filter");
        assert_eq!(f.must.len(), 1);
        assert!(matches!(&f.should[0], Condition::Range { range, .. } if range.lt == Some(3.5)));
        assert!(
            matches!(&f.must_not[0], Condition::HasId(ids) if ids[1] == PointId::Uuid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef))
        );
        assert!(filter(&json!({"must": [{"key": "g", "geo_radius": {}}]})).is_err());
        assert!(filter(&json!({"must": [{"key": "x", "match": {"value": 1.5}}]})).is_err());
    }

    #[test]
    fn create_body_maps_to_config() {
        let b: CreateBody = serde_json::from_value(json!({
            "vectors": {"size": 4, "distance": "Dot"},
            "shard_number": 3,
            "hnsw_config": {"m": 8, "ef_construct": 50},
            "abi_fsync": {"group_commit_ms": 5}
        }))
        .expect("body");
        let c = create_config("c".into(), b).expect("config");
        assert_eq!(
            (c.dim, c.distance, c.shards, c.hnsw.m, c.hnsw.ef_construct),
            (4, Distance::Dot, 3, 8, 50)
        );
        assert_eq!(c.fsync, FsyncPolicy::GroupCommitMs(5));
        let b: CreateBody =
            serde_json::from_value(json!({"vectors": {"size": 4, "distance": "Manhattan"}}))
                .expect("body");
        assert!(create_config("c".into(), b).is_err());
    }

    #[test]
    fn point_ids_round_trip() {
        let id = point_id(&json!("01234567-89AB-cdef-0123-456789abcdef")).expect("uuid");
        assert_eq!(id_json(id), json!("01234567-89ab-cdef-0123-456789abcdef"));
        assert_eq!(point_id(&json!(7)).expect("num"), PointId::Num(7));
        assert!(point_id(&json!(-1)).is_err());
        assert!(point_id(&json!("not-a-uuid")).is_err());
    }
}
