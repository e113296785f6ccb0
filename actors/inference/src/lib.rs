//! Inference on candle: sentence embeddings (BERT family) and chat (quantized llama from GGUF),
//! served by supervised pools of worker actors at `inference/<model-id>`.
//!
//! - [`embed`]: tokenizer + packed BERT encoder + sentence-transformers pooling.
//! - [`chat`]: GGUF tokenizer, chat template, quantized llama, sampling and the decoding loop.
//! - [`pool`]: the actors: a pool per model (queue, batching, dispatch, restarts, health)
//!   and its workers; [`child_spec`] is what the node binary starts.

pub mod chat;
pub mod device;
pub mod embed;
pub mod error;
mod native;
pub mod pool;
pub mod quant;

pub use device::DeviceSpec;
pub use error::{EngineError, Result};
pub use pool::{PoolConfig, PoolDecl, child_spec};
