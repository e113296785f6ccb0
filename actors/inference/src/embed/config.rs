//! The sentence-transformers description of an embedding model: how to pool and whether to normalise.

use std::path::Path;

use serde::Deserialize;

use crate::error::{EngineError, Result};

/// How token states become one sentence vector (`1_Pooling/config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over the sequence's tokens (MiniLM).
    Mean,
    /// The `[CLS]` token's state.
    Cls,
    /// Element-wise maximum over the tokens.
    Max,
}

/// What sentence-transformers would do around the transformer.
#[derive(Debug, Clone)]
pub struct SentenceConfig {
    /// Pooling mode.
    pub pooling: Pooling,
    /// Whether a `Normalize` module follows (L2 normalisation).
    pub normalize: bool,
    /// Truncation length in tokens (`sentence_bert_config.json`'s `max_seq_length`).
    pub max_seq_length: usize,
}

#[derive(Deserialize)]
struct PoolingFile {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
}

#[derive(Deserialize)]
struct SbertFile {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| EngineError::load(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(EngineError::load(path, e)),
    }
}

impl SentenceConfig {
    /// Reads `modules.json`, the pooling config and `sentence_bert_config.json` from `dir`.
    /// Without them, defaults to mean pooling + L2 (the sentence-transformers default for BERT),
    /// truncated at `max_positions`.
    pub fn read(dir: &Path, max_positions: usize) -> Result<Self> {
        let modules: Vec<ModuleEntry> = read_json(&dir.join("modules.json"))?.unwrap_or_default();
        let pooling_dir = modules
            .iter()
            .find(|m| m.kind.ends_with(".Pooling"))
            .map(|m| m.path.clone())
            .unwrap_or_else(|| "1_Pooling".to_string());
        let normalize =
            modules.is_empty() || modules.iter().any(|m| m.kind.ends_with(".Normalize"));
        let pooling_path = dir.join(&pooling_dir).join("config.json");
        let pooling = match read_json::<PoolingFile>(&pooling_path)? {
            None => Pooling::Mean,
            Some(p) if p.pooling_mode_mean_tokens => Pooling::Mean,
            Some(p) if p.pooling_mode_cls_token => Pooling::Cls,
            Some(p) if p.pooling_mode_max_tokens => Pooling::Max,
            Some(_) => {
                return Err(EngineError::load(
                    pooling_path,
                    "no supported pooling mode (mean, cls, max) is enabled",
                ));
            }
        };
        let sbert: Option<SbertFile> = read_json(&dir.join("sentence_bert_config.json"))?;
        let max_seq_length = sbert
            .and_then(|s| s.max_seq_length)
            .unwrap_or(max_positions)
            .min(max_positions);
        Ok(Self {
            pooling,
            normalize,
            max_seq_length,
        })
    }
}
