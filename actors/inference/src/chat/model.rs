//! The causal language model behind the chat engine, reduced to what generation needs.

use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};

use crate::error::{EngineError, Result};

/// A decoder-only model with a KV cache.
pub trait CausalLm: Send {
    /// Feeds `ids` at positions `pos..pos+len` (position 0 starts a fresh sequence and drops the
    /// cache) and returns the logits after the last one.
    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Vec<f32>>;
    /// Longest sequence (prompt + generated) the model can attend over.
    fn context_length(&self) -> usize;
}

/// candle's quantized llama (`quantized_llama::ModelWeights`) from a GGUF file.
pub struct CandleLlama {
    weights: ModelWeights,
    device: Device,
    context: usize,
}

impl CandleLlama {
    /// Loads the weights the GGUF `content` describes, reading tensors from `reader`.
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        let ctx = content
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |c| c as usize)
            .min(MAX_SEQ_LEN);
        let weights = ModelWeights::from_gguf(content, reader, device)?;
        Ok(Self {
            weights,
            device: device.clone(),
            context: ctx,
        })
    }
}

impl CausalLm for CandleLlama {
    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Vec<f32>> {
        if ids.is_empty() {
            return Err(EngineError::InvalidInput("forward of zero tokens".into()));
        }
        if pos + ids.len() > self.context {
            return Err(EngineError::ContextLength {
                prompt_tokens: pos + ids.len(),
                context: self.context,
            });
        }
        let input = Tensor::new(ids, &self.device)?.unsqueeze(0)?;
        let logits = self.weights.forward(&input, pos)?;
        Ok(logits.squeeze(0)?.to_vec1::<f32>()?)
    }

    fn context_length(&self) -> usize {
        self.context
    }
}
