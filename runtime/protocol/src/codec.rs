//! postcard encoding for wire payloads.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A payload that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("codec error for {type_name}: {source}")]
pub struct CodecError {
    /// The message's wire name.
    pub type_name: &'static str,
    /// What postcard said.
    #[source]
    pub source: postcard::Error,
}

/// Encodes a value as postcard bytes.
pub fn encode<T: Serialize>(type_name: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
    postcard::to_stdvec(value).map_err(|source| CodecError { type_name, source })
}

/// Decodes postcard bytes.
pub fn decode<T: DeserializeOwned>(type_name: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    postcard::from_bytes(bytes).map_err(|source| CodecError { type_name, source })
}
