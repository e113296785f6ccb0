//! Replicated shards: each shard of a replicated collection is its own Raft group
//! (openraft, via `abi-raft`'s log store and network) whose log carries the shard's writes
//! and whose state machine is the local [`Shard`](crate::shard::Shard).
//!
//! - [`group`]: the group's type configuration, log entry and wire names.
//! - [`machine`]: the state machine (applies writes, builds and installs snapshots).
//! - [`actor`]: the replica actor at `vector/<collection>/shard-<i>`: reads locally,
//!   writes through the group, converges membership to the placement when it leads.
//!
//! A write is acknowledged once the group committed it (a majority of the replicas
//! has it fsynced in their Raft log), or once `write_consistency` replicas have it when
//! that is more. A replica that was down catches up from the leader: log tail, or a
//! snapshot of the shard's points when the log behind it was compacted.

pub mod actor;
pub mod group;
pub mod machine;

pub use actor::{ReplicaActor, ReplicaArgs, ReplicaPlacement, ReplicaStatus, ShardGroupStatus};
pub use group::{ShardGroup, ShardOp};
