//! HTTPS for the gateway: a rustls server configuration from PEM files.
//!
//! The provider is passed explicitly (ring), never taken from the process
//! default: with two rustls providers compiled into one binary there is no
//! default, and `ServerConfig::builder()` would panic.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why the gateway's TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GatewayTlsError {
    /// The certificate file is unreadable or holds no certificate.
    #[error("gateway TLS certificate {path}: {message}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The key file is unreadable or holds no private key.
    #[error("gateway TLS key {path}: {message}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("gateway TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server configuration for `cert` (a PEM chain, leaf first) and `key`.
pub fn server_config(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, GatewayTlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| GatewayTlsError::Cert {
            path: cert.into(),
            message: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| GatewayTlsError::Cert {
            path: cert.into(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(GatewayTlsError::Cert {
            path: cert.into(),
            message: "no CERTIFICATE block".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| GatewayTlsError::Key {
        path: key.into(),
        message: e.to_string(),
    })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, private)?;
    // actix-web is built without HTTP/2 here.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Whether plain HTTP may be served on `addr`: always on loopback, elsewhere
/// only when the operator opted in.
pub fn plain_http_allowed(addr: std::net::SocketAddr, allow_plain_http: bool) -> bool {
    addr.ip().is_loopback() || allow_plain_http
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_unless_enabled() {
        let lo: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let lo6: std::net::SocketAddr = "[::1]:8080".parse().expect("addr");
        let any: std::net::SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        assert!(plain_http_allowed(lo, false));
        assert!(plain_http_allowed(lo6, false));
        assert!(!plain_http_allowed(any, false));
        assert!(plain_http_allowed(any, true));
    }

    #[test]
    fn missing_and_junk_files_are_typed_errors() {
        let dir = tempfile::tempdir().expect("dir");
        let d = dir.path();
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "nothing here").expect("write");
        assert!(matches!(
            server_config(&d.join("missing.pem"), &junk),
            Err(GatewayTlsError::Cert { .. })
        ));
        assert!(matches!(
            server_config(&junk, &junk),
            Err(GatewayTlsError::Cert { .. })
        ));
    }
}
