//! Errors of the inference engines (loading models, tokenizing, running them).

use std::path::PathBuf;

/// Why an engine could not load a model or serve a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A model file is missing, unreadable or not what it claims to be.
    #[error("cannot load model from {path}: {reason}")]
    Load {
        /// The file or folder that failed.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The tokenizer rejected the text or could not be built.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The request itself is unacceptable (empty input, bad parameter).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The prompt (plus the tokens asked for) does not fit the model's context.
    #[error("prompt has {prompt_tokens} tokens; this model's context holds {context} tokens")]
    ContextLength {
        /// Tokens in the rendered prompt.
        prompt_tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// The configured device cannot be used (not in this build, no such GPU, no driver).
    #[error("device {device}: {reason}")]
    Device {
        /// The device as configured, e.g. `cuda:0`.
        device: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A tensor operation failed (shape mismatch, out of memory).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl EngineError {
    /// Builds a [`EngineError::Load`] for `path`.
    pub fn load(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Self::Load {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Result alias for engine operations.
pub type Result<T> = std::result::Result<T, EngineError>;
