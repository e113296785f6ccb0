//! The seam between the node and a transport that reaches other nodes.

use std::time::Instant;

use abi_protocol::ActorPath;
use futures::future::BoxFuture;

use crate::AskError;

/// Implemented by a transport (QUIC, in `abi-transport`); the [`Node`](crate::Node)
/// calls it for every path whose node id is not its own. Payloads are postcard
/// bytes of the request and of its reply.
pub trait Remote: Send + Sync + 'static {
    /// Sends a request and resolves to the encoded reply.
    fn ask_raw(
        &self,
        to: ActorPath,
        type_name: &'static str,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> BoxFuture<'static, Result<Vec<u8>, AskError>>;

    /// Sends a message without waiting for an answer.
    fn tell_raw(
        &self,
        to: ActorPath,
        type_name: &'static str,
        payload: Vec<u8>,
    ) -> Result<(), AskError>;
}
