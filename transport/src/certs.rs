//! Cluster certificates: a cluster CA and node certificates that carry the
//! node id in their subject alternative name (rcgen).
//!
//! Layout written by [`issue`] (the `--tls-dir` layout): `ca.pem`, `node.pem`,
//! `node.key`. [`init_ca`] writes `ca.pem` and `ca.key`. Private keys are
//! created with mode 0600 so that they are never readable by others, not even
//! for the instant between creation and a later chmod.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use abi_protocol::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File name of the cluster CA certificate (in both the CA dir and a node's TLS dir).
pub const CA_CERT: &str = "ca.pem";
/// File name of the cluster CA private key (CA dir only).
pub const CA_KEY: &str = "ca.key";
/// File name of a node certificate.
pub const NODE_CERT: &str = "node.pem";
/// File name of a node private key.
pub const NODE_KEY: &str = "node.key";

/// Suffix appended to a node id to form the DNS SAN of its certificate.
///
/// A bare id such as `1` or `10.0.0.1` is not a valid DNS name (it would
/// read as an IP address); `1.node.abi` always is.
pub const SAN_SUFFIX: &str = ".node.abi";

/// The DNS name that a node's certificate must carry for `id`.
pub fn san_for(id: &NodeId) -> String {
    format!("{}{}", id.as_str(), SAN_SUFFIX)
}

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused to build or sign a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file did not hold what was expected.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// A file that must not be overwritten already exists.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// The CA key does not belong to the CA certificate (or the CA dir was not made by `init_ca`).
    #[error("CA in {0} is inconsistent: the issued certificate does not verify against ca.pem")]
    Inconsistent(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a file that must not exist yet; private files get mode 0600 at creation.
fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists(path.to_path_buf())
        } else {
            CertError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// FNV-1a, 64 bit: a stable (across Rust versions) fingerprint used to make CA
/// names unique. Not a security property: trust comes from signatures.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// CA parameters derived from the CA key alone, so that `issue` can rebuild
/// the issuer from `ca.key` without parsing `ca.pem`. The name embeds a
/// fingerprint of the key so that two clusters' CAs never share a subject.
fn ca_params(key: &KeyPair) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "abi");
    dn.push(
        DnType::CommonName,
        format!(
            "abi cluster CA {:016x}",
            fnv1a(&key.subject_public_key_info())
        ),
    );
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Creates a cluster CA in `dir` (`ca.pem`, `ca.key` with mode 0600).
///
/// Refuses to overwrite an existing CA: replacing it would orphan every node certificate.
pub fn init_ca(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(CertError::Exists(p.clone()));
        }
    }
    let key = KeyPair::generate()?;
    let cert = ca_params(&key)?.self_signed(&key)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok(())
}

/// Issues a certificate for `node` signed by the CA in `ca_dir`, writing
/// `ca.pem`, `node.pem` and `node.key` (0600) into `out_dir`.
///
/// The certificate's DNS SAN is [`san_for`]`(node)`, with both server and
/// client authentication usages since every node dials and accepts.
pub fn issue(ca_dir: &Path, node: &NodeId, out_dir: &Path) -> Result<(), CertError> {
    issue_with_sans(ca_dir, node, &[], out_dir)
}

/// [`issue`] with extra subject alternative names (DNS names or IP
/// addresses, e.g. `localhost`, `127.0.0.1`, `api.example.com`), so that the
/// same certificate can serve the node's HTTPS gateway to clients that dial
/// it by host name or address.
pub fn issue_with_sans(
    ca_dir: &Path,
    node: &NodeId,
    extra_sans: &[String],
    out_dir: &Path,
) -> Result<(), CertError> {
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
    let ca_cert_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError::Pem {
        path: ca_key_path.clone(),
        what: format!("not a private key: {e}"),
    })?;
    let ca_der = first_cert(&ca_cert_path, &ca_cert_pem)?;
    let issuer = Issuer::new(ca_params(&ca_key)?, ca_key);

    // rcgen turns names that parse as IP addresses into IP SANs.
    let mut sans = vec![san_for(node)];
    sans.extend(extra_sans.iter().cloned());
    let mut np = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "abi");
    dn.push(DnType::CommonName, node.as_str());
    np.distinguished_name = dn;
    np.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    np.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_key = KeyPair::generate()?;
    let cert = np.signed_by(&node_key, &issuer)?;

    // Refuse to write a certificate that our own verifier would reject.
    crate::tls::verify_chain(&ca_der, cert.der())
        .map_err(|_| CertError::Inconsistent(ca_dir.to_path_buf()))?;

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let paths = [
        out_dir.join(CA_CERT),
        out_dir.join(NODE_CERT),
        out_dir.join(NODE_KEY),
    ];
    for p in &paths {
        if p.exists() {
            return Err(CertError::Exists(p.clone()));
        }
    }
    write_new(&paths[2], &node_key.serialize_pem(), true)?;
    write_new(&paths[1], &cert.pem(), false)?;
    write_new(&paths[0], &ca_cert_pem, false)?;
    Ok(())
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CertError> {
    let mut it = CertificateDer::pem_slice_iter(pem.as_bytes());
    match it.next() {
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(CertError::Pem {
            path: path.to_path_buf(),
            what: format!("bad PEM: {e}"),
        }),
        None => Err(CertError::Pem {
            path: path.to_path_buf(),
            what: "no CERTIFICATE block".into(),
        }),
    }
}

/// A node's TLS material loaded from a `--tls-dir`.
#[derive(Debug)]
pub struct TlsFiles {
    /// The cluster CA: the only trust anchor.
    pub ca: CertificateDer<'static>,
    /// This node's certificate (first) and any intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsFiles {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsFiles {
    /// Loads `ca.pem`, `node.pem` and `node.key` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, CertError> {
        Self::load_files(
            &dir.join(CA_CERT),
            &dir.join(NODE_CERT),
            &dir.join(NODE_KEY),
        )
    }

    /// Loads the three files from explicit paths (the `[tls]` TOML section).
    pub fn load_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, CertError> {
        let ca_pem = fs::read_to_string(ca).map_err(io_err(ca))?;
        let ca_der = first_cert(ca, &ca_pem)?;
        let cert_pem = fs::read_to_string(cert).map_err(io_err(cert))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Pem {
                path: cert.to_path_buf(),
                what: format!("bad PEM: {e}"),
            })?;
        if chain.is_empty() {
            return Err(CertError::Pem {
                path: cert.to_path_buf(),
                what: "no CERTIFICATE block".into(),
            });
        }
        let key_pem = fs::read(key).map_err(io_err(key))?;
        let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| CertError::Pem {
            path: key.to_path_buf(),
            what: format!("no private key: {e}"),
        })?;
        Ok(Self {
            ca: ca_der,
            chain,
            key: key_der,
        })
    }
}
