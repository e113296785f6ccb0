//! JWT bearer tokens (HS256 with a shared secret, RS256 with a public key),
//! accepted next to API keys.
//!
//! Only the algorithms configured here are accepted: the token header's `alg`
//! picks the key, and an `alg` without a configured key (`none`, `HS384`, an
//! RS256 token when only a secret is set, ...) is refused before any
//! signature work. `exp` is required, `nbf` is checked when present, both with
//! the configured clock skew; `iss` and `aud` are checked when configured.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::Role;

/// The shortest HS256 secret accepted: RFC 7518 §3.2 asks for a key at
/// least as long as the hash output (256 bits).
pub const MIN_HS256_SECRET: usize = 32;

/// What the operator configured (`[gateway.jwt]` and flags).
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// File with the HS256 shared secret (surrounding whitespace ignored).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM file with the RS256 public key (PKCS#1 or SPKI).
    pub rs256_public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// Required issuer.
    pub issuer: Option<String>,
    /// Required audience.
    pub audience: Option<String>,
    /// Claim naming the role.
    pub role_claim: String,
}

/// Why the JWT settings cannot be used (start-up error).
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// Neither an HS256 secret nor an RS256 key.
    #[error("JWT is configured but has no key: set hs256_secret_file and/or rs256_public_key_file")]
    NoKey,
    /// A key file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The HS256 secret is too short to be safe.
    #[error("{path}: HS256 secret has {len} bytes, at least {MIN_HS256_SECRET} are required")]
    ShortSecret {
        /// The file.
        path: PathBuf,
        /// Its length after trimming.
        len: usize,
    },
    /// The RS256 public key is not a PEM RSA public key.
    #[error("{path}: not a PEM RSA public key: {message}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// Why a presented token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtReject {
    /// Not a valid token for this gateway (401).
    #[error("{0}")]
    Invalid(String),
    /// Valid token, but it carries no usable role (403).
    #[error("{0}")]
    NoRole(String),
}

/// Verifies tokens against the configured keys.
pub struct JwtVerifier {
    hs256: Option<(DecodingKey, Validation)>,
    rs256: Option<(DecodingKey, Validation)>,
    role_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("JwtVerifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256", &self.rs256.is_some())
            .field("role_claim", &self.role_claim)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, JwtConfigError> {
    std::fs::read(path).map_err(|source| JwtConfigError::Io {
        path: path.into(),
        source,
    })
}

fn validation(alg: Algorithm, s: &JwtSettings) -> Validation {
    let mut v = Validation::new(alg);
    // `algorithms` holds exactly one entry: the key decides the algorithm,
    // never the token.
    v.algorithms = vec![alg];
    v.leeway = s.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    // A configured `iss`/`aud` must also be present: jsonwebtoken only
    // compares the claims a token carries.
    let mut required = vec!["exp"];
    match &s.audience {
        Some(a) => {
            v.set_audience(&[a]);
            required.push("aud");
        }
        // Without a configured audience an `aud` claim is not our business.
        None => v.validate_aud = false,
    }
    if let Some(i) = &s.issuer {
        v.set_issuer(&[i]);
        required.push("iss");
    }
    v.set_required_spec_claims(&required);
    v
}

impl JwtVerifier {
    /// Loads the key files named in `s`.
    pub fn new(s: &JwtSettings) -> Result<Self, JwtConfigError> {
        let hs256 = match &s.hs256_secret_file {
            Some(path) => {
                let raw = read(path)?;
                let secret = raw.trim_ascii();
                if secret.len() < MIN_HS256_SECRET {
                    return Err(JwtConfigError::ShortSecret {
                        path: path.clone(),
                        len: secret.len(),
                    });
                }
                Some((
                    DecodingKey::from_secret(secret),
                    validation(Algorithm::HS256, s),
                ))
            }
            None => None,
        };
        let rs256 = match &s.rs256_public_key_file {
            Some(path) => {
                let pem = read(path)?;
                let key = DecodingKey::from_rsa_pem(&pem).map_err(|e| JwtConfigError::BadKey {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                Some((key, validation(Algorithm::RS256, s)))
            }
            None => None,
        };
        if hs256.is_none() && rs256.is_none() {
            return Err(JwtConfigError::NoKey);
        }
        Ok(Self {
            hs256,
            rs256,
            role_claim: if s.role_claim.is_empty() {
                "role".into()
            } else {
                s.role_claim.clone()
            },
        })
    }

    /// Checks `token`; on success the caller's id (`jwt:<sub>`) and role.
    pub fn verify(&self, token: &str) -> Result<(String, Role), JwtReject> {
        // `decode_header` fails on algorithms it does not know, `none` included.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| JwtReject::Invalid(format!("malformed JWT: {e}")))?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            JwtReject::Invalid(format!("JWT algorithm {:?} is not accepted", header.alg))
        })?;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, key, validation)
            .map_err(|e| JwtReject::Invalid(format!("JWT rejected: {e}")))?;
        let claims = data.claims;
        let role = role_of(claims.get(&self.role_claim)).ok_or_else(|| {
            JwtReject::NoRole(format!(
                "JWT has no valid `{}` claim (reader, writer or admin)",
                self.role_claim
            ))
        })?;
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("-");
        Ok((format!("jwt:{sub}"), role))
    }
}

