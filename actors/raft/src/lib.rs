//! The cluster metadata Raft group: [openraft] over the abi transport, with the log in
//! redb and the replicated [`ClusterMeta`](abi_protocol::raft::ClusterMeta) as state
//! machine.
//!
//! # Layout
//! - [`types`]: the openraft type configuration and member naming.
//! - [`log_store`]: the durable log, vote and commit index (redb).
//! - [`state_machine`]: the applied metadata and its snapshots.
//! - [`rpc`] / [`network`]: the Raft RPCs as abi requests between `raft` actors.
//! - [`metrics`]: term, leadership, commit index, apply lag, proposals.
//! - [`batch`]: group commit of concurrent proposals into one entry.
//! - [`actor`]: the supervised actor serving the group at `<node>/raft`.

// openraft's trait signatures fix `StorageError` (224 bytes) as the error type.
#![allow(clippy::result_large_err)]

pub mod actor;
pub mod batch;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod rpc;
pub mod state_machine;
pub mod types;

pub use actor::{RaftActor, RaftConfig, StatusFeed, child_spec};
pub use log_store::LogStore;
pub use network::LearnAddr;
pub use network::Network;
pub use state_machine::MetaView;
pub use types::{Group, Member, MemberId, member_id};
