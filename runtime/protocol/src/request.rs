//! The contract between a message and its reply.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message that an actor answers with a [`Request::Reply`].
///
/// `TYPE` is the message's name on the wire: it must be unique across the
/// protocol and never change once released (a renamed Rust type keeps its
/// wire name). Replies that can fail carry their own `Result` so that the
/// error crosses the wire typed.
///
/// Fire-and-forget messages (`tell`) use `Reply = ()`.
pub trait Request: Serialize + DeserializeOwned + Send + 'static {
    /// What the actor answers.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Stable wire name, e.g. `"vector.search"`.
    const TYPE: &'static str;
}
