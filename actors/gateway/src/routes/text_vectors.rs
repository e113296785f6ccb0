//! Text in place of vectors for collections created with `embed_with`: the retrieval path
//! of a RAG application. Points and queries may carry `"vector": "some text"` or Qdrant's
//! document form `{"text": "...", "model": "..."}`; the gateway embeds them through the
//! collection's inference pool (`inference/<model>`) and proceeds as with vectors.

use std::time::Duration;

use abi_protocol::inference::Embed;
use abi_protocol::paths;
use abi_protocol::vector::GetCollection;
use abi_runtime::AskError;
use actix_web::http::StatusCode;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::{ApiError, GatewayState};

/// How long embedding one request's texts may take.
const EMBED_TIMEOUT: Duration = Duration::from_secs(60);
/// Texts per ask to the pool (its batcher splits further).
const CHUNK: usize = 64;

/// A vector as given, or text to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorOrText {
    /// Numbers.
    Vector(Vec<f32>),
    /// Text, with the model the client named, if any.
    Text {
        /// The text.
        text: String,
        /// `model` of a document object.
        model: Option<String>,
    },
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg)
}

/// Parses a point's `vector` or a query: numbers, a string, or `{"text", "model"?}`.
pub fn parse(v: &Value) -> Result<VectorOrText, ApiError> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| bad("vector values must be numbers"))
            })
            .collect::<Result<_, _>>()
            .map(VectorOrText::Vector),
        Value::String(s) => Ok(VectorOrText::Text {
            text: s.clone(),
            model: None,
        }),
        Value::Object(o) if o.contains_key("text") => {
            let text = o
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("document `text` must be a string"))?;
            let model = match o.get("model") {
                None | Some(Value::Null) => None,
                Some(Value::String(m)) => Some(m.clone()),
                Some(_) => return Err(bad("document `model` must be a string")),
            };
            Ok(VectorOrText::Text {
                text: text.to_string(),
                model,
            })
        }
        Value::Object(_) => Err(bad(
            "named vectors are not supported: give numbers, a text, or {\"text\": ...}",
        )),
        _ => Err(bad(
            "vector must be an array of numbers, a text, or {\"text\": ...}",
        )),
    }
}

/// A request's `vector` field as sent. Numbers are read straight into floats: through a
/// JSON value, a 768-dimension query would first become 768 boxed numbers. Any other shape
/// is kept as JSON for [`parse_arg`] to accept (text) or explain.
#[derive(Debug)]
pub enum VectorArg {
    /// An array of numbers.
    Numbers(Vec<f32>),
    /// Anything else.
    Other(Value),
}

