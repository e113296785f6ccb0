//! Why an `ask` or `tell` did not get through.

use serde::{Deserialize, Serialize};

/// The failure modes of location-transparent messaging.
///
/// Serialisable so that a remote node's answer (e.g. `NoSuchActor`) reaches the
/// caller typed, exactly as a local one would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum AskError {
    /// No reply before the deadline. The request may still be processed.
    #[error("no reply from {path} within {timeout_ms} ms")]
    Timeout {
        /// Target actor.
        path: String,
        /// The deadline that passed, in milliseconds.
        timeout_ms: u64,
    },
    /// Nothing is registered at that path (never was, or exited and not restarted).
    #[error("no actor at {0}")]
    NoSuchActor(String),
    /// The actor stopped before it replied (or its mailbox is closed).
    #[error("actor {0} stopped before replying")]
    ActorStopped(String),
    /// The node hosting the actor cannot be reached.
    #[error("peer {node} unreachable: {reason}")]
    PeerUnreachable {
        /// Node id of the peer.
        node: String,
        /// What the transport saw.
        reason: String,
    },
    /// The path names an earlier life of its node.
    #[error("{path} names incarnation {wanted} of its node, which is now at {current}")]
    StaleIncarnation {
        /// Target actor.
        path: String,
        /// Incarnation in the path.
        wanted: u64,
        /// The node's current incarnation.
        current: u64,
    },
    /// The actor exists but does not serve this message type.
    #[error("actor {path} does not accept {type_name}")]
    Unsupported {
        /// Target actor.
        path: String,
        /// Wire name of the message.
        type_name: String,
    },
    /// A payload could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
}

impl AskError {
    /// A stable snake_case code, used in HTTP error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::NoSuchActor(_) => "no_such_actor",
            Self::ActorStopped(_) => "actor_stopped",
            Self::PeerUnreachable { .. } => "peer_unreachable",
            Self::StaleIncarnation { .. } => "stale_incarnation",
            Self::Unsupported { .. } => "unsupported_message",
            Self::Codec(_) => "codec_error",
        }
    }
}
