//! CORS for browser clients, off unless origins are configured.
//!
//! The CORS middleware sits outside authentication, so a preflight `OPTIONS`
//! from an allowed origin is answered without credentials (browsers never
//! send them on preflights), and error answers (401, 429) still carry the
//! headers a browser needs to show them to the page.

use actix_cors::Cors;
use actix_web::http::header::{self, HeaderName};

/// Why a configured origin is unusable.
#[derive(Debug, thiserror::Error)]
#[error("CORS origin {origin:?}: {reason}")]
pub struct CorsOriginError {
    /// The configured value.
    pub origin: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Checks origins at start-up: `*` or `scheme://host[:port]` (no path, no slash).
pub fn validate_origins(origins: &[String]) -> Result<(), CorsOriginError> {
    for o in origins {
        if o == "*" {
            continue;
        }
        let err = |reason| CorsOriginError {
            origin: o.clone(),
            reason,
        };
        let Some((scheme, rest)) = o.split_once("://") else {
            return Err(err("expected scheme://host[:port] or \"*\""));
        };
        if scheme != "http" && scheme != "https" {
            return Err(err("scheme must be http or https"));
        }
        if rest.is_empty() || rest.contains('/') || o.parse::<header::HeaderValue>().is_err() {
            return Err(err("expected scheme://host[:port] without a path"));
        }
    }
    Ok(())
}

/// The middleware for `origins` (call only with a non-empty, validated list).
pub fn middleware(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE"])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("api-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .max_age(3600)
        // A request from another origin simply gets no CORS headers (the
        // browser then hides the answer); refusing it outright would also
        // break non-browser clients that happen to send `Origin`.
        .block_on_origin_mismatch(false);
    if origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin();
    } else {
        for o in origins {
            cors = cors.allowed_origin(o);
        }
    }
    cors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_validated() {
        let ok =
            |v: &[&str]| validate_origins(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["*", "https://a.example", "http://localhost:3000"]).is_ok());
        assert!(ok(&["a.example"]).is_err());
        assert!(ok(&["ftp://a.example"]).is_err());
        assert!(ok(&["https://a.example/app"]).is_err());
        assert!(ok(&["https://"]).is_err());
    }
}
