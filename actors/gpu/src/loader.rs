//! Plugin discovery and loading with clear reasons for every plugin that is skipped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use abi_sdk::host::{Plugin, TableError};
use abi_sdk::{BackendError, DeviceInfo};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `[plugins]` section of the topology: where to look, what must load, optional pins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Directories searched (in order). Empty = [`default_plugin_dirs`].
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// Backend names that must load, else start-up fails (e.g. `["cpu"]`).
    #[serde(default)]
    pub require: Vec<String>,
    /// File name -> `sha256:<hex>` (or bare hex); a pinned file whose digest differs is refused.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
}

/// Why one plugin file was not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Io(String),
    /// The pin is not `sha256:<64 hex>`.
    #[error("pin `{0}` is not of the form sha256:<64 hex digits>")]
    BadPin(String),
    /// The file's digest is not the pinned one.
    #[error("sha256 mismatch: pinned {expected}, file has {actual}")]
    PinMismatch {
        /// Pinned digest.
        expected: String,
        /// Actual digest.
        actual: String,
    },
    /// The file is not a complete shared object (checked before dlopen).
    #[error("corrupt library: {0}")]
    Corrupt(String),
    /// dlopen failed (not a shared object, missing dependency).
    #[error("cannot load shared library: {0}")]
    Open(String),
    /// The entry symbol is absent.
    #[error("missing symbol: {0}")]
    MissingSymbol(String),
    /// The descriptor was refused (version, size, null fields).
    #[error("descriptor refused: {0}")]
    Table(TableError),
    /// `init` failed or panicked.
    #[error("init failed: {0}")]
    Init(BackendError),
    /// Enumerating devices failed.
    #[error("device enumeration failed: {0}")]
    Devices(BackendError),
    /// Another file already provides this backend name.
    #[error("backend `{name}` already loaded from {first}")]
    Duplicate {
        /// Backend name.
        name: String,
        /// The file that won.
        first: String,
    },
}

/// A plugin that loaded and initialised.
#[derive(Debug, Clone)]
pub struct LoadedPlugin {
    /// File it came from.
    pub path: PathBuf,
    /// Hex sha256 of the file.
    pub sha256: String,
    /// The validated, initialised plugin.
    pub plugin: Plugin,
    /// Its devices at load time.
    pub devices: Vec<DeviceInfo>,
}

/// A plugin file that was skipped, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// The reason.
    pub reason: PluginError,
}

/// Everything found in the plugin dirs.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Loaded, in discovery order, one per backend name.
    pub loaded: Vec<LoadedPlugin>,
    /// Skipped with reasons.
    pub skipped: Vec<Skipped>,
}

/// Start-up must fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// A required backend did not load.
    #[error("required plugin `{name}` did not load: {reason}")]
    RequiredMissing {
        /// Backend name.
        name: String,
        /// Why (skip reasons of candidate files, or "not found in ...").
        reason: String,
    },
}

/// `plugins/` beside the running binary, then the binary's own folder (so that
/// `cargo build --workspace` followed by `abi-node run` finds the plugins in target/<profile>).
pub fn default_plugin_dirs() -> Vec<PathBuf> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let Some(dir) = exe.parent() else {
        return Vec::new();
    };
    vec![dir.join("plugins"), dir.to_path_buf()]
}

fn sha256_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

fn parse_pin(pin: &str) -> Result<String, PluginError> {
    let hex = pin
        .strip_prefix("sha256:")
        .unwrap_or(pin)
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(PluginError::BadPin(pin.to_string()))
    }
}

/// Loads one plugin file: pin check, dlopen, symbol, table checks, init, device list.
pub fn load_plugin(path: &Path, pin: Option<&str>) -> Result<LoadedPlugin, PluginError> {
    let bytes = std::fs::read(path).map_err(|e| PluginError::Io(e.to_string()))?;
    let sha256 = sha256_of(&bytes);
    if let Some(pin) = pin {
        let expected = parse_pin(pin)?;
        if expected != sha256 {
            return Err(PluginError::PinMismatch {
                expected,
                actual: sha256,
            });
        }
    }
    if cfg!(target_os = "linux") {
        crate::elf::check(&bytes).map_err(PluginError::Corrupt)?;
    }
    drop(bytes);
    let plugin = crate::dl::open(path)?;
    plugin.init().map_err(PluginError::Init)?;
    let devices = plugin.devices().map_err(PluginError::Devices)?;
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        sha256,
        plugin,
        devices,
    })
}

