//! Locating the model files and the shared reference data for the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The models folder: `$ABI_MODELS_DIR` or `<repo>/models` (filled by scripts/fetch-models.sh).
pub fn models_dir() -> PathBuf {
    std::env::var_os("ABI_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("models"))
}

/// A model folder, with a clear failure when fetch-models.sh has not run.
pub fn model(id: &str) -> PathBuf {
    let dir = models_dir().join(id);
    assert!(
        dir.is_dir(),
        "{} missing: run scripts/fetch-models.sh first",
        dir.display()
    );
    dir
}

/// `<shared>/data/inference`: `$ABI_SHARED_DATA/inference` or `<repo>/../shared/data/inference`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("ABI_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/data"))
        .join("inference")
}

/// Reads a JSON-lines file.
pub fn read_jsonl(name: &str) -> Vec<serde_json::Value> {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("reference data is valid JSON"))
        .collect()
}

/// Reads a raw little-endian f32 matrix with `dim` columns.
pub fn read_f32_rows(name: &str, dim: usize) -> Vec<Vec<f32>> {
    let path = data_dir().join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let flat: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    flat.chunks_exact(dim).map(<[f32]>::to_vec).collect()
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}
