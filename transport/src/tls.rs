//! rustls configuration for the QUIC endpoint: TLS 1.3 only, ALPN `abi/1`,
//! the cluster CA as the only trust anchor, client certificates mandatory.
//!
//! Every config is built with an explicit ring provider (`builder_with_provider`),
//! so nothing depends on a process-default provider being installed.
//!
//! Identity: TLS proves that the peer holds a certificate signed by the cluster
//! CA. Which node it is comes from the handshake frame ([`crate::envelope::Hello`]),
//! and that claim is accepted only if the verified certificate carries the
//! matching SAN ([`verify_peer_id`]). A dialer may not know the id of a seed
//! address in advance, so the client-side verifier checks the chain only and
//! leaves the name check to that step.

use std::sync::Arc;

use abi_protocol::NodeId;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::certs::{TlsFiles, san_for};

/// ALPN protocol id of the abi wire protocol, version 1.
pub const ALPN: &[u8] = b"abi/1";

/// Why a TLS configuration could not be built or a peer's identity was refused.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the material (bad key, unsupported algorithm, ...).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA could not be used as a trust anchor.
    #[error("cluster CA unusable: {0}")]
    Ca(String),
    /// The peer presented no certificate (cannot happen with mutual TLS; checked anyway).
    #[error("peer presented no certificate")]
    NoPeerCert,
    /// The peer's certificate does not carry the node id it claims.
    #[error("peer certificate is not valid for node id {claimed:?}: {reason}")]
    WrongId {
        /// The id the peer claimed.
        claimed: String,
        /// What rustls said.
        reason: String,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| TlsError::Ca(e.to_string()))?;
    Ok(Arc::new(roots))
}

/// Checks that `cert` is signed by `ca` and usable by a node (no name check).
pub fn verify_chain(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'_>,
) -> Result<(), TlsError> {
    let roots = roots(ca)?;
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )?;
    Ok(())
}

/// Checks that the (already chain-verified) end-entity certificate carries `claimed`'s SAN.
pub fn verify_peer_id(cert: &CertificateDer<'_>, claimed: &NodeId) -> Result<(), TlsError> {
    let wrong = |reason: String| TlsError::WrongId {
        claimed: claimed.to_string(),
        reason,
    };
    let parsed =
        rustls::server::ParsedCertificate::try_from(cert).map_err(|e| wrong(e.to_string()))?;
    let name = ServerName::try_from(san_for(claimed)).map_err(|e| wrong(e.to_string()))?;
    rustls::client::verify_server_name(&parsed, &name).map_err(|e| wrong(e.to_string()))
}

/// The end-entity certificate a QUIC peer presented (verified by TLS by then).
pub fn peer_cert(conn: &quinn::Connection) -> Result<CertificateDer<'static>, TlsError> {
    let any = conn.peer_identity().ok_or(TlsError::NoPeerCert)?;
    let certs = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| TlsError::NoPeerCert)?;
    certs.first().cloned().ok_or(TlsError::NoPeerCert)
}

/// Server-side config: client certificates signed by the cluster CA are required.
pub fn server_config(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(&files.ca)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Ca(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(files.chain.clone(), files.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Client-side config: presents our certificate, accepts servers signed by the cluster CA.
pub fn client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let verifier = ChainOnlyVerifier {
        inner: WebPkiServerVerifier::builder_with_provider(roots(&files.ca)?, provider.clone())
            .build()
            .map_err(|e| TlsError::Ca(e.to_string()))?,
        roots: roots(&files.ca)?,
        provider: provider.clone(),
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(files.chain.clone(), files.key.clone_key())?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Verifies the server chain against the cluster CA exactly as webpki does,
/// but not the server name: the node id is checked after the handshake
/// against the id the server claims (and the one the dialer expected, if any).
#[derive(Debug)]
struct ChainOnlyVerifier {
    inner: Arc<WebPkiServerVerifier>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
