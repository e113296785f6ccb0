//! Sentence embeddings with BERT-family encoders (all-MiniLM-L6-v2 and kin), as
//! sentence-transformers computes them: WordPiece with truncation at the model's max length,
//! the encoder, pooling, L2 normalisation.

pub mod bert;
pub mod config;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use tokenizers::{Tokenizer, TruncationParams};

use crate::error::{EngineError, Result};
pub use config::{Pooling, SentenceConfig};

/// Token budget of one packed forward pass: bounds memory and keeps attention batches cache-sized.
const TOKENS_PER_PASS: usize = 4096;

/// A loaded embedding model: tokenizer, encoder and pooling recipe.
pub struct Embedder {
    tokenizer: Tokenizer,
    model: bert::PackedBert,
    config: SentenceConfig,
    device: Device,
    dir: PathBuf,
    /// Batched padded attention (GPUs) instead of one attention per sequence (CPU).
    padded_attention: bool,
}

/// One embedded input: the vector and how many tokens it used (after truncation).
#[derive(Debug, Clone)]
pub struct Embedding {
    /// The sentence vector.
    pub vector: Vec<f32>,
    /// Tokens fed to the model, `[CLS]` and `[SEP]` included.
    pub tokens: usize,
}

impl Embedder {
    /// Loads `config.json`, `model.safetensors`, `tokenizer.json` and the sentence-transformers
    /// files from `dir`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| EngineError::load(&config_path, e))?;
        let cfg: candle_transformers::models::bert::Config =
            serde_json::from_str(&text).map_err(|e| EngineError::load(&config_path, e))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(EngineError::load(&weights, "file not found"));
        }
        let vb = crate::native::safetensors_var_builder(&weights, DType::F32, device)?;
        let model = bert::PackedBert::load(vb, &cfg).map_err(|e| EngineError::load(&weights, e))?;
        let config = SentenceConfig::read(dir, model.max_positions())?;
        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tok_path).map_err(|e| EngineError::load(&tok_path, e))?;
        // The packaged tokenizer.json truncates and pads to 128; sentence-transformers truncates
        // at max_seq_length and pads per batch (we do not pad at all).
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| EngineError::load(&tok_path, e))?;
        tokenizer.with_padding(None);
        Ok(Self {
            tokenizer,
            model,
            config,
            device: device.clone(),
            dir: dir.to_path_buf(),
            padded_attention: !device.is_cpu(),
        })
    }

    /// Chooses batched padded attention (the default on GPUs) or one attention per sequence
    /// (the default on the CPU, where padding is wasted work); results agree either way.
    pub fn set_padded_attention(&mut self, padded: bool) {
        self.padded_attention = padded;
    }

    /// Output dimension.
    pub fn dim(&self) -> usize {
        self.model.hidden_size()
    }

    /// Where the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The pooling recipe in use.
    pub fn sentence_config(&self) -> &SentenceConfig {
        &self.config
    }

    /// Token ids for `texts` as the model will see them (special tokens added, truncated).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        texts
            .iter()
            .map(|t| {
                self.tokenizer
                    .encode(*t, true)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| EngineError::Tokenizer(e.to_string()))
            })
            .collect()
    }

    /// Embeds `texts`, in order.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedding>> {
        let ids = self.tokenize(texts)?;
        self.embed_ids(&ids)
    }

    /// Embeds already tokenized inputs, in order. Inputs are grouped by length and packed, so
    /// no padding is ever computed.
    pub fn embed_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Embedding>> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        let mut out: Vec<Option<Embedding>> = vec![None; ids.len()];
        let mut start = 0;
        while start < order.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < order.len()
                && (end == start || tokens + ids[order[end]].len() <= TOKENS_PER_PASS)
            {
                tokens += ids[order[end]].len();
                end += 1;
            }
            let chunk: Vec<Vec<u32>> = order[start..end].iter().map(|&i| ids[i].clone()).collect();
            let lens: Vec<usize> = chunk.iter().map(Vec::len).collect();
            let packed = self
                .model
                .forward_packed(&chunk, &self.device, self.padded_attention)?;
            let vectors = bert::pool(&packed, &lens, self.config.pooling, self.config.normalize)?;
            for ((&i, vector), len) in order[start..end].iter().zip(vectors).zip(lens) {
                out[i] = Some(Embedding {
                    vector,
                    tokens: len,
                });
            }
            start = end;
        }
        Ok(out.into_iter().flatten().collect())
    }
}
