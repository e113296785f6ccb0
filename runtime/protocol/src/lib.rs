//! The one place where messages between abi subsystems are defined.
//!
//! Everything here is a plain serde type so that it can cross a process
//! boundary as postcard bytes (see [`codec`]). Callers address actors with an
//! [`ActorPath`] and send them [`Request`]s; whether the actor is local or on
//! another node is the runtime's business, not theirs.
//!
//! # Layout
//! - [`path`]: `NodeId` and `ActorPath` (node id, node incarnation, hierarchical name).
//! - [`request`]: the [`Request`] trait that ties a message to its reply type and wire name.
//! - [`codec`]: postcard encoding used on the wire and in logs.
//! - [`supervision`]: queries and commands understood by every supervisor.
//! - [`health`]: the readiness probe every subsystem can answer.
//! - [`paths`]: well-known actor names, so callers do not spell strings.
//! - [`error`]: the JSON error body clients see.
//! - [`raft`]: proposals, reads and membership changes of the cluster metadata group.

pub mod codec;
pub mod error;
pub mod gpu;
pub mod health;
pub mod inference;
pub mod membership;
pub mod path;
pub mod paths;
pub mod raft;
pub mod request;
pub mod supervision;
pub mod vector;

pub use path::{ActorPath, NodeId, PathError};
pub use request::Request;