impl<'de> serde::Deserialize<'de> for VectorArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Arg;
        impl<'de> Visitor<'de> for Arg {
            type Value = VectorArg;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of numbers, a text, or {\"text\": ...}")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<VectorArg, A::Error> {
                let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
                loop {
                    match seq.next_element::<f32>() {
                        Ok(Some(x)) => v.push(x),
                        Ok(None) => return Ok(VectorArg::Numbers(v)),
                        Err(_) => return Err(de::Error::custom("vector values must be numbers")),
                    }
                }
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<VectorArg, A::Error> {
                let v =
                    serde::Deserialize::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(VectorArg::Other(v))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<VectorArg, E> {
                Ok(VectorArg::Other(Value::String(s.to_string())))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<VectorArg, E> {
                Ok(VectorArg::Other(Value::String(s)))
            }

            fn visit_bool<E: de::Error>(self, b: bool) -> Result<VectorArg, E> {
                Ok(VectorArg::Other(Value::Bool(b)))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<VectorArg, E> {
                Ok(VectorArg::Other(Value::from(n)))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<VectorArg, E> {
                Ok(VectorArg::Other(Value::from(n)))
            }

            fn visit_f64<E: de::Error>(self, n: f64) -> Result<VectorArg, E> {
                Ok(VectorArg::Other(Value::from(n)))
            }

            fn visit_unit<E: de::Error>(self) -> Result<VectorArg, E> {
                Ok(VectorArg::Other(Value::Null))
            }
        }
        d.deserialize_any(Arg)
    }
}

/// [`parse`] of a [`VectorArg`].
pub fn parse_arg(v: VectorArg) -> Result<VectorOrText, ApiError> {
    match v {
        VectorArg::Numbers(v) => Ok(VectorOrText::Vector(v)),
        VectorArg::Other(v) => parse(&v),
    }
}

/// Turns every item into a vector, embedding the texts in as few pool calls as possible.
pub async fn resolve(
    state: &GatewayState,
    collection: &str,
    items: Vec<VectorOrText>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let mut texts = Vec::new();
    let mut named = None;
    for it in &items {
        if let VectorOrText::Text { text, model } = it {
            texts.push(text.clone());
            if let Some(m) = model {
                named = Some(m.clone());
            }
        }
    }
    if texts.is_empty() {
        return Ok(items
            .into_iter()
            .map(|it| match it {
                VectorOrText::Vector(v) => v,
                VectorOrText::Text { .. } => Vec::new(),
            })
            .collect());
    }
    let model = embed_model(state, collection).await?;
    if let Some(m) = named.filter(|m| *m != model) {
        return Err(bad(format!(
            "collection {collection:?} embeds with {model:?}; documents may not name {m:?}"
        )));
    }
    let mut vectors = Vec::with_capacity(texts.len());
    let path = state
        .node
        .path(&format!("{}/{model}", paths::INFERENCE))
        .map_err(|e| bad(e.to_string()))?;
    for chunk in texts.chunks(CHUNK) {
        let out = state
            .node
            .ask(
                &path,
                Embed {
                    inputs: chunk.to_vec(),
                },
                EMBED_TIMEOUT,
            )
            .await
            .map_err(|e| match e {
                AskError::NoSuchActor(_) => ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "model_unavailable",
                    format!("embedding model {model:?} of collection {collection:?} is not served on this node"),
                ),
                other => other.into(),
            })?
            .map_err(|e| {
                let status = match &e {
                    abi_protocol::inference::InferenceError::InvalidInput(_)
                    | abi_protocol::inference::InferenceError::ContextLength { .. } => {
                        StatusCode::BAD_REQUEST
                    }
                    abi_protocol::inference::InferenceError::Overloaded { .. } => {
                        StatusCode::TOO_MANY_REQUESTS
                    }
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                ApiError::new(status, e.code(), e.to_string())
            })?;
        vectors.extend(out.vectors);
    }
    let mut embedded = vectors.into_iter();
    items
        .into_iter()
        .map(|it| match it {
            VectorOrText::Vector(v) => Ok(v),
            VectorOrText::Text { .. } => embedded.next().ok_or_else(|| {
                ApiError::from(AskError::Codec("pool returned too few vectors".into()))
            }),
        })
        .collect()
}

/// The collection's `embed_with` model; 400 when it has none.
async fn embed_model(state: &GatewayState, collection: &str) -> Result<String, ApiError> {
    let info = super::collection_route::ask(
        state,
        collection,
        GetCollection {
            name: collection.to_string(),
        },
        state.request_timeout,
    )
    .await?
    .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string()))?;
    info.config.embed_with.ok_or_else(|| {
        bad(format!(
            "collection {collection:?} was created without `embed_with`: send vectors, or create it with an embedding model"
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_vectors_texts_and_documents() {
        assert_eq!(
            parse(&json!([1, 2.5])).ok(),
            Some(VectorOrText::Vector(vec![1.0, 2.5]))
        );
        assert_eq!(
            parse(&json!("hello")).ok(),
            Some(VectorOrText::Text {
                text: "hello".into(),
                model: None
            })
        );
        assert_eq!(
            parse(&json!({"text": "hi", "model": "m"})).ok(),
            Some(VectorOrText::Text {
                text: "hi".into(),
                model: Some("m".into())
            })
        );
        assert!(parse(&json!({"dense": [1.0]})).is_err());
        assert!(parse(&json!([1, "x"])).is_err());
        assert!(parse(&json!(3)).is_err());
    }
}