/// Plugin candidates in `dir`: every shared library; in the binary's own folder only files
/// named like our plugins (`*abi_plugin*`), so unrelated libraries there are not opened.
fn candidates(dir: &Path, only_abi_named: bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                return false;
            };
            name.starts_with(std::env::consts::DLL_PREFIX)
                && name.ends_with(std::env::consts::DLL_SUFFIX)
                && (!only_abi_named || name.contains("abi_plugin"))
        })
        .collect();
    out.sort();
    out
}

/// Loads every plugin in the configured dirs (or the defaults). Files that fail are reported in
/// `skipped`; only a missing required backend is an error.
pub fn load_all(cfg: &PluginConfig) -> Result<LoadReport, LoadError> {
    let explicit = !cfg.dirs.is_empty();
    let dirs = if explicit {
        cfg.dirs.clone()
    } else {
        default_plugin_dirs()
    };
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let mut report = LoadReport::default();
    let mut seen_files = std::collections::HashSet::new();
    for dir in &dirs {
        let only_abi = !explicit && exe_dir.as_deref() == Some(dir.as_path());
        for path in candidates(dir, only_abi) {
            let canon = path.canonicalize().unwrap_or_else(|_| path.clone());
            if !seen_files.insert(canon) {
                continue;
            }
            let file_name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let pin = cfg.pins.get(&file_name).map(String::as_str);
            match load_plugin(&path, pin) {
                Ok(lp) => {
                    if let Some(first) = report
                        .loaded
                        .iter()
                        .find(|l| l.plugin.name() == lp.plugin.name())
                    {
                        report.skipped.push(Skipped {
                            path,
                            reason: PluginError::Duplicate {
                                name: lp.plugin.name().to_string(),
                                first: first.path.display().to_string(),
                            },
                        });
                    } else {
                        tracing::info!(
                            plugin = lp.plugin.name(),
                            path = %lp.path.display(),
                            devices = lp.devices.len(),
                            "backend plugin loaded"
                        );
                        report.loaded.push(lp);
                    }
                }
                Err(reason) => {
                    tracing::warn!(path = %path.display(), %reason, "backend plugin skipped");
                    report.skipped.push(Skipped { path, reason });
                }
            }
        }
    }
    for name in &cfg.require {
        if report.loaded.iter().any(|l| l.plugin.name() == name) {
            continue;
        }
        let related: Vec<String> = report
            .skipped
            .iter()
            .filter(|s| {
                s.path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.contains(name.as_str()))
            })
            .map(|s| format!("{}: {}", s.path.display(), s.reason))
            .collect();
        let reason = if related.is_empty() {
            format!(
                "no plugin provides it in {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            related.join("; ")
        };
        return Err(LoadError::RequiredMissing {
            name: name.clone(),
            reason,
        });
    }
    Ok(report)
}

/// Human-readable descriptor and device list of one plugin file (`abi-node plugin inspect`).
pub fn inspect(path: &Path) -> Result<String, PluginError> {
    let lp = load_plugin(path, None)?;
    let p = &lp.plugin;
    let mut s = String::new();
    let _ = writeln!(s, "file:         {}", path.display());
    let _ = writeln!(s, "sha256:       {}", lp.sha256);
    let _ = writeln!(s, "backend:      {}", p.name());
    let _ = writeln!(s, "version:      {}", p.version());
    let _ = writeln!(
        s,
        "abi_version:  {} (host supports {}..={})",
        p.abi_version(),
        abi_sdk::ffi::ABI_VERSION_MIN,
        abi_sdk::ffi::ABI_VERSION
    );
    let _ = writeln!(s, "struct_size:  {} bytes", p.struct_size());
    let _ = writeln!(
        s,
        "health_check: {}",
        if p.has_health_check() {
            "plugin"
        } else {
            "host fallback (vector_add)"
        }
    );
    let _ = writeln!(s, "devices:      {}", lp.devices.len());
    for (i, d) in lp.devices.iter().enumerate() {
        let _ = writeln!(
            s,
            "  [{i}] {} ({}), memory {} / {} bytes free, ops: {}",
            d.name,
            d.kind.name(),
            d.memory_free,
            d.memory_total,
            d.op_names().join(", ")
        );
    }
    Ok(s)
}
