//! Finding models: every folder of the models directory is a model whose id is the folder name.

use std::path::{Path, PathBuf};

use abi_protocol::inference::ModelKind;

/// Where a model's files are and what kind it looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A sentence-transformers folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    Embedding(PathBuf),
    /// A GGUF chat model (the file).
    Chat(PathBuf),
    /// A folder that holds neither: served as an unavailable model with this reason.
    Unrecognised {
        /// The folder.
        dir: PathBuf,
        /// Why it is not a model.
        reason: String,
    },
}

impl ModelSource {
    /// Size of the weights file in bytes (0 when unknown): what a GPU lease must hold.
    pub fn weights_bytes(&self) -> u64 {
        let file = match self {
            ModelSource::Embedding(dir) => dir.join("model.safetensors"),
            ModelSource::Chat(path) => path.clone(),
            ModelSource::Unrecognised { .. } => return 0,
        };
        std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
    }
}

/// One model found in the models directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// Model id = folder name.
    pub id: String,
    /// Its files.
    pub source: ModelSource,
}

impl ModelEntry {
    /// The kind the files suggest (`None` when unrecognised).
    pub fn kind(&self) -> Option<ModelKind> {
        match self.source {
            ModelSource::Embedding(_) => Some(ModelKind::Embedding),
            ModelSource::Chat(_) => Some(ModelKind::Chat),
            ModelSource::Unrecognised { .. } => None,
        }
    }
}

/// What the files at `path` are: a `.gguf` file is a chat model; a folder holding a `.gguf`
/// is too; a folder with `config.json`/`model.safetensors` is an embedding model.
pub fn classify(path: &Path) -> ModelSource {
    if path.is_file() && path.extension().is_some_and(|x| x == "gguf") {
        return ModelSource::Chat(path.to_path_buf());
    }
    if !path.is_dir() {
        return ModelSource::Unrecognised {
            dir: path.to_path_buf(),
            reason: "no such file or folder".into(),
        };
    }
    classify_dir(path)
}

fn classify_dir(dir: &Path) -> ModelSource {
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    ggufs.sort();
    if let Some(first) = ggufs.into_iter().next() {
        return ModelSource::Chat(first);
    }
    if dir.join("config.json").is_file() || dir.join("model.safetensors").exists() {
        return ModelSource::Embedding(dir.to_path_buf());
    }
    ModelSource::Unrecognised {
        dir: dir.to_path_buf(),
        reason: "neither a .gguf file nor config.json/model.safetensors".into(),
    }
}

/// Scans `models_dir`: one entry per sub-folder (hidden ones skipped), sorted by id.
/// A missing directory yields no models.
pub fn scan(models_dir: &Path) -> Vec<ModelEntry> {
    let Ok(rd) = std::fs::read_dir(models_dir) else {
        return Vec::new();
    };
    let mut out: Vec<ModelEntry> = rd
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let id = e.file_name().to_str()?.to_string();
            if id.starts_with('.') {
                return None;
            }
            Some(ModelEntry {
                source: classify_dir(&e.path()),
                id,
            })
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_folders() {
        let root = std::env::temp_dir().join(format!("abi-cat-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in ["emb", "chat", "junk", ".hidden"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(root.join("emb/config.json"), "{}").expect("write");
        std::fs::write(root.join("chat/m.gguf"), "x").expect("write");
        let found = scan(&root);
        let ids: Vec<&str> = found.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["chat", "emb", "junk"]);
        assert_eq!(found[0].kind(), Some(ModelKind::Chat));
        assert_eq!(found[1].kind(), Some(ModelKind::Embedding));
        assert_eq!(found[2].kind(), None);
        assert!(scan(&root.join("nope")).is_empty());
        std::fs::remove_dir_all(&root).ok();
    }
}
