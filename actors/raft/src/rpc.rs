//! The Raft protocol's RPCs as abi requests: members reach each other's `raft` actor
//! through `Node::ask`, so the group runs over the cluster's QUIC transport with mutual TLS.

use abi_protocol::Request;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{MemberId, TypeConfig};

/// Replicates log entries (also the leader's heartbeat).
#[derive(Debug, Serialize, Deserialize)]
pub struct AppendRpc(pub AppendEntriesRequest<TypeConfig>);

impl Request for AppendRpc {
    /// `Err` carries the receiving member's Raft error as text.
    type Reply = Result<AppendEntriesResponse<MemberId>, String>;
    const TYPE: &'static str = "raft.rpc.append";
}

/// Asks for a vote in an election.
#[derive(Debug, Serialize, Deserialize)]
pub struct VoteRpc(pub VoteRequest<MemberId>);

impl Request for VoteRpc {
    type Reply = Result<VoteResponse<MemberId>, String>;
    const TYPE: &'static str = "raft.rpc.vote";
}

/// One chunk of a snapshot sent to a member that is too far behind for the log.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotRpc(pub InstallSnapshotRequest<TypeConfig>);

impl Request for SnapshotRpc {
    type Reply = Result<InstallSnapshotResponse<MemberId>, String>;
    const TYPE: &'static str = "raft.rpc.snapshot";
}
