//! The chat model's tokenizer, built from the GGUF metadata (byte-level BPE vocabulary and
//! merges), with the pre-tokenizer the GGUF names and the special tokens kept out of user text.

use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use tokenizers::Tokenizer;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

use crate::error::{EngineError, Result};

/// Byte-level BPE tokenizer of a GGUF chat model.
///
/// User text is encoded by a tokenizer that knows no special tokens, so a message that contains
/// `<|im_start|>` cannot forge a turn; the template inserts special ids itself.
pub struct ChatTokenizer {
    plain: Tokenizer,
    /// Raw bytes of every token (byte-level BPE maps bytes to printable chars; undone here).
    token_bytes: std::sync::Arc<Vec<Vec<u8>>>,
    eos_id: u32,
    bos_id: Option<u32>,
}

/// GPT-2's byte <-> printable-char table, inverted: char -> byte.
fn char_to_byte() -> std::collections::HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .filter_map(|(b, c)| Some((char::from_u32(c)?, u8::try_from(b).ok()?)))
        .collect()
}

fn md_u32(ct: &Content, key: &str) -> Option<u32> {
    ct.metadata.get(key).and_then(|v| v.to_u32().ok())
}

impl ChatTokenizer {
    /// Builds the tokenizer from GGUF metadata (`tokenizer.ggml.*`).
    pub fn from_gguf(ct: &Content) -> Result<Self> {
        let full = Tokenizer::from_gguf(ct).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let pre = ct
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_default();
        let mut plain = Tokenizer::new(full.get_model().clone());
        // candle knows qwen2/llama3 pre-tokenizers; for the rest (gpt2, smollm) use llama.cpp's
        // recipe: smollm isolates every digit, then the GPT-2 byte-level regex.
        let byte_level = ByteLevel::new(false, true, true);
        let pt: PreTokenizerWrapper = match pre.as_str() {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" | "" => byte_level.into(),
            other => match full.get_pre_tokenizer() {
                Some(p) => p.clone(),
                None => {
                    return Err(EngineError::Tokenizer(format!(
                        "unsupported tokenizer.ggml.pre `{other}`"
                    )));
                }
            },
        };
        plain.with_pre_tokenizer(Some(pt));
        if let Some(dec) = full.get_decoder() {
            plain.with_decoder(Some(dec.clone()));
        }
        let table = char_to_byte();
        let vocab = plain.get_vocab_size(false);
        let mut token_bytes = Vec::with_capacity(vocab);
        for id in 0..vocab as u32 {
            let tok = plain.id_to_token(id).unwrap_or_default();
            // Control tokens (<|im_end|>) are plain ASCII and map to themselves.
            token_bytes.push(
                tok.chars()
                    .map(|c| table.get(&c).copied().unwrap_or(b'?'))
                    .collect(),
            );
        }
        let eos_id = md_u32(ct, "tokenizer.ggml.eos_token_id").ok_or_else(|| {
            EngineError::Tokenizer("GGUF has no tokenizer.ggml.eos_token_id".into())
        })?;
        let bos_id = md_u32(ct, "tokenizer.ggml.bos_token_id");
        Ok(Self {
            plain,
            token_bytes: std::sync::Arc::new(token_bytes),
            eos_id,
            bos_id,
        })
    }

    /// Encodes text with no special-token parsing.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .plain
            .encode(text, false)
            .map_err(|e| EngineError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// The id of a token given by its literal text (e.g. `<|im_start|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.plain.token_to_id(token)
    }

    /// The raw bytes a token stands for (may be a partial UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The bytes of every token, shareable with callbacks that cannot borrow the tokenizer.
    pub fn token_table(&self) -> std::sync::Arc<Vec<Vec<u8>>> {
        self.token_bytes.clone()
    }

    /// End-of-sequence id (`<|im_end|>` for SmolLM2).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// Beginning-of-sequence id, if the GGUF names one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// Decodes ids to text (invalid UTF-8 replaced).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
