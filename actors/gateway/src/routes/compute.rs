//! Compute API: `GET /v1/devices`, `POST /v1/compute/{op}` (JSON) and
//! `POST /v1/compute/{op}/binary` (little-endian f32 bodies, for benchmarks).
//!
//! Handlers only parse and validate shapes, then forward to the GPU device manager actor at
//! `gpu`, which runs the op on the requested backend (or falls back to `cpu` and says so).

use std::time::Duration;

use abi_protocol::gpu::{Compute, ComputeOp, ComputeResult, GpuError, ListDevices};
use abi_protocol::paths;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpResponse, Responder};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::extractor_error;
use crate::{ApiError, GatewayState};

/// Largest JSON or binary body accepted by the compute routes.
const MAX_BODY: usize = 256 << 20;
/// Minimum deadline for a compute request (large matmuls on software GPUs take seconds).
const COMPUTE_TIMEOUT: Duration = Duration::from_secs(120);

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/devices", web::get().to(devices))
        .service(
            web::resource("/v1/compute/{op}")
                .app_data(
                    web::JsonConfig::default()
                        .limit(MAX_BODY)
                        .error_handler(|e, _| extractor_error(e)),
                )
                .route(web::post().to(compute_json)),
        )
        .service(
            web::resource("/v1/compute/{op}/binary")
                .app_data(web::PayloadConfig::default().limit(MAX_BODY))
                .route(web::post().to(compute_binary)),
        );
}

fn gpu_error(e: GpuError) -> ApiError {
    let (status, code) = match &e {
        GpuError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
        GpuError::NoDevice(_) => (StatusCode::SERVICE_UNAVAILABLE, "no_device"),
        GpuError::Backend { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "backend_error"),
        GpuError::InsufficientMemory { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "insufficient_memory")
        }
        GpuError::UnknownLease(_) => (StatusCode::NOT_FOUND, "unknown_lease"),
    };
    ApiError::new(status, code, e.to_string())
}

#[utoipa::path(
    get,
    path = "/v1/devices",
    tag = "compute",
    responses((status = 200, description = "Devices of every loaded backend", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn devices(state: web::Data<GatewayState>) -> Result<HttpResponse, ApiError> {
    let path = state
        .node
        .path(paths::GPU)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let list = state
        .node
        .ask(&path, ListDevices, state.request_timeout)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "devices": list })))
}

async fn run(state: &GatewayState, req: Compute) -> Result<ComputeResult, ApiError> {
    let path = state
        .node
        .path(paths::GPU)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let timeout = state.request_timeout.max(COMPUTE_TIMEOUT);
    state
        .node
        .ask(&path, req, timeout)
        .await?
        .map_err(gpu_error)
}

/// A JSON number array, or an array of equal-length number arrays (a matrix).
fn matrix(v: &Value, name: &str) -> Result<(usize, usize, Vec<f32>), ApiError> {
    let Some(arr) = v.as_array() else {
        return Err(ApiError::bad_request(format!("`{name}` must be an array")));
    };
    if arr.is_empty() {
        return Err(ApiError::bad_request(format!("`{name}` is empty")));
    }
    if arr[0].is_array() {
        let mut cols = None;
        let mut out = Vec::new();
        for (i, row) in arr.iter().enumerate() {
            let r = vector(row, &format!("{name}[{i}]"))?;
            if *cols.get_or_insert(r.len()) != r.len() {
                return Err(ApiError::bad_request(format!(
                    "`{name}` rows differ in length (row {i})"
                )));
            }
            out.extend(r);
        }
        Ok((arr.len(), cols.unwrap_or(0), out))
    } else {
        let r = vector(v, name)?;
        Ok((1, r.len(), r))
    }
}

fn vector(v: &Value, name: &str) -> Result<Vec<f32>, ApiError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ApiError::bad_request(format!("`{name}` must be an array of numbers")))?;
    if arr.is_empty() {
        return Err(ApiError::bad_request(format!("`{name}` is empty")));
    }
    arr.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .map(|f| f as f32)
                .filter(|f| f.is_finite())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("`{name}[{i}]` is not a finite number"))
                })
        })
        .collect()
}

fn field<'a>(body: &'a Value, name: &str) -> Result<&'a Value, ApiError> {
    body.get(name)
        .ok_or_else(|| ApiError::bad_request(format!("missing field `{name}`")))
}

