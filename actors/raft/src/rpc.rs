//! The Raft protocol's RPCs as abi requests: members reach each other's group actor
//! through `Node::ask`, so every group runs over the cluster's QUIC transport with mutual
//! TLS. Generic over the group kind ([`Group`]), which names the wire types.

use std::marker::PhantomData;

use abi_protocol::Request;
use abi_runtime::Call;
use openraft::ServerState;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::types::{Group, Member, MemberId, TypeConfig};

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

/// Answers AppendEntries from a peer in a task of `tasks`: the group's core may take a
/// while (storage) and the actor must keep taking messages meanwhile.
pub fn answer_append<C: Group>(
    tasks: &mut JoinSet<()>,
    raft: &openraft::Raft<C>,
    call: Call<AppendRpc<C>>,
) {
    let (req, reply) = call.into_parts();
    let raft = raft.clone();
    tasks.spawn(async move {
        reply.send(raft.append_entries(req.0).await.map_err(|e| e.to_string()));
    });
}

/// Answers RequestVote from a candidate in a task of `tasks`.
pub fn answer_vote<C: Group>(
    tasks: &mut JoinSet<()>,
    raft: &openraft::Raft<C>,
    call: Call<VoteRpc<C>>,
) {
    let (req, reply) = call.into_parts();
    let raft = raft.clone();
    tasks.spawn(async move {
        reply.send(raft.vote(req.0).await.map_err(|e| e.to_string()));
    });
}

/// Answers an InstallSnapshot chunk from the leader in a task of `tasks`.
pub fn answer_snapshot<C: Group>(
    tasks: &mut JoinSet<()>,
    raft: &openraft::Raft<C>,
    call: Call<SnapshotRpc<C>>,
) {
    let (req, reply) = call.into_parts();
    let raft = raft.clone();
    tasks.spawn(async move {
        reply.send(
            raft.install_snapshot(req.0)
                .await
                .map_err(|e| e.to_string()),
        );
    });
}

/// A member's view of its group, by member names (what status answers show).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: &'static str,
    /// Current leader, if known.
    pub leader: Option<String>,
    /// Current term.
    pub term: u64,
    /// Last applied log index.
    pub applied: Option<u64>,
    /// Voting members.
    pub voters: Vec<String>,
    /// Non-voting members.
    pub learners: Vec<String>,
}

/// The [`GroupView`] of a member's metrics.
pub fn view(m: &openraft::RaftMetrics<MemberId, Member>) -> GroupView {
    let mem = m.membership_config.membership();
    let name = |id: MemberId| {
        mem.get_node(&id)
            .map_or_else(|| id.to_string(), |n| n.name.clone())
    };
    GroupView {
        state: match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        },
        leader: m.current_leader.map(name),
        term: m.current_term,
        applied: m.last_applied.map(|l| l.index),
        voters: mem.voter_ids().map(name).collect(),
        learners: mem.learner_ids().map(name).collect(),
    }
}
