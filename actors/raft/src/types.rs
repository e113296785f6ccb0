//! The openraft type configuration: what a log entry carries and how members are named.

use std::io::Cursor;

use abi_protocol::raft::MetaCommand;
use serde::{Deserialize, Serialize};

/// A member of the group as openraft stores it in the membership config.
///
/// Raft ids are `u64`; abi names nodes with strings, so the member record keeps the
/// name (and the QUIC address to dial) and the id is derived from the name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// abi node id.
    pub name: String,
    /// QUIC address of the node's transport.
    pub addr: String,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.addr)
    }
}

openraft::declare_raft_types!(
    /// The type configuration of the cluster metadata group.
    pub TypeConfig:
        // One entry carries a batch of proposals (group commit); the response has
        // one previous value per command.
        D = Vec<MetaCommand>,
        R = Vec<Option<Vec<u8>>>,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft group type configuration this crate's [`LogStore`](crate::log_store::LogStore)
/// and [`Network`](crate::network::Network) serve: members are abi nodes, entries are
/// openraft's, snapshots are byte buffers. Each kind of group names its RPCs distinctly,
/// so one node can host many groups (the metadata group, one per replicated shard).
pub trait Group:
    openraft::RaftTypeConfig<
        NodeId = MemberId,
        Node = Member,
        Entry = openraft::Entry<Self>,
        SnapshotData = Cursor<Vec<u8>>,
    >
{
    /// Wire name of AppendEntries.
    const APPEND: &'static str;
    /// Wire name of RequestVote.
    const VOTE: &'static str;
    /// Wire name of InstallSnapshot.
    const SNAPSHOT: &'static str;
}

impl Group for TypeConfig {
    const APPEND: &'static str = "raft.rpc.append";
    const VOTE: &'static str = "raft.rpc.vote";
    const SNAPSHOT: &'static str = "raft.rpc.snapshot";
}

/// Raft member id.
pub type MemberId = u64;
/// A log entry of the group.
pub type Entry = openraft::Entry<TypeConfig>;
/// The group's handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<MemberId>;

/// The Raft id of an abi node: FNV-1a of its name, so that every member derives the same
/// id for a name without coordination (ids only need to be distinct within one group).
pub fn member_id(name: &str) -> MemberId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(member_id("node-a"), member_id("node-a"));
        assert_ne!(member_id("node-a"), member_id("node-b"));
        // Known FNV-1a vector: the empty string hashes to the offset basis.
        assert_eq!(member_id(""), 0xcbf2_9ce4_8422_2325);
    }
}
