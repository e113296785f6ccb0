//! Messages of the inference pools (`inference/<model-id>`): embeddings, chat (whole or
//! streamed by polling), and the errors a caller can get back.
//!
//! Streaming is pull-based so that it crosses nodes like any other ask: `ChatOpen` starts a
//! generation and returns a stream id; `ChatPoll` answers as soon as new text exists (or the
//! generation ended); `ChatCancel` (or no poll for a while) stops the generation.

use serde::{Deserialize, Serialize};

use crate::Request;

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelKind {
    /// Sentence embeddings.
    Embedding,
    /// Chat completion.
    Chat,
}

/// Why an inference request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
pub enum InferenceError {
    /// The pool's queue is full: retry later (HTTP 429 + Retry-After).
    #[error("model {model} is overloaded (queue full); retry after {retry_after_ms} ms")]
    Overloaded {
        /// Model id.
        model: String,
        /// Suggested wait.
        retry_after_ms: u64,
    },
    /// The request is malformed (empty input, bad parameter, bad role).
    #[error("invalid request: {0}")]
    InvalidInput(String),
    /// The prompt does not fit the context.
    #[error("prompt has {prompt_tokens} tokens; the model's context holds {context}")]
    ContextLength {
        /// Prompt tokens.
        prompt_tokens: u64,
        /// Context length.
        context: u64,
    },
    /// The model could not be loaded (missing or corrupt file).
    #[error("model {model} is unavailable: {reason}")]
    Unavailable {
        /// Model id.
        model: String,
        /// Path and reason.
        reason: String,
    },
    /// The model exists but does another kind of work.
    #[error("model {model} is a {kind:?} model")]
    WrongKind {
        /// Model id.
        model: String,
        /// Its kind.
        kind: ModelKind,
    },
    /// The worker running the request crashed; it is being restarted.
    #[error("inference worker failed: {0}")]
    WorkerFailed(String),
    /// No such stream (finished, cancelled or never opened).
    #[error("unknown stream {0}")]
    UnknownStream(u64),
    /// Anything else.
    #[error("internal error: {0}")]
    Internal(String),
}

impl InferenceError {
    /// Stable snake_case code for HTTP error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Overloaded { .. } => "overloaded",
            Self::InvalidInput(_) => "invalid_request",
            Self::ContextLength { .. } => "context_length_exceeded",
            Self::Unavailable { .. } => "model_unavailable",
            Self::WrongKind { .. } => "wrong_model_kind",
            Self::WorkerFailed(_) => "worker_failed",
            Self::UnknownStream(_) => "unknown_stream",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// Embeds `inputs` (each a text), in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Embed {
    /// Texts to embed (non-empty list).
    pub inputs: Vec<String>,
}

/// Vectors for an [`Embed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens consumed (after truncation), for usage reporting.
    pub prompt_tokens: u64,
}

impl Request for Embed {
    type Reply = Result<Embeddings, InferenceError>;
    const TYPE: &'static str = "inference.embed";
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// A chat completion request (OpenAI's parameters that the engine honours).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate (`None`: up to the context).
    pub max_tokens: Option<u32>,
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Sampling seed.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Vec<String>,
    /// `Some(n)`: report log-probabilities with `n` (0..=20) alternatives.
    pub logprobs: Option<u8>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context.
    Length,
    /// Cancelled by the caller.
    Cancelled,
}

/// A token with its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// Token text (lossy UTF-8 of its bytes).
    pub token: String,
    /// Raw bytes.
    pub bytes: Vec<u8>,
    /// Natural-log probability.
    pub logprob: f32,
}

/// Log-probability of a generated token and the best alternatives at that step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLogprobs {
    /// The generated token.
    pub chosen: TokenLogprob,
    /// Best alternatives, most likely first.
    pub top: Vec<TokenLogprob>,
}

/// A whole completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// Generated text.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Per-token log-probabilities, when asked for.
    pub logprobs: Option<Vec<StepLogprobs>>,
}

/// Runs a chat completion and answers with all of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Chat(pub ChatRequest);

impl Request for Chat {
    type Reply = Result<ChatCompletion, InferenceError>;
    const TYPE: &'static str = "inference.chat";
}

/// Starts a streamed chat completion; answers with the stream id to poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatOpen(pub ChatRequest);

impl Request for ChatOpen {
    type Reply = Result<u64, InferenceError>;
    const TYPE: &'static str = "inference.chat_open";
}

/// Waits for the next text of stream `stream` (answers at once when some is ready).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatPoll {
    /// Stream id from [`ChatOpen`].
    pub stream: u64,
}

/// A piece of a streamed completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    /// Text to append (may be empty for a token whose text is not final yet).
    pub text: String,
    /// The token's log-probabilities, when asked for.
    pub logprobs: Option<StepLogprobs>,
}

/// What a poll returns: new deltas and, at the end, the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// New pieces, in order.
    pub deltas: Vec<ChatDelta>,
    /// Set once: the generation ended (the stream is then gone).
    pub finished: Option<ChatFinished>,
}

/// End-of-stream summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatFinished {
    /// Why it ended, or the error that ended it.
    pub outcome: Result<FinishReason, InferenceError>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
}

impl Request for ChatPoll {
    type Reply = Result<ChatChunk, InferenceError>;
    const TYPE: &'static str = "inference.chat_poll";
}

/// Stops a streamed generation (the client went away).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatCancel {
    /// Stream id.
    pub stream: u64,
}

impl Request for ChatCancel {
    type Reply = ();
    const TYPE: &'static str = "inference.chat_cancel";
}

/// Asks a pool what it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Describe;

/// A pool's self-description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model id (its folder name).
    pub id: String,
    /// What it does.
    pub kind: ModelKind,
    /// Embedding width, for embedding models.
    pub dim: Option<u32>,
    /// Context length, for chat models.
    pub context: Option<u32>,
    /// Set when the model failed to load.
    pub unavailable: Option<String>,
    /// Requests queued or running right now (gateways pick the least loaded pool).
    #[serde(default)]
    pub load: u32,
}

impl Request for Describe {
    type Reply = ModelInfo;
    const TYPE: &'static str = "inference.describe";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_codec() {
        let req = ChatOpen(ChatRequest {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            }],
            max_tokens: Some(4),
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            stop: vec!["\n".into()],
            logprobs: Some(2),
        });
        let bytes = crate::codec::encode(ChatOpen::TYPE, &req).expect("encode");
        let back: ChatOpen = crate::codec::decode(ChatOpen::TYPE, &bytes).expect("decode");
        assert_eq!(back.0, req.0);
        let err: <Embed as Request>::Reply = Err(InferenceError::Overloaded {
            model: "m".into(),
            retry_after_ms: 100,
        });
        let bytes = crate::codec::encode(Embed::TYPE, &err).expect("encode");
        let back: <Embed as Request>::Reply =
            crate::codec::decode(Embed::TYPE, &bytes).expect("decode");
        assert_eq!(back, err);
    }
}
