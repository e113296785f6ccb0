//! Errors: [`RemoteError`] crosses the wire typed; [`TransportError`] is local set-up.

use serde::{Deserialize, Serialize};

/// Why a remote ask/tell failed. Serialisable so that the receiving node's
/// verdict (no such actor, timeout, ...) reaches the caller typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The destination node has no actor at that path (or serves no such message).
    #[error("no actor {0}")]
    NoSuchActor(String),
    /// The caller's deadline passed before a reply arrived.
    #[error("no reply from {path} within {timeout_ms} ms")]
    Timeout {
        /// Target actor.
        path: String,
        /// The time the caller allowed, in milliseconds.
        timeout_ms: u64,
    },
    /// The actor stopped before it replied.
    #[error("actor {0} stopped before replying")]
    ActorStopped(String),
    /// The actor exists but does not serve this message type.
    #[error("actor {path} does not accept {type_name}")]
    Unsupported {
        /// Target actor.
        path: String,
        /// Wire name of the message.
        type_name: String,
    },
    /// A payload could not be encoded or decoded by the runtime.
    #[error("codec error: {0}")]
    Codec(String),
    /// The peer could not be reached, or its connection died while the request was in flight.
    #[error("peer {node} unreachable: {reason}")]
    PeerUnreachable {
        /// The peer's node id.
        node: String,
        /// What happened (connection lost, refused, in backoff, ...).
        reason: String,
    },
    /// No address is known for the destination node.
    #[error("unknown peer {0}: no address known")]
    UnknownPeer(String),
    /// The path names a previous (or later) life of the destination node.
    #[error("{path} names incarnation {wanted} of its node, which is now at {current}")]
    StaleIncarnation {
        /// Target actor.
        path: String,
        /// Incarnation the message was addressed to.
        wanted: u64,
        /// The node's current incarnation.
        current: u64,
    },
    /// The two nodes speak different protocol versions.
    #[error("abi protocol version mismatch: this node speaks {ours}, peer speaks {theirs}")]
    VersionMismatch {
        /// Our version.
        ours: u16,
        /// The peer's version.
        theirs: u16,
    },
    /// The peer refused the connection (wrong CA, wrong node id, ...).
    #[error("refused: {0}")]
    Refused(String),
    /// A frame was larger than allowed; the stream was closed before reading it.
    #[error("frame too large: {size} bytes > limit {max}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A frame could not be decoded; the stream was closed.
    #[error("malformed frame: {0}")]
    BadFrame(String),
    /// The receiving side's handler failed to deliver or answer.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// This transport has been shut down.
    #[error("transport shut down")]
    Shutdown,
}

/// Why the transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Certificates could not be loaded.
    #[error(transparent)]
    Certs(#[from] crate::certs::CertError),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind QUIC endpoint on {addr}: {source}")]
    Bind {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A QUIC setting was out of range.
    #[error("invalid transport config: {0}")]
    Config(String),
}
