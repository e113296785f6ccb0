//! Chat completion with a quantized llama-family model from a GGUF file.

pub mod generate;
pub mod llama;
pub mod model;
pub mod sampler;
pub mod template;
pub mod tokenizer;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::gguf_file::Content;

use crate::error::{EngineError, Result};
pub use generate::{Delta, FinishReason, GenerateParams, Generation, TokenInfo};
pub use model::CausalLm;
pub use sampler::{SamplingParams, TokenLogprob};
pub use template::Message;
pub use tokenizer::ChatTokenizer;

/// Which implementation runs the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// [`llama::QLlama`]: repacked quantized weights and SIMD kernels (the fast one).
    #[default]
    Native,
    /// candle-transformers' `quantized_llama` (kept as a cross-check).
    Candle,
}

/// A loaded chat model: tokenizer, template and weights with their KV cache.
pub struct ChatEngine {
    tokenizer: ChatTokenizer,
    model: Box<dyn CausalLm>,
    path: PathBuf,
}

impl ChatEngine {
    /// Loads a GGUF chat model (weights and tokenizer): with the native backend on the CPU,
    /// with candle's (its CUDA kernels) on a GPU.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let backend = if device.is_cpu() {
            Backend::Native
        } else {
            Backend::Candle
        };
        Self::load_with(path, device, backend)
    }

    /// Loads a GGUF chat model with the given backend.
    pub fn load_with(path: &Path, device: &Device, backend: Backend) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(|e| EngineError::load(path, e))?;
        let content = Content::read(&mut file).map_err(|e| EngineError::load(path, e))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        if arch != "llama" {
            return Err(EngineError::load(
                path,
                format!("architecture `{arch}` is not supported (llama only)"),
            ));
        }
        let tokenizer =
            ChatTokenizer::from_gguf(&content).map_err(|e| EngineError::load(path, e))?;
        #[cfg(feature = "cuda")]
        if device.is_cuda() {
            // candle's MMVQ/MMQ kernels quantize activations to Q8_1, which moves logits by up
            // to 1.55 from llama.cpp's reference (tests/cuda.rs); dequantizing the weights and
            // multiplying in f32 stays within 1.5. Process-wide in candle.
            candle_core::quantized::cuda::set_force_dmmv(true);
        }
        if backend == Backend::Native && !device.is_cpu() {
            return Err(EngineError::load(
                path,
                "the native backend runs on the CPU only (use the candle backend on a GPU)",
            ));
        }
        let model: Box<dyn CausalLm> = match backend {
            Backend::Native => Box::new(
                llama::QLlama::from_gguf(&content, &mut file)
                    .map_err(|e| EngineError::load(path, e))?,
            ),
            Backend::Candle => Box::new(
                model::CandleLlama::from_gguf(content, &mut file, device)
                    .map_err(|e| EngineError::load(path, e))?,
            ),
        };
        Ok(Self {
            tokenizer,
            model,
            path: path.to_path_buf(),
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// The model (for teacher-forced evaluation and benchmarks).
    pub fn model_mut(&mut self) -> &mut dyn CausalLm {
        self.model.as_mut()
    }

    /// Context length in tokens.
    pub fn context_length(&self) -> usize {
        self.model.context_length()
    }

    /// The GGUF file this engine came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renders `messages` with the chat template into prompt ids.
    pub fn render(&self, messages: &[Message]) -> Result<Vec<u32>> {
        Ok(template::render(&self.tokenizer, messages)?.0)
    }

    /// Generates a reply to `messages`.
    pub fn chat(
        &mut self,
        messages: &[Message],
        params: &GenerateParams,
        on_delta: impl FnMut(Delta) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let prompt = self.render(messages)?;
        generate::generate(
            self.model.as_mut(),
            &self.tokenizer,
            &prompt,
            params,
            on_delta,
        )
    }
}
