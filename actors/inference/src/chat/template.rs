//! The ChatML template SmolLM2's GGUF carries (`tokenizer.chat_template`), rendered in Rust:
//! a system turn is added when the conversation does not start with one, each message becomes
//! `<|im_start|>{role}\n{content}<|im_end|>\n`, then `<|im_start|>assistant\n` opens the reply.

use super::tokenizer::ChatTokenizer;
use crate::error::{EngineError, Result};

/// The system prompt SmolLM2's template inserts when none is given.
pub const DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant` (or `tool`).
    pub role: String,
    /// The text.
    pub content: String,
}

/// Renders the conversation to token ids and (for logs and tests) to the equivalent text.
/// Special tokens are inserted as ids; message text is encoded without special-token parsing.
pub fn render(tok: &ChatTokenizer, messages: &[Message]) -> Result<(Vec<u32>, String)> {
    if messages.is_empty() {
        return Err(EngineError::InvalidInput(
            "messages must not be empty".into(),
        ));
    }
    let start = tok
        .token_id("<|im_start|>")
        .ok_or_else(|| EngineError::Tokenizer("vocabulary lacks <|im_start|>".into()))?;
    let end = tok
        .token_id("<|im_end|>")
        .ok_or_else(|| EngineError::Tokenizer("vocabulary lacks <|im_end|>".into()))?;
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut turn = |role: &str, content: &str, ids: &mut Vec<u32>| -> Result<()> {
        for m in [role, content] {
            if m.contains('\0') {
                return Err(EngineError::InvalidInput(
                    "text contains a NUL character".into(),
                ));
            }
        }
        ids.push(start);
        ids.extend(tok.encode(&format!("{role}\n{content}"))?);
        ids.push(end);
        ids.extend(tok.encode("\n")?);
        text.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
        Ok(())
    };
    if messages[0].role != "system" {
        turn("system", DEFAULT_SYSTEM, &mut ids)?;
    }
    for m in messages {
        match m.role.as_str() {
            "system" | "user" | "assistant" | "tool" => {}
            other => {
                return Err(EngineError::InvalidInput(format!("unknown role `{other}`")));
            }
        }
        turn(&m.role, &m.content, &mut ids)?;
    }
    ids.push(start);
    ids.extend(tok.encode("assistant\n")?);
    text.push_str("<|im_start|>assistant\n");
    Ok((ids, text))
}
