//! OpenAI-compatible inference API: `POST /v1/embeddings`, `POST /v1/chat/completions`
//! (whole or streamed as Server-Sent Events), `GET /v1/models`.
//!
//! Handlers only parse, validate and forward to the pool actor at `inference/<model>`; streamed
//! completions poll the pool (`ChatPoll`) as the client reads, and a dropped connection cancels
//! the generation (`ChatCancel`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi_protocol::inference::{
    Chat, ChatCancel, ChatChunk, ChatMessage, ChatOpen, ChatPoll, ChatRequest, Describe, Embed,
    FinishReason, InferenceError, StepLogprobs,
};
use abi_protocol::{ActorPath, NodeId, paths};
use abi_runtime::{AskError, Node};
use actix_web::body::{BodySize, MessageBody};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, GatewayState};

/// Most inputs in one embeddings request (OpenAI's limit).
const MAX_INPUTS: usize = 2048;
/// How long an embeddings request may take end to end.
const EMBED_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a whole (non-streamed) completion may take.
const CHAT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long one poll of a stream may wait for the next token.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/embeddings", web::post().to(embeddings))
        .route("/v1/chat/completions", web::post().to(chat_completions))
        .route("/v1/models", web::get().to(models));
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// The JSON body of an error, for errors sent inside an SSE stream.
fn error_json(e: &ApiError) -> Value {
    json!({"error": {"code": e.code, "message": e.message}})
}

