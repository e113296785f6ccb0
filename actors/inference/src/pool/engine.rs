//! A worker's loaded model and the synchronous work it does (run inside `spawn_blocking`).

use std::ops::ControlFlow;

use abi_protocol::health::Report;
use abi_protocol::inference::{
    ChatCompletion, ChatDelta, ChatRequest, FinishReason as WireFinish, InferenceError, ModelInfo,
    ModelKind, StepLogprobs, TokenLogprob as WireLogprob,
};
use candle_core::Device;

use super::catalog::ModelSource;
use crate::chat::{ChatEngine, FinishReason, GenerateParams, Message, SamplingParams, TokenInfo};
use crate::embed::Embedder;
use crate::error::EngineError;

/// A loaded model.
pub enum Engine {
    /// Sentence embeddings.
    Embed(Box<Embedder>),
    /// Chat.
    Chat(Box<ChatEngine>),
}

/// Maps engine errors to what callers see.
pub fn to_wire(e: EngineError) -> InferenceError {
    match e {
        EngineError::InvalidInput(m) | EngineError::Tokenizer(m) => InferenceError::InvalidInput(m),
        EngineError::ContextLength {
            prompt_tokens,
            context,
        } => InferenceError::ContextLength {
            prompt_tokens: prompt_tokens as u64,
            context: context as u64,
        },
        other => InferenceError::Internal(other.to_string()),
    }
}

fn to_wire_finish(f: FinishReason) -> WireFinish {
    match f {
        FinishReason::Stop => WireFinish::Stop,
        FinishReason::Length => WireFinish::Length,
        FinishReason::Cancelled => WireFinish::Cancelled,
    }
}

impl Engine {
    /// Loads the model `source` describes on `device`.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self, EngineError> {
        match source {
            ModelSource::Embedding(dir) => Ok(Self::Embed(Box::new(Embedder::load(dir, device)?))),
            ModelSource::Chat(path) => Ok(Self::Chat(Box::new(ChatEngine::load(path, device)?))),
            ModelSource::Unrecognised { dir, reason } => Err(EngineError::load(dir, reason)),
        }
    }

    /// What this engine serves.
    pub fn info(&self, id: &str) -> ModelInfo {
        match self {
            Self::Embed(e) => ModelInfo {
                id: id.to_string(),
                kind: ModelKind::Embedding,
                dim: Some(e.dim() as u32),
                context: None,
                unavailable: None,
                load: 0,
            },
            Self::Chat(c) => ModelInfo {
                id: id.to_string(),
                kind: ModelKind::Chat,
                dim: None,
                context: Some(c.context_length() as u32),
                unavailable: None,
                load: 0,
            },
        }
    }

    /// Proves the model works: one tiny embedding or a one-token forward pass.
    pub fn health(&mut self) -> Report {
        let outcome = match self {
            Self::Embed(e) => e.embed(&["ready"]).map(|v| {
                format!(
                    "embedded 1 text into {} dims",
                    v.first().map_or(0, |x| x.vector.len())
                )
            }),
            Self::Chat(c) => {
                let id = c.tokenizer().eos_id();
                c.model_mut()
                    .forward(&[id], 0)
                    .map(|l| format!("one-token forward gave {} logits", l.len()))
            }
        };
        match outcome {
            Ok(detail) => Report {
                ready: true,
                detail,
            },
            Err(e) => Report {
                ready: false,
                detail: e.to_string(),
            },
        }
    }

    /// Embeds every text of `inputs`.
    pub fn embed(
        &self,
        id: &str,
        inputs: &[&str],
    ) -> Result<Vec<crate::embed::Embedding>, InferenceError> {
        let Self::Embed(e) = self else {
            return Err(InferenceError::WrongKind {
                model: id.to_string(),
                kind: ModelKind::Chat,
            });
        };
        e.embed(inputs).map_err(to_wire)
    }

    /// Runs a chat completion, calling `on_delta` for streamed pieces (`false` = stop).
    pub fn chat(
        &mut self,
        id: &str,
        req: &ChatRequest,
        mut on_delta: impl FnMut(ChatDelta) -> bool,
    ) -> Result<ChatCompletion, InferenceError> {
        let Self::Chat(c) = self else {
            return Err(InferenceError::WrongKind {
                model: id.to_string(),
                kind: ModelKind::Embedding,
            });
        };
        let params = generate_params(req)?;
        let messages: Vec<Message> = req
            .messages
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        let want_logprobs = params.logprobs.is_some();
        // The callback runs while the engine is borrowed: it reads token texts from a shared table.
        let token_bytes = c.tokenizer().token_table();
        let step_logprobs = |t: &TokenInfo| -> Option<StepLogprobs> {
            let (chosen, top) = t.logprob.as_ref()?;
            let wire = |id: u32, lp: f32| {
                let bytes = token_bytes.get(id as usize).cloned().unwrap_or_default();
                WireLogprob {
                    token: String::from_utf8_lossy(&bytes).into_owned(),
                    bytes,
                    logprob: lp,
                }
            };
            Some(StepLogprobs {
                chosen: wire(chosen.id, chosen.logprob),
                top: top.iter().map(|x| wire(x.id, x.logprob)).collect(),
            })
        };
        let g = c
            .chat(&messages, &params, |d| {
                let delta = ChatDelta {
                    text: d.text,
                    logprobs: d.token.as_ref().and_then(step_logprobs),
                };
                if on_delta(delta) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })
            .map_err(to_wire)?;
        let collected: Vec<StepLogprobs> = g.tokens.iter().filter_map(step_logprobs).collect();
        Ok(ChatCompletion {
            text: g.text,
            finish_reason: to_wire_finish(g.finish),
            prompt_tokens: g.prompt_tokens as u64,
            completion_tokens: g.ids.len() as u64,
            logprobs: want_logprobs.then_some(collected),
        })
    }
}

/// Validates OpenAI-style parameters and turns them into engine parameters.
pub fn generate_params(req: &ChatRequest) -> Result<GenerateParams, InferenceError> {
    if req.messages.is_empty() {
        return Err(InferenceError::InvalidInput(
            "messages must not be empty".into(),
        ));
    }
    if !(0.0..=2.0).contains(&req.temperature) {
        return Err(InferenceError::InvalidInput(
            "temperature must be in [0, 2]".into(),
        ));
    }
    if !(req.top_p > 0.0 && req.top_p <= 1.0) {
        return Err(InferenceError::InvalidInput(
            "top_p must be in (0, 1]".into(),
        ));
    }
    if req.stop.len() > 4 {
        return Err(InferenceError::InvalidInput(
            "at most 4 stop strings".into(),
        ));
    }
    if req.max_tokens == Some(0) {
        return Err(InferenceError::InvalidInput(
            "max_tokens must be at least 1".into(),
        ));
    }
    if req
        .logprobs
        .is_some_and(|n| n as usize > crate::chat::generate::MAX_TOP_LOGPROBS)
    {
        return Err(InferenceError::InvalidInput(
            "top_logprobs must be at most 20".into(),
        ));
    }
    Ok(GenerateParams {
        max_tokens: req.max_tokens.map_or(usize::MAX, |m| m as usize),
        sampling: SamplingParams {
            temperature: req.temperature,
            top_p: req.top_p,
            seed: req.seed,
        },
        stop: req.stop.clone(),
        logprobs: req.logprobs.map(usize::from),
    })
}