/// A role claim: one name, or a list of names (the strongest one counts).
fn role_of(v: Option<&Value>) -> Option<Role> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Array(a) => a
            .iter()
            .filter_map(|r| r.as_str()?.parse::<Role>().ok())
            .max(),
        _ => None,
    }
}

/// Whether a bearer credential has JWT shape: three non-empty base64url parts.
/// API keys (`abi_<id>_<secret>`) never contain dots.
pub fn looks_like_jwt(s: &str) -> bool {
    // API keys have no dot: one memchr settles the common case.
    if !s.as_bytes().contains(&b'.') {
        return false;
    }
    let mut n = 0;
    for part in s.split('.') {
        n += 1;
        if part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
        {
            return false;
        }
    }
    n == 3
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test-only";
    // Test-only RSA keys (generated with `openssl genrsa 2048`); never used outside tests.
    const RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt-rs256-test.key");
    const RSA_PUBLIC: &str = include_str!("../../tests/fixtures/jwt-rs256-test.pub");
    const OTHER_RSA_PRIVATE: &str = include_str!("../../tests/fixtures/jwt-rs256-other.key");

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn settings(dir: &tempfile::TempDir) -> JwtSettings {
        let dir = dir.path();
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).expect("write secret");
        let public = dir.join("pub.pem");
        std::fs::write(&public, RSA_PUBLIC).expect("write public key");
        JwtSettings {
            hs256_secret_file: Some(secret),
            rs256_public_key_file: Some(public),
            leeway_secs: 30,
            issuer: None,
            audience: None,
            role_claim: "role".into(),
        }
    }

    /// A scratch directory for key files, removed when dropped.
    fn tmp(tag: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("abi-jwt-{tag}-"))
            .tempdir()
            .expect("tmp dir")
    }

    fn hs(claims: &Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("encode hs256")
    }

    fn rs(claims: &Value, private_pem: &str) -> String {
        encode(
            &Header::new(Algorithm::RS256),
            claims,
            &EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("rsa key"),
        )
        .expect("encode rs256")
    }

    fn b64(v: &Value) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn hs256_and_rs256_accepted_with_their_roles() {
        let v = JwtVerifier::new(&settings(&tmp("ok"))).expect("verifier");
        let c = json!({"sub": "alice", "role": "writer", "exp": now() + 60});
        assert_eq!(
            v.verify(&hs(&c, SECRET)),
            Ok(("jwt:alice".into(), Role::Writer))
        );
        let c = json!({"sub": "bob", "role": ["reader", "admin"], "exp": now() + 60});
        assert_eq!(
            v.verify(&rs(&c, RSA_PRIVATE)),
            Ok(("jwt:bob".into(), Role::Admin))
        );
        let c = json!({"sub": "carol", "exp": now() + 60});
        assert!(matches!(
            v.verify(&hs(&c, SECRET)),
            Err(JwtReject::NoRole(_))
        ));
        let c = json!({"sub": "carol", "role": "root", "exp": now() + 60});
        assert!(matches!(
            v.verify(&hs(&c, SECRET)),
            Err(JwtReject::NoRole(_))
        ));
    }

    #[test]
    fn expiry_required_and_skew_honoured() {
        let v = JwtVerifier::new(&settings(&tmp("exp"))).expect("verifier");
        let no_exp = json!({"sub": "a", "role": "reader"});
        assert!(matches!(
            v.verify(&hs(&no_exp, SECRET)),
            Err(JwtReject::Invalid(_))
        ));
        // Expired 10 s ago: inside the 30 s leeway, accepted.
        let recent = json!({"sub": "a", "role": "reader", "exp": now() - 10});
        assert!(v.verify(&hs(&recent, SECRET)).is_ok());
        // Expired 120 s ago: refused.
        let old = json!({"sub": "a", "role": "reader", "exp": now() - 120});
        assert!(matches!(
            v.verify(&hs(&old, SECRET)),
            Err(JwtReject::Invalid(m)) if m.contains("Expired")
        ));
        // Not before: 10 s ahead passes with the leeway, 120 s ahead does not.
        let soon = json!({"sub": "a", "role": "reader", "exp": now() + 600, "nbf": now() + 10});
        assert!(v.verify(&hs(&soon, SECRET)).is_ok());
        let later = json!({"sub": "a", "role": "reader", "exp": now() + 600, "nbf": now() + 120});
        assert!(v.verify(&hs(&later, SECRET)).is_err());
        // With no leeway, the 10-seconds-expired token is refused too.
        let dir = tmp("exp0");
        let mut s = settings(&dir);
        s.leeway_secs = 0;
        let strict = JwtVerifier::new(&s).expect("verifier");
        assert!(strict.verify(&hs(&recent, SECRET)).is_err());
    }

    #[test]
    fn alg_none_other_algs_and_wrong_keys_refused() {
        let v = JwtVerifier::new(&settings(&tmp("bad"))).expect("verifier");
        let c = json!({"sub": "eve", "role": "admin", "exp": now() + 60});
        // alg none, unsigned (empty signature) and with a junk signature part.
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&c)
        );
        assert!(v.verify(&none).is_err());
        let none_sig = format!("{none}c2ln");
        assert!(looks_like_jwt(&none_sig));
        assert!(matches!(v.verify(&none_sig), Err(JwtReject::Invalid(_))));
        // An HS384 token signed with the right secret: algorithm not configured.
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &c,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode");
        assert!(matches!(v.verify(&hs384), Err(JwtReject::Invalid(m)) if m.contains("HS384")));
        // Wrong secret, wrong RSA key.
        assert!(
            v.verify(&hs(&c, "another-secret-another-secret-xx"))
                .is_err()
        );
        assert!(v.verify(&rs(&c, OTHER_RSA_PRIVATE)).is_err());
        // Only HS256 configured: an RS256 token is refused even if well signed.
        let dir = tmp("hsonly");
        let mut s = settings(&dir);
        s.rs256_public_key_file = None;
        let hs_only = JwtVerifier::new(&s).expect("verifier");
        assert!(hs_only.verify(&rs(&c, RSA_PRIVATE)).is_err());
        assert!(hs_only.verify(&hs(&c, SECRET)).is_ok());
        // Tampered payload.
        let good = hs(&c, SECRET);
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = b64(&json!({"sub": "eve", "role": "admin", "exp": now() + 6000}));
        parts[1] = &forged;
        assert!(v.verify(&parts.join(".")).is_err());
    }

    #[test]
    fn issuer_and_audience_checked_when_configured() {
        let dir = tmp("iss");
        let mut s = settings(&dir);
        s.issuer = Some("https://issuer.example".into());
        s.audience = Some("abi".into());
        let v = JwtVerifier::new(&s).expect("verifier");
        let ok = json!({"role": "reader", "exp": now() + 60, "iss": "https://issuer.example", "aud": "abi"});
        assert!(v.verify(&hs(&ok, SECRET)).is_ok());
        let wrong_iss = json!({"role": "reader", "exp": now() + 60, "iss": "x", "aud": "abi"});
        assert!(v.verify(&hs(&wrong_iss, SECRET)).is_err());
        let no_aud = json!({"role": "reader", "exp": now() + 60, "iss": "https://issuer.example"});
        assert!(v.verify(&hs(&no_aud, SECRET)).is_err());
        let no_iss = json!({"role": "reader", "exp": now() + 60, "aud": "abi"});
        assert!(v.verify(&hs(&no_iss, SECRET)).is_err());
        let wrong_aud = json!({"role": "reader", "exp": now() + 60, "iss": "https://issuer.example", "aud": "other"});
        assert!(v.verify(&hs(&wrong_aud, SECRET)).is_err());
    }

    #[test]
    fn config_errors() {
        assert!(matches!(
            JwtVerifier::new(&JwtSettings::default()),
            Err(JwtConfigError::NoKey)
        ));
        let dir = tmp("cfg");
        let d = dir.path();
        let short = d.join("short");
        std::fs::write(&short, "too-short").expect("write");
        let s = JwtSettings {
            hs256_secret_file: Some(short),
            ..Default::default()
        };
        assert!(matches!(
            JwtVerifier::new(&s),
            Err(JwtConfigError::ShortSecret { len: 9, .. })
        ));
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "not a key").expect("write");
        let s = JwtSettings {
            rs256_public_key_file: Some(junk),
            ..Default::default()
        };
        assert!(matches!(
            JwtVerifier::new(&s),
            Err(JwtConfigError::BadKey { .. })
        ));
    }

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(!looks_like_jwt("abi_0123_abcdef"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a b.c.d"));
    }
}
