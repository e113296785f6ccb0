//! API keys: `abi_<id>_<secret>`; the file stores only `sha256(salt || secret)`.
//!
//! Keys are 256-bit random secrets, so a salted SHA-256 is enough (as for
//! GitHub or Stripe tokens); a slow password hash would only cost latency.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a caller may do; each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Search and inference.
    Reader,
    /// Upserts, deletes, collection changes.
    Writer,
    /// Cluster and actor control.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reader" => Ok(Self::Reader),
            "writer" => Ok(Self::Writer),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?} (reader, writer, admin)")),
        }
    }
}

impl Role {
    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
            Self::Admin => "admin",
        }
    }
}

/// One stored key (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Public identifier, part of the key.
    pub id: String,
    /// Granted role.
    pub role: Role,
    /// Hex salt.
    pub salt: String,
    /// Hex `sha256(salt || secret)`.
    pub hash: String,
    /// Creation time, Unix seconds.
    pub created: u64,
    /// Revoked keys are refused (kept for audit).
    #[serde(default)]
    pub revoked: bool,
}

/// The keys file: a TOML list of `[[key]]` entries.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeysFile {
    /// Entries.
    #[serde(default, rename = "key")]
    pub keys: Vec<KeyEntry>,
}

/// Why the keys file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(secret.as_bytes());
    hex(&h.finalize())
}

/// Constant-time string comparison (no early exit on the first difference).
fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl KeysFile {
    /// Reads a keys file (a missing file is an empty one).
    pub fn load(path: &Path) -> Result<Self, KeysError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(KeysError::Io {
                    path: path.into(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|e| KeysError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), KeysError> {
        let io = |source| KeysError::Io {
            path: path.into(),
            source,
        };
        let text = toml::to_string(self).map_err(|e| KeysError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Adds a new key with `role`; returns the full key, shown once.
    pub fn create(&mut self, role: Role) -> String {
        let mut rng = rand::rng();
        let mut id = [0u8; 6];
        let mut secret = [0u8; 32];
        let mut salt = [0u8; 16];
        rng.fill_bytes(&mut id);
        rng.fill_bytes(&mut secret);
        rng.fill_bytes(&mut salt);
        let (id, secret, salt) = (hex(&id), hex(&secret), hex(&salt));
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.keys.push(KeyEntry {
            hash: digest(&salt, &secret),
            id: id.clone(),
            role,
            salt,
            created,
            revoked: false,
        });
        format!("abi_{id}_{secret}")
    }

    /// Marks key `id` revoked; false if unknown.
    pub fn revoke(&mut self, id: &str) -> bool {
        match self.keys.iter_mut().find(|k| k.id == id) {
            Some(k) => {
                k.revoked = true;
                true
            }
            None => false,
        }
    }

    /// The role of a presented key, if it is valid and not revoked.
    pub fn verify(&self, presented: &str) -> Option<(String, Role)> {
        let rest = presented.strip_prefix("abi_")?;
        let (id, secret) = rest.split_once('_')?;
        let entry = self.keys.iter().find(|k| k.id == id && !k.revoked)?;
        ct_eq(&digest(&entry.salt, secret), &entry.hash).then(|| (entry.id.clone(), entry.role))
    }
}

/// The live key set: shared by gateway workers, reloaded without restart.
#[derive(Debug, Clone)]
pub struct KeyStore {
    path: PathBuf,
    keys: Arc<RwLock<KeysFile>>,
    /// Keys already verified against their salted hash: presented key →
    /// (id, role). Only valid keys enter, so it holds at most one entry per
    /// active key and cannot be grown by guessing; a reload clears it, which
    /// is what makes revocation effective. The map's SipHash (random keys per
    /// process) is the fast hash; the lookup compares the full key.
    verified: Arc<RwLock<Verified>>,
}

/// Presented key → (key id, role), for keys that passed the hash check.
type Verified = HashMap<Box<str>, (String, Role)>;

impl KeyStore {
    /// Loads `path`.
    pub fn open(path: &Path) -> Result<Self, KeysError> {
        Ok(Self {
            path: path.to_path_buf(),
            keys: Arc::new(RwLock::new(KeysFile::load(path)?)),
            verified: Arc::default(),
        })
    }

    /// Re-reads the file (SIGHUP, admin API); on error the old keys stay.
    pub fn reload(&self) -> Result<usize, KeysError> {
        let fresh = KeysFile::load(&self.path)?;
        let n = fresh.keys.iter().filter(|k| !k.revoked).count();
        // Both locks at once: no verification can cache a result of the old
        // key set after the new one is in place.
        let mut keys = self.keys.write();
        let mut verified = self.verified.write();
        *keys = fresh;
        verified.clear();
        Ok(n)
    }

    /// See [`KeysFile::verify`]; a key is hashed once, later requests hit the cache.
    pub fn verify(&self, presented: &str) -> Option<(String, Role)> {
        if let Some(hit) = self.verified.read().get(presented) {
            return Some(hit.clone());
        }
        let keys = self.keys.read();
        let found = keys.verify(presented)?;
        // Cached while the key set that verified it is still read-locked, so
        // a concurrent reload clears this entry after it is inserted.
        self.verified
            .write()
            .insert(presented.into(), found.clone());
        drop(keys);
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_verify_revoke_and_round_trip() {
        let mut f = KeysFile::default();
        let k = f.create(Role::Writer);
        assert!(k.starts_with("abi_"));
        let (id, role) = f.verify(&k).expect("valid");
        assert_eq!(role, Role::Writer);
        assert!(f.verify(&format!("{k}x")).is_none());
        assert!(f.verify("abi_nope_nope").is_none());
        assert!(f.verify("garbage").is_none());
        let text = toml::to_string(&f).expect("ser");
        assert!(
            !text.contains(k.rsplit('_').next().expect("secret")),
            "secret never stored"
        );
        let back: KeysFile = toml::from_str(&text).expect("de");
        assert!(back.verify(&k).is_some());
        assert!(f.revoke(&id));
        assert!(f.verify(&k).is_none());
        assert!(Role::Admin > Role::Writer && Role::Writer > Role::Reader);
    }

    #[test]
    fn store_caches_verified_keys_and_reload_revokes_them() {
        let path = std::env::temp_dir().join(format!(
            "abi-keys-cache-{}-{}.toml",
            std::process::id(),
            rand::random::<u32>()
        ));
        let mut f = KeysFile::default();
        let k = f.create(Role::Reader);
        f.save(&path).expect("save");
        let store = KeyStore::open(&path).expect("open");
        assert_eq!(store.verify(&k).map(|v| v.1), Some(Role::Reader));
        // Second call is served from the cache.
        assert_eq!(store.verify(&k).map(|v| v.1), Some(Role::Reader));
        assert_eq!(store.verified.read().len(), 1);
        // Wrong keys are never cached.
        assert!(store.verify(&format!("{k}0")).is_none());
        assert!(store.verify("abi_x_y").is_none());
        assert_eq!(store.verified.read().len(), 1);
        // Revocation + reload: the cached entry goes with it.
        let id = k.split('_').nth(1).expect("id").to_string();
        assert!(f.revoke(&id));
        f.save(&path).expect("save");
        store.reload().expect("reload");
        assert!(
            store.verify(&k).is_none(),
            "revoked key refused after reload"
        );
        let _ = std::fs::remove_file(&path);
    }
}
