//! What travels in frames: the connection handshake and request/reply envelopes.
//!
//! Deadlines cross the wire as *remaining milliseconds*, not as wall-clock
//! instants, so that clock skew between nodes cannot expire or extend a request.

use abi_protocol::{ActorPath, NodeId};
use serde::{Deserialize, Serialize};

/// Version of the abi wire protocol spoken on an `abi/1` connection.
///
/// Bumped on any incompatible change of the types in this module; the
/// handshake refuses a peer with a different version, naming both.
pub const PROTOCOL_VERSION: u16 = 1;

/// First frame on a connection, in both directions: who I am.
///
/// `version` is encoded first and decoded on its own, so that a peer with a
/// different layout of the rest still gets a clear "version mismatch".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Sender's node id; must match the SAN of its certificate.
    pub node: NodeId,
    /// Sender's incarnation (a new one per process start).
    pub incarnation: u64,
}

/// Header of a request frame; the payload follows it in the same frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// Sender's [`PROTOCOL_VERSION`] (checked on every envelope, not just at handshake).
    pub version: u16,
    /// The sending actor, when there is one.
    pub from: Option<ActorPath>,
    /// The destination actor.
    pub to: ActorPath,
    /// The message's stable wire name (`Request::TYPE`).
    pub type_name: String,
    /// Correlates the reply with the request (per connection, monotonically increasing).
    pub corr_id: u64,
    /// Milliseconds left until the caller's deadline when the frame was written.
    pub deadline_ms: u64,
    /// W3C `traceparent` of the caller's span, if tracing is on.
    pub traceparent: Option<String>,
    /// False for `tell`: no reply frame is sent.
    pub want_reply: bool,
}

/// Header of a reply frame; on success the reply payload follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHeader {
    /// The request's `corr_id`.
    pub corr_id: u64,
    /// Whether the request was delivered and answered.
    pub status: Result<(), crate::RemoteError>,
}
