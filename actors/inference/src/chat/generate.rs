//! The decoding loop: prompt prefill, one token at a time with the KV cache, stop conditions
//! (EOS, stop strings, max_tokens, cancellation), text deltas safe to stream.

use std::ops::ControlFlow;

use super::model::CausalLm;
use super::sampler::{Sampler, SamplingParams, TokenLogprob, log_softmax, top_n};
use super::tokenizer::ChatTokenizer;
use crate::error::{EngineError, Result};

/// Most alternatives OpenAI's `top_logprobs` allows.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What one generation is asked to do.
#[derive(Debug, Clone, Default)]
pub struct GenerateParams {
    /// Most tokens to generate (clipped to what the context leaves).
    pub max_tokens: usize,
    /// Token choice.
    pub sampling: SamplingParams,
    /// Generation ends before any of these strings; they are not part of the text.
    pub stop: Vec<String>,
    /// `Some(n)`: report each token's log-probability and the `n` best alternatives.
    pub logprobs: Option<usize>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context is full.
    Length,
    /// The caller asked to stop (client gone).
    Cancelled,
}

/// One generated token as reported to the caller.
#[derive(Debug, Clone)]
pub struct TokenInfo {
    /// Token id.
    pub id: u32,
    /// Its raw bytes (may be part of a UTF-8 character).
    pub bytes: Vec<u8>,
    /// Its log-probability and the best alternatives, when asked for.
    pub logprob: Option<(TokenLogprob, Vec<TokenLogprob>)>,
}

/// A streaming event: the text that became final with this token (may be empty while a stop
/// string or a UTF-8 character is still incomplete) and the token.
#[derive(Debug, Clone)]
pub struct Delta {
    /// Text to append.
    pub text: String,
    /// The token (absent on the final flush).
    pub token: Option<TokenInfo>,
}

/// A finished generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids (EOS included when produced).
    pub ids: Vec<u32>,
    /// Final text (stop string and EOS excluded).
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Per-token details, in order (empty unless `logprobs` was asked for).
    pub tokens: Vec<TokenInfo>,
}

/// Earliest match of any stop string in `hay`, searching from `from`.
fn find_stop(hay: &[u8], stops: &[String], from: usize) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| {
            let s = s.as_bytes();
            let start = from.saturating_sub(s.len() - 1);
            hay.get(start..)?
                .windows(s.len())
                .position(|w| w == s)
                .map(|p| p + start)
        })
        .min()
}

/// Length of the longest suffix of `hay` that is a proper prefix of a stop string: those bytes
/// may still become a stop and must not be streamed yet.
fn held_back(hay: &[u8], stops: &[String]) -> usize {
    stops
        .iter()
        .map(|s| {
            let s = s.as_bytes();
            (1..s.len().min(hay.len() + 1))
                .rev()
                .find(|&k| hay.ends_with(&s[..k]))
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// End of the longest prefix of `bytes[from..to]` that does not cut a UTF-8 character.
fn utf8_cut(bytes: &[u8], from: usize, to: usize) -> usize {
    match std::str::from_utf8(&bytes[from..to]) {
        Ok(_) => to,
        Err(e) if e.error_len().is_none() => from + e.valid_up_to(),
        Err(_) => to,
    }
}

/// Runs one generation over `prompt` (token ids), calling `on_delta` as text becomes final.
/// `on_delta` returning `Break` cancels (the client went away).
pub fn generate(
    model: &mut dyn CausalLm,
    tok: &ChatTokenizer,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_delta: impl FnMut(Delta) -> ControlFlow<()>,
) -> Result<Generation> {
    let context = model.context_length();
    if prompt.is_empty() {
        return Err(EngineError::InvalidInput("empty prompt".into()));
    }
    if prompt.len() >= context {
        return Err(EngineError::ContextLength {
            prompt_tokens: prompt.len(),
            context,
        });
    }
    if params.logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
        return Err(EngineError::InvalidInput(format!(
            "top_logprobs must be at most {MAX_TOP_LOGPROBS}"
        )));
    }
    let max_tokens = params.max_tokens.min(context - prompt.len());
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut ids = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    let mut emitted = 0;
    let mut tokens = Vec::new();
    let mut finish = FinishReason::Length;
    let mut logits = if max_tokens > 0 {
        model.forward(prompt, 0)?
    } else {
        Vec::new()
    };
    for step in 0..max_tokens {
        let id = sampler.sample(&logits);
        let logprob = params.logprobs.map(|n| {
            let lp = log_softmax(&logits);
            let chosen = TokenLogprob {
                id,
                logprob: lp.get(id as usize).copied().unwrap_or(f32::NEG_INFINITY),
            };
            (chosen, top_n(&lp, n))
        });
        ids.push(id);
        if id == tok.eos_id() {
            finish = FinishReason::Stop;
            break;
        }
        let tb = tok.token_bytes(id).to_vec();
        let before = bytes.len();
        bytes.extend_from_slice(&tb);
        let info = TokenInfo {
            id,
            bytes: tb,
            logprob,
        };
        if params.logprobs.is_some() {
            tokens.push(info.clone());
        }
        if let Some(at) = find_stop(&bytes, &params.stop, before) {
            bytes.truncate(at);
            finish = FinishReason::Stop;
            break;
        }
        let safe = bytes.len() - held_back(&bytes, &params.stop);
        let cut = utf8_cut(&bytes, emitted, safe.max(emitted));
        let text = String::from_utf8_lossy(&bytes[emitted..cut]).into_owned();
        emitted = cut;
        if on_delta(Delta {
            text,
            token: Some(info),
        })
        .is_break()
        {
            finish = FinishReason::Cancelled;
            break;
        }
        if step + 1 < max_tokens {
            logits = model.forward(&[id], prompt.len() + step)?;
        }
    }
    if emitted < bytes.len() && finish != FinishReason::Cancelled {
        let _ = on_delta(Delta {
            text: String::from_utf8_lossy(&bytes[emitted..]).into_owned(),
            token: None,
        });
    }
    Ok(Generation {
        ids,
        text: String::from_utf8_lossy(&bytes).into_owned(),
        finish,
        prompt_tokens: prompt.len(),
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_search_and_hold_back() {
        let stops = vec!["END".to_string(), "\n\n".to_string()];
        assert_eq!(find_stop(b"abc EN", &stops, 4), None);
        assert_eq!(find_stop(b"abc END", &stops, 6), Some(4));
        assert_eq!(held_back(b"abc EN", &stops), 2);
        assert_eq!(held_back(b"abc\n", &stops), 1);
        assert_eq!(held_back(b"abc", &stops), 0);
    }

    #[test]
    fn utf8_cut_waits_for_whole_characters() {
        let s = "é".as_bytes(); // 2 bytes
        assert_eq!(utf8_cut(s, 0, 1), 0);
        assert_eq!(utf8_cut(s, 0, 2), 2);
    }
}