/// Maps a pool's answer to HTTP: 429 + Retry-After when its queue is full, 4xx for bad input,
/// 503 for a model that failed to load.
fn inference_error(e: InferenceError) -> ApiError {
    let status = match &e {
        InferenceError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
        InferenceError::InvalidInput(_)
        | InferenceError::ContextLength { .. }
        | InferenceError::WrongKind { .. } => StatusCode::BAD_REQUEST,
        InferenceError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        InferenceError::UnknownStream(_) => StatusCode::NOT_FOUND,
        InferenceError::WorkerFailed(_) | InferenceError::Internal(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let err = ApiError::new(status, e.code(), e.to_string());
    match &e {
        InferenceError::Overloaded { retry_after_ms, .. } => {
            err.retry_after(retry_after_ms.div_ceil(1000).max(1))
        }
        _ => err,
    }
}

fn model_not_found(model: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!("model `{model}` does not exist"),
    )
}

fn ask_error(model: &str, e: AskError) -> ApiError {
    match e {
        AskError::NoSuchActor(_) | AskError::Unsupported { .. } => model_not_found(model),
        other => ApiError::from(other),
    }
}

/// The pool serving `model`: this node's when it runs one, otherwise the least loaded
/// of the other nodes running it (so any gateway serves every model of the cluster).
async fn pool_path(node: &Node, model: &str) -> Result<ActorPath, ApiError> {
    let local = local_pool_path(node, model)?;
    if node.registry().contains(&local.name) {
        return Ok(local);
    }
    remote_pool(node, model, &local.name)
        .await
        .ok_or_else(|| model_not_found(model))
}

/// Nodes that may run pool `model`: those the cluster metadata records (pools announce
/// themselves there), or every alive member on a node without the metadata group.
async fn pool_candidates(node: &Node, model: &str) -> Vec<NodeId> {
    use abi_protocol::membership::{ListNodes, NodeStatus, PATH};
    let ttl = Duration::from_secs(2);
    let Ok(list) = node.path(PATH) else {
        return Vec::new();
    };
    let Ok(members) = node.ask(&list, ListNodes, ttl).await else {
        return Vec::new();
    };
    let alive = members
        .into_iter()
        .filter(|m| m.id != *node.id() && m.status == NodeStatus::Alive)
        .map(|m| m.id);
    let recorded = match node.path(abi_protocol::raft::PATH) {
        Ok(p) => match node
            .ask(
                &p,
                abi_protocol::raft::ReadMeta {
                    linearizable: false,
                },
                ttl,
            )
            .await
        {
            Ok(Ok(meta)) => meta.pools.get(model).map(|p| p.nodes.clone()),
            _ => None,
        },
        Err(_) => None,
    };
    match recorded {
        Some(nodes) => alive
            .filter(|id| nodes.iter().any(|n| n == id.as_str()))
            .collect(),
        None => alive.collect(),
    }
}

/// Asks the candidate nodes' pools how loaded they are; the least loaded usable one wins.
async fn remote_pool(node: &Node, model: &str, name: &str) -> Option<ActorPath> {
    let probes = pool_candidates(node, model)
        .await
        .into_iter()
        .map(|id| async move {
            let path = ActorPath::new(id, 0, name).ok()?;
            match node.ask(&path, Describe, Duration::from_secs(2)).await {
                Ok(info) if info.unavailable.is_none() => Some((info.load, path)),
                _ => None,
            }
        });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .min_by_key(|(load, _)| *load)
        .map(|(_, path)| path)
}

fn local_pool_path(node: &Node, model: &str) -> Result<ActorPath, ApiError> {
    let ok = !model.is_empty()
        && model.len() <= 128
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !model.starts_with('.');
    if !ok {
        return Err(model_not_found(model));
    }
    node.path(&format!("{}/{model}", paths::INFERENCE))
        .map_err(|_| model_not_found(model))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(body).is_err() {
        return Err(bad("request body is not valid UTF-8"));
    }
    serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------- embeddings

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "all-minilm-l6-v2", "input": ["hello"]}))]
struct EmbeddingsBody {
    model: String,
    input: EmbedInput,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// Standard base64 (RFC 4648, padded) of the little-endian f32 bytes, as OpenAI sends.
fn base64_f32(v: &[f32]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "openai",
    request_body(content = EmbeddingsBody, content_type = "application/json"),
    responses((status = 200, description = "OpenAI embeddings list", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn embeddings(state: web::Data<GatewayState>, body: Bytes) -> HttpResponse {
    match embeddings_inner(&state.node, &body).await {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => e.error_response(),
    }
}

async fn embeddings_inner(node: &Node, body: &[u8]) -> Result<Value, ApiError> {
    let req: EmbeddingsBody = parse(body)?;
    let inputs = match req.input {
        EmbedInput::One(s) => vec![s],
        EmbedInput::Many(v) => v,
    };
    if inputs.is_empty() {
        return Err(bad("input must not be empty"));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(bad(format!(
            "too many inputs: {} (at most {MAX_INPUTS})",
            inputs.len()
        )));
    }
    if let Some(i) = inputs.iter().position(String::is_empty) {
        return Err(bad(format!("input[{i}] is an empty string")));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(bad(format!(
                "encoding_format must be float or base64, not {other}"
            )));
        }
    };
    let path = pool_path(node, &req.model).await?;
    let out = node
        .ask(&path, Embed { inputs }, EMBED_TIMEOUT)
        .await
        .map_err(|e| ask_error(&req.model, e))?
        .map_err(inference_error)?;
    if let (Some(d), Some(first)) = (req.dimensions, out.vectors.first())
        && d as usize != first.len()
    {
        return Err(bad(format!(
            "model {} has {} dimensions; `dimensions` = {d} is not supported",
            req.model,
            first.len()
        )));
    }
    let data: Vec<Value> = out
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": out.prompt_tokens, "total_tokens": out.prompt_tokens},
    }))
}

// ---------------------------------------------------------------- chat

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
struct ChatMessageBody {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}))]
struct ChatBody {
    model: String,
    messages: Vec<ChatMessageBody>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    logprobs: bool,
    #[serde(default)]
    top_logprobs: Option<u8>,
    #[serde(default)]
    n: Option<u32>,
}

