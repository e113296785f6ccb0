//! The gateway's front door: request ids, concurrency cap, authentication,
//! roles, rate limits and the request deadline, in that order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use tracing::Instrument;

use super::jwt::{JwtReject, JwtVerifier, looks_like_jwt};
use super::limit::RateLimiter;
use super::roles::{Access, required};
use super::{KeyStore, Role};
use crate::{ApiError, GatewayState};

/// Gateway security settings.
#[derive(Debug, Default)]
pub struct Security {
    /// Keys; `None` (and no `jwt`) turns authentication off (loopback development).
    pub keys: Option<KeyStore>,
    /// JWT bearer tokens; with or without API keys.
    pub jwt: Option<JwtVerifier>,
    /// Serve `/metrics` without credentials.
    pub open_metrics: bool,
    /// Per-key rate limit.
    pub limiter: Option<RateLimiter>,
    /// Requests in flight at once, beyond which the gateway answers 503.
    pub max_concurrency: Option<Arc<tokio::sync::Semaphore>>,
}

impl Security {
    /// Whether requests need credentials at all.
    pub fn auth_enabled(&self) -> bool {
        self.keys.is_some() || self.jwt.is_some()
    }

    /// Who presents `cred`: a JWT when it has JWT shape, otherwise an API key.
    pub fn authenticate(&self, cred: &str) -> Result<(String, Role), ApiError> {
        let unauthorized = |m: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
        if looks_like_jwt(cred) {
            let Some(jwt) = &self.jwt else {
                return Err(unauthorized(
                    "JWT bearer tokens are not accepted by this gateway".into(),
                ));
            };
            return jwt.verify(cred).map_err(|e| match e {
                JwtReject::Invalid(m) => unauthorized(m),
                JwtReject::NoRole(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            });
        }
        self.keys
            .as_ref()
            .and_then(|k| k.verify(cred))
            .ok_or_else(|| unauthorized("invalid or revoked key".into()))
    }
}

/// The authenticated caller, available to handlers as request extension.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id.
    pub key_id: String,
    /// Its role.
    pub role: Role,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn presented_key(req: &ServiceRequest) -> Option<&str> {
    let h = req.headers();
    if let Some(v) = h.get("authorization").and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(k.trim());
        }
    }
    if let Some(v) = h.get("api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    // EventSource cannot send headers: the dashboard passes its key as a query parameter.
    req.query_string()
        .split('&')
        .find_map(|kv| kv.strip_prefix("api_key="))
}

fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.is_ascii())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

fn refuse<B>(req: ServiceRequest, err: ApiError, rid: &str) -> ServiceResponse<EitherBody<B>> {
    let mut res = err.error_response();
    if let Ok(v) = HeaderValue::from_str(rid) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    req.into_response(res).map_into_right_body()
}

/// Middleware entry point.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let rid = request_id(&req);
    let Some(state) = req
        .app_data::<actix_web::web::Data<GatewayState>>()
        .cloned()
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let sec = state.security.clone();
    let _permit = match &sec.max_concurrency {
        Some(sem) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let err = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many requests in flight; retry shortly",
                )
                .retry_after(1);
                return Ok(refuse(req, err, &rid));
            }
        },
        None => None,
    };
    if sec.auth_enabled() {
        let access = match required(req.method(), req.path()) {
            Access::Role(Role::Reader) if sec.open_metrics && req.path() == "/metrics" => {
                Access::Open
            }
            a => a,
        };
        if let Access::Role(need) = access {
            let Some(key) = presented_key(&req) else {
                let err = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing credentials: send `Authorization: Bearer <key or JWT>` or `api-key: <key>`",
                );
                return Ok(refuse(req, err, &rid));
            };
            let (key_id, role) = match sec.authenticate(key) {
                Ok(who) => who,
                Err(err) => return Ok(refuse(req, err, &rid)),
            };
            if role < need {
                let err = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "this route needs role {}, the key has {}",
                        need.as_str(),
                        role.as_str()
                    ),
                );
                return Ok(refuse(req, err, &rid));
            }
            if let Some(l) = &sec.limiter
                && let Err(wait) = l.check(&key_id, Instant::now())
            {
                let err = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("rate limit of key {key_id} exceeded"),
                )
                .retry_after(wait);
                return Ok(refuse(req, err, &rid));
            }
            req.extensions_mut().insert(Caller { key_id, role });
        }
    }
    let span =
        tracing::info_span!("http", request_id = %rid, method = %req.method(), path = %req.path());
    // The deadline covers producing the response head; streams (SSE) continue after it.
    let limit = state.request_timeout + Duration::from_secs(1);
    let res = match tokio::time::timeout(limit, next.call(req).instrument(span)).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!("no answer within {} ms", limit.as_millis()),
            )
            .into());
        }
    };
    let mut res = res.map_into_left_body();
    if let Ok(v) = HeaderValue::from_str(&rid) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    Ok(res)
}
