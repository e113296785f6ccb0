//! The topology: what runs where, declared in TOML.
//!
//! Loading is two-phase so that an operator sees *every* mistake at once:
//! 1. [`schema`] walks the parsed document (with spans) and reports unknown
//!    keys (with "did you mean"), wrong types and missing keys;
//! 2. the document is deserialised into [`model::Topology`] and [`check`]
//!    validates it as a whole (duplicate names, port clashes, placement on
//!    unknown nodes, missing model or plugin paths).
//!
//! Each problem is a [`Diagnostic`] with `file:line:column` and a hint.

pub mod check;
pub mod diagnostic;
pub mod model;
pub mod schema;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Diagnostics};
pub use model::*;

/// The embedded single-node default (`configs/single-node.toml`).
pub const DEFAULT_TOPOLOGY: &str = include_str!("../../../configs/single-node.toml");

/// Name shown in diagnostics for the embedded default.
pub const DEFAULT_TOPOLOGY_NAME: &str = "<embedded single-node default>";

/// A loaded topology and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated model.
    pub topology: Topology,
    /// The file it came from (None for the embedded default).
    pub path: Option<PathBuf>,
}

/// Reads, validates and returns the topology in `path`.
pub fn load_file(path: &Path) -> Result<Loaded, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Diagnostics(vec![Diagnostic::whole_file(
            path.display().to_string(),
            format!("cannot read: {e}"),
            Some("check the path given with --config".into()),
        )])
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let topology = parse(&path.display().to_string(), &text, &base)?;
    Ok(Loaded {
        topology,
        path: Some(path.to_path_buf()),
    })
}

/// The embedded single-node default.
pub fn load_default() -> Result<Loaded, Diagnostics> {
    let topology = parse(DEFAULT_TOPOLOGY_NAME, DEFAULT_TOPOLOGY, Path::new("."))?;
    Ok(Loaded {
        topology,
        path: None,
    })
}

/// Parses and validates topology text. `base` resolves relative paths.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<Topology, Diagnostics> {
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
    let mut diags = Diagnostics::default();
    for e in syntax {
        diags.push(Diagnostic::at_span(
            file,
            text,
            e.span(),
            format!("TOML syntax error: {}", e.message().trim()),
            None,
        ));
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    schema::validate(file, text, doc.get_ref(), &mut diags);
    if !diags.is_empty() {
        return Err(diags);
    }
    let topology: Topology = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            diags.push(Diagnostic::at_span(
                file,
                text,
                e.span(),
                e.message().trim().to_string(),
                None,
            ));
            return Err(diags);
        }
    };
    check::semantic(file, text, doc.get_ref(), &topology, base, &mut diags);
    if diags.is_empty() {
        Ok(topology)
    } else {
        Err(diags)
    }
}