fn chat_request(b: &ChatBody) -> Result<ChatRequest, ApiError> {
    if b.messages.is_empty() {
        return Err(bad("messages must not be empty"));
    }
    if b.n.is_some_and(|n| n != 1) {
        return Err(bad("only n = 1 is supported"));
    }
    let mut messages = Vec::with_capacity(b.messages.len());
    for (i, m) in b.messages.iter().enumerate() {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant"
        ) {
            return Err(bad(format!(
                "messages[{i}].role `{}` is not supported",
                m.role
            )));
        }
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(bad(format!(
                            "messages[{i}]: content part type `{}` is not supported",
                            p.kind
                        )));
                    }
                    s.push_str(p.text.as_deref().unwrap_or(""));
                }
                s
            }
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        messages.push(ChatMessage {
            role: role.to_string(),
            content,
        });
    }
    let top_logprobs = match (b.logprobs, b.top_logprobs) {
        (false, Some(_)) => return Err(bad("top_logprobs requires logprobs = true")),
        (true, Some(n)) if n > 20 => return Err(bad("top_logprobs must be at most 20")),
        (true, n) => Some(n.unwrap_or(0)),
        (false, None) => None,
    };
    let stop = match &b.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    Ok(ChatRequest {
        messages,
        max_tokens: b.max_completion_tokens.or(b.max_tokens),
        temperature: b.temperature.unwrap_or(1.0),
        top_p: b.top_p.unwrap_or(1.0),
        seed: b.seed,
        stop,
        logprobs: top_logprobs,
    })
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::Cancelled => "length",
    }
}

fn logprob_json(steps: &[StepLogprobs]) -> Value {
    let entry = |t: &abi_protocol::inference::TokenLogprob| json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes});
    json!({"content": steps.iter().map(|s| {
        let mut e = entry(&s.chosen);
        e["top_logprobs"] = Value::Array(s.top.iter().map(entry).collect());
        e
    }).collect::<Vec<_>>()})
}

fn completion_id() -> String {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("chatcmpl-{n:x}")
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body(content = ChatBody, content_type = "application/json"),
    responses((status = 200, description = "chat.completion, or SSE chunks with stream: true", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn chat_completions(state: web::Data<GatewayState>, body: Bytes) -> HttpResponse {
    match chat_inner(&state.node, &body).await {
        Ok(r) => r,
        Err(e) => e.error_response(),
    }
}

async fn chat_inner(node: &Node, body: &[u8]) -> Result<HttpResponse, ApiError> {
    let b: ChatBody = parse(body)?;
    let req = chat_request(&b)?;
    let path = pool_path(node, &b.model).await?;
    let id = completion_id();
    let created = now_s();
    if !b.stream {
        let c = node
            .ask(&path, Chat(req), CHAT_TIMEOUT)
            .await
            .map_err(|e| ask_error(&b.model, e))?
            .map_err(inference_error)?;
        return Ok(HttpResponse::Ok().json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": b.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": c.logprobs.as_deref().map(logprob_json),
                "finish_reason": finish_str(c.finish_reason),
            }],
            "usage": {
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens + c.completion_tokens,
            },
        })));
    }
    let stream = node
        .ask(&path, ChatOpen(req), Duration::from_secs(10))
        .await
        .map_err(|e| ask_error(&b.model, e))?
        .map_err(inference_error)?;
    let include_usage = b.stream_options.unwrap_or_default().include_usage;
    let sse = SseChat {
        node: node.clone(),
        path,
        stream,
        model: b.model,
        id,
        created,
        include_usage,
        pending: None,
        out: std::collections::VecDeque::new(),
        started: false,
        done: false,
    };
    Ok(HttpResponse::Ok()
        .insert_header(("Content-Type", "text/event-stream"))
        .insert_header(("Cache-Control", "no-cache"))
        .body(sse))
}

type PollFuture =
    Pin<Box<dyn Future<Output = Result<Result<ChatChunk, InferenceError>, AskError>>>>;

/// The SSE body of a streamed completion: polls the pool as the client reads; dropping it
/// (the client disconnected) cancels the generation.
struct SseChat {
    node: Node,
    path: ActorPath,
    stream: u64,
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    pending: Option<PollFuture>,
    out: std::collections::VecDeque<Bytes>,
    started: bool,
    done: bool,
}

impl SseChat {
    fn event(v: &Value) -> Bytes {
        Bytes::from(format!("data: {v}\n\n"))
    }

