//! The Raft protocol's RPCs as abi requests: members reach each other's group actor
//! through `Node::ask`, so every group runs over the cluster's QUIC transport with mutual
//! TLS. Generic over the group kind ([`Group`]), which names the wire types.

use std::marker::PhantomData;

use abi_protocol::Request;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{Group, MemberId, TypeConfig};

/// Replicates log entries (also the leader's heartbeat).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct AppendRpc<C: Group = TypeConfig>(pub AppendEntriesRequest<C>);

impl<C: Group> Request for AppendRpc<C> {
    /// `Err` carries the receiving member's Raft error as text.
    type Reply = Result<AppendEntriesResponse<MemberId>, String>;
    const TYPE: &'static str = C::APPEND;
}

/// Asks for a vote in an election.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct VoteRpc<C: Group = TypeConfig>(pub VoteRequest<MemberId>, pub PhantomData<C>);

impl<C: Group> VoteRpc<C> {
    /// Wraps a vote request.
    pub fn new(req: VoteRequest<MemberId>) -> Self {
        Self(req, PhantomData)
    }
}

impl<C: Group> Request for VoteRpc<C> {
    type Reply = Result<VoteResponse<MemberId>, String>;
    const TYPE: &'static str = C::VOTE;
}

/// One chunk of a snapshot sent to a member that is too far behind for the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SnapshotRpc<C: Group = TypeConfig>(pub InstallSnapshotRequest<C>);

impl<C: Group> Request for SnapshotRpc<C> {
    type Reply = Result<InstallSnapshotResponse<MemberId>, String>;
    const TYPE: &'static str = C::SNAPSHOT;
}
