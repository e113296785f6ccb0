//! The openraft type configuration of a replicated shard.

use std::io::Cursor;

use abi_protocol::vector::{PointId, PointInput, VectorError};
use abi_raft::{Group, Member};
use serde::{Deserialize, Serialize};

/// One write of a replicated shard, as its Raft log carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShardOp {
    /// Insert or replace points.
    Upsert(Vec<PointInput>),
    /// Delete points by id.
    Delete(Vec<PointId>),
}

openraft::declare_raft_types!(
    /// The type configuration of a replicated shard's group: entries are writes, the
    /// response says whether the shard accepted it (the same on every replica).
    pub ShardGroup:
        D = ShardOp,
        R = Result<(), VectorError>,
        Node = Member,
        SnapshotData = Cursor<Vec<u8>>,
);

impl Group for ShardGroup {
    const APPEND: &'static str = "vector.raft.append";
    const VOTE: &'static str = "vector.raft.vote";
    const SNAPSHOT: &'static str = "vector.raft.snapshot";
}

/// A replicated shard's openraft handle.
pub type ShardRaft = openraft::Raft<ShardGroup>;
/// A log entry of a replicated shard.
pub type ShardEntry = openraft::Entry<ShardGroup>;