    fn chunk(&self, delta: Value, logprobs: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
        })
    }

    fn absorb(&mut self, r: Result<Result<ChatChunk, InferenceError>, AskError>) {
        let chunk = match r {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return self.fail(inference_error(e)),
            Err(e) => return self.fail(ask_error(&self.model, e)),
        };
        for d in chunk.deltas {
            if d.text.is_empty() && d.logprobs.is_none() {
                continue;
            }
            let lp = d
                .logprobs
                .as_ref()
                .map_or(Value::Null, |s| logprob_json(std::slice::from_ref(s)));
            let ev = self.chunk(json!({"content": d.text}), lp, Value::Null);
            self.out.push_back(Self::event(&ev));
        }
        if let Some(f) = chunk.finished {
            match f.outcome {
                Ok(reason) => {
                    let ev = self.chunk(json!({}), Value::Null, json!(finish_str(reason)));
                    self.out.push_back(Self::event(&ev));
                    if self.include_usage {
                        let mut ev = self.chunk(json!({}), Value::Null, Value::Null);
                        ev["choices"] = json!([]);
                        ev["usage"] = json!({
                            "prompt_tokens": f.prompt_tokens,
                            "completion_tokens": f.completion_tokens,
                            "total_tokens": f.prompt_tokens + f.completion_tokens,
                        });
                        self.out.push_back(Self::event(&ev));
                    }
                    self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
                    self.done = true;
                }
                Err(e) => self.fail(inference_error(e)),
            }
        }
    }

    fn fail(&mut self, e: ApiError) {
        self.out.push_back(Self::event(&error_json(&e)));
        self.out.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
        self.done = true;
    }
}

impl MessageBody for SseChat {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(b) = this.out.pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if !this.started {
                this.started = true;
                let ev = this.chunk(
                    json!({"role": "assistant", "content": ""}),
                    Value::Null,
                    Value::Null,
                );
                return Poll::Ready(Some(Ok(Self::event(&ev))));
            }
            let fut = this.pending.get_or_insert_with(|| {
                let node = this.node.clone();
                let path = this.path.clone();
                let stream = this.stream;
                Box::pin(async move { node.ask(&path, ChatPoll { stream }, POLL_TIMEOUT).await })
            });
            match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => {
                    this.pending = None;
                    this.absorb(r);
                }
            }
        }
    }
}

impl Drop for SseChat {
    fn drop(&mut self) {
        if !self.done {
            // The client went away mid-stream: stop generating for nobody.
            let _ = self.node.tell(
                &self.path,
                ChatCancel {
                    stream: self.stream,
                },
            );
        }
    }
}

// ---------------------------------------------------------------- models

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "openai",
    responses((status = 200, description = "Served models", body = Object), (status = "4XX", description = "Client error (JSON error body)", body = crate::openapi::ErrorDoc), (status = "5XX", description = "Server error, or the subsystem is unavailable", body = crate::openapi::ErrorDoc))
)]
async fn models(state: web::Data<GatewayState>) -> HttpResponse {
    let node = &state.node;
    let mut data = Vec::new();
    let names = node
        .path(paths::INFERENCE)
        .ok()
        .and_then(|p| node.supervisor(&p))
        .map(|s| s.child_names())
        .unwrap_or_default();
    for name in names {
        let Ok(path) = local_pool_path(node, &name) else {
            continue;
        };
        if let Ok(info) = node.ask(&path, Describe, Duration::from_secs(2)).await {
            data.push(json!({
                "id": info.id,
                "object": "model",
                "created": 0,
                "owned_by": "abi",
                "kind": info.kind,
                "available": info.unavailable.is_none(),
            }));
        }
    }
    HttpResponse::Ok().json(json!({"object": "list", "data": data}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        // 1.0f32 = 00 00 80 3f
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 0.0]), "AACAPwAAAAA=");
    }

    #[test]
    fn chat_body_validation() {
        let b: ChatBody = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"x","logprobs":true,"top_logprobs":3}"#,
        )
        .expect("parse");
        let r = chat_request(&b).expect("valid");
        assert_eq!(r.stop, vec!["x".to_string()]);
        assert_eq!(r.logprobs, Some(3));
        assert_eq!(r.temperature, 1.0);
        let bad: ChatBody = serde_json::from_str(r#"{"model":"m","messages":[]}"#).expect("parse");
        assert!(chat_request(&bad).is_err());
        assert!(parse::<ChatBody>(b"\xff\xfe").is_err());
    }
}
