//! Failures as HTTP answers with a JSON body.

use abi_protocol::error::ErrorBody;
use abi_runtime::AskError;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// An HTTP error: status, stable code and message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Seconds for a `Retry-After` header (429/503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 with code `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 with code `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// Adds a `Retry-After` header.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<AskError> for ApiError {
    fn from(e: AskError) -> Self {
        let status = match &e {
            AskError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            AskError::NoSuchActor(_) => StatusCode::NOT_FOUND,
            AskError::ActorStopped(_) | AskError::PeerUnreachable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            AskError::StaleIncarnation { .. } => StatusCode::CONFLICT,
            AskError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            AskError::Codec(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut err = Self::new(status, e.code(), e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after = Some(1);
        }
        err
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut b = HttpResponse::build(self.status);
        if let Some(s) = self.retry_after {
            b.insert_header(("Retry-After", s.to_string()));
        }
        b.json(ErrorBody::new(self.code.clone(), self.message.clone()))
    }
}

/// Turns actix extractor failures (bad JSON, oversize bodies, bad paths) into JSON errors.
pub fn extractor_error(err: impl Into<actix_web::Error>) -> actix_web::Error {
    let err: actix_web::Error = err.into();
    let status = err.as_response_error().status_code();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "bad_request",
    };
    ApiError::new(status, code, err.to_string()).into()
}