fn u32_of(v: usize, what: &str) -> Result<u32, ApiError> {
    u32::try_from(v).map_err(|_| ApiError::bad_request(format!("{what} too large")))
}

fn rows(values: &[f32], cols: usize) -> Value {
    Value::Array(values.chunks(cols.max(1)).map(|r| json!(r)).collect())
}

#[derive(Deserialize)]
struct Target {
    backend: Option<String>,
    device: Option<u32>,
}

#[utoipa::path(
    post,
    path = "/v1/compute/{op}",
    tag = "compute",
    params(("op" = String, Path, description = "vector_add, dot, matmul, reduce_sum, softmax or distance_topk")),
    request_body(content = Object, description = "Operands (per operation) and optional backend/device", content_type = "application/json"),
    responses((status = 200, description = "The result", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn compute_json(
    state: web::Data<GatewayState>,
    op: web::Path<String>,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if !body.is_object() {
        return Err(ApiError::bad_request("body must be a JSON object"));
    }
    let target: Target = serde_json::from_value(json!({
        "backend": body.get("backend").cloned().unwrap_or(Value::Null),
        "device": body.get("device").cloned().unwrap_or(Value::Null),
    }))
    .map_err(|e| ApiError::bad_request(format!("backend/device: {e}")))?;
    // How to shape the reply: a vector, a scalar, a matrix of `cols` columns (or flat when the
    // input was flat), or per-query top-k rows.
    enum Shape {
        Vector,
        Scalar,
        Matrix(usize, bool),
        TopK(usize),
    }
    let (cop, shape) = match op.as_str() {
        "vector_add" | "dot" => {
            let a = vector(field(&body, "a")?, "a")?;
            let b = vector(field(&body, "b")?, "b")?;
            if op.as_str() == "dot" {
                (ComputeOp::Dot { a, b }, Shape::Scalar)
            } else {
                (ComputeOp::VectorAdd { a, b }, Shape::Vector)
            }
        }
        "reduce_sum" => {
            let (_, _, x) = matrix(field(&body, "x")?, "x")?;
            (ComputeOp::ReduceSum { x }, Shape::Scalar)
        }
        "softmax" => {
            let xv = field(&body, "x")?;
            let is_matrix = xv
                .as_array()
                .is_some_and(|a| a.first().is_some_and(Value::is_array));
            let (r, c, x) = matrix(xv, "x")?;
            (
                ComputeOp::Softmax {
                    rows: u32_of(r, "rows")?,
                    cols: u32_of(c, "cols")?,
                    x,
                },
                Shape::Matrix(c, is_matrix),
            )
        }
        "matmul" => {
            let (m, k, a) = matrix(field(&body, "a")?, "a")?;
            let (k2, n, b) = matrix(field(&body, "b")?, "b")?;
            if k != k2 {
                return Err(ApiError::bad_request(format!(
                    "a is {m}x{k} but b is {k2}x{n}: inner dimensions differ"
                )));
            }
            (
                ComputeOp::Matmul {
                    m: u32_of(m, "m")?,
                    k: u32_of(k, "k")?,
                    n: u32_of(n, "n")?,
                    a,
                    b,
                },
                Shape::Matrix(n, true),
            )
        }
        "distance_topk" => {
            let (q, dim, queries) = matrix(field(&body, "queries")?, "queries")?;
            let (_, dim2, vectors) = matrix(field(&body, "vectors")?, "vectors")?;
            if dim != dim2 {
                return Err(ApiError::bad_request(format!(
                    "queries have dimension {dim}, vectors {dim2}"
                )));
            }
            let k = field(&body, "k")?
                .as_u64()
                .and_then(|k| u32::try_from(k).ok())
                .ok_or_else(|| ApiError::bad_request("`k` must be a positive integer"))?;
            let metric = body
                .get("metric")
                .and_then(Value::as_str)
                .unwrap_or("cosine")
                .to_string();
            (
                ComputeOp::DistanceTopk {
                    dim: u32_of(dim, "dim")?,
                    k,
                    metric,
                    queries,
                    vectors,
                },
                Shape::TopK(q),
            )
        }
        other => {
            return Err(ApiError::not_found(format!(
                "unknown op `{other}`: expected vector_add, matmul, reduce_sum, dot, softmax or distance_topk"
            )));
        }
    };
    let r = run(
        &state,
        Compute {
            backend: target.backend,
            device: target.device,
            op: cop,
        },
    )
    .await?;
    let result = match shape {
        Shape::Vector => json!(r.values),
        Shape::Scalar => json!(r.values.first().copied().unwrap_or(0.0)),
        Shape::Matrix(cols, true) => rows(&r.values, cols),
        Shape::Matrix(_, false) => json!(r.values),
        Shape::TopK(q) => {
            let k = r.values.len() / q.max(1);
            json!({ "scores": rows(&r.values, k), "indices": r.indices.chunks(k.max(1)).map(|c| json!(c)).collect::<Vec<_>>() })
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "result": result,
        "backend": r.backend,
        "device": r.device,
        "device_id": r.device_id,
        "fallback": r.fallback,
        "elapsed_us": r.elapsed_us,
    })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct BinaryQuery {
    backend: Option<String>,
    device: Option<u32>,
    m: Option<u32>,
    k: Option<u32>,
    n: Option<u32>,
    rows: Option<u32>,
    cols: Option<u32>,
}

/// Body: the inputs' little-endian f32 values back to back (a then b). Shape from the query
/// (`n` for vector ops; `m`, `k`, `n` for matmul; `rows`, `cols` for softmax). Reply: the
/// result's f32 values, with `x-abi-backend`, `x-abi-device`, `x-abi-fallback` headers.
#[utoipa::path(
    post,
    path = "/v1/compute/{op}/binary",
    tag = "compute",
    params(("op" = String, Path, description = "Operation"), BinaryQuery),
    request_body(content = Vec<u8>, description = "Little-endian f32 operands", content_type = "application/octet-stream"),
    responses((status = 200, description = "Little-endian f32 result", content_type = "application/octet-stream", body = Vec<u8>), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn compute_binary(
    state: web::Data<GatewayState>,
    op: web::Path<String>,
    q: web::Query<BinaryQuery>,
    body: Bytes,
) -> Result<impl Responder, ApiError> {
    if !body.len().is_multiple_of(4) {
        return Err(ApiError::bad_request(
            "body length is not a multiple of 4 (f32)",
        ));
    }
    let vals: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let need = |name: &str, v: Option<u32>| {
        v.filter(|x| *x > 0).ok_or_else(|| {
            ApiError::bad_request(format!("query parameter `{name}` (> 0) is required"))
        })
    };
    let split = |at: usize| -> Result<(Vec<f32>, Vec<f32>), ApiError> {
        if vals.len() != 2 * at {
            return Err(ApiError::bad_request(format!(
                "body has {} values, expected {}",
                vals.len(),
                2 * at
            )));
        }
        Ok((vals[..at].to_vec(), vals[at..].to_vec()))
    };
    let cop = match op.as_str() {
        "vector_add" | "dot" => {
            let n = need("n", q.n)? as usize;
            let (a, b) = split(n)?;
            if op.as_str() == "dot" {
                ComputeOp::Dot { a, b }
            } else {
                ComputeOp::VectorAdd { a, b }
            }
        }
        "reduce_sum" => ComputeOp::ReduceSum { x: vals.clone() },
        "softmax" => ComputeOp::Softmax {
            rows: need("rows", q.rows)?,
            cols: need("cols", q.cols)?,
            x: vals.clone(),
        },
        "matmul" => {
            let (m, k, n) = (need("m", q.m)?, need("k", q.k)?, need("n", q.n)?);
            let split_at = m as usize * k as usize;
            if vals.len() != split_at + k as usize * n as usize {
                return Err(ApiError::bad_request(format!(
                    "body has {} values, matmul {m}x{k}x{n} needs {}",
                    vals.len(),
                    split_at + k as usize * n as usize
                )));
            }
            ComputeOp::Matmul {
                m,
                k,
                n,
                a: vals[..split_at].to_vec(),
                b: vals[split_at..].to_vec(),
            }
        }
        other => {
            return Err(ApiError::not_found(format!(
                "binary form supports vector_add, dot, reduce_sum, softmax, matmul; not `{other}`"
            )));
        }
    };
    let r = run(
        &state,
        Compute {
            backend: q.backend.clone(),
            device: q.device,
            op: cop,
        },
    )
    .await?;
    let mut out = Vec::with_capacity(r.values.len() * 4);
    for v in &r.values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header(("x-abi-backend", r.backend))
        .insert_header(("x-abi-device", r.device_id))
        .insert_header(("x-abi-fallback", r.fallback.to_string()))
        .insert_header(("x-abi-elapsed-us", r.elapsed_us.to_string()))
        .body(out))
}
