//! Vector collections: sharded hnsw_rs indexes with a write-ahead log.
//!
//! Layers, bottom up:
//! - [`wal`]: segmented, checksummed write-ahead log with group commit.
//! - [`distance`]: SIMD distance kernels and the hnsw_rs adapter.
//! - [`index`]: the [`index::VectorIndex`] trait and its hnsw_rs implementation.
//! - [`filter`]: payload filters.
//! - [`shard`]: one shard (point store + index + WAL, snapshots, compaction), no actors.
//! - [`collection`]: routing of points to shards, exact top-k merge, persisted metadata.
//! - [`glove`]: the GloVe evaluation set used by the recall test and the benchmark.
//! - [`shard_actor`], [`manager`]: the actors; [`child_spec`] (or [`child_spec_from_topology`])
//!   is the subsystem's entry point.

pub mod collection;
pub mod distance;
pub mod filter;
mod flat;
pub mod glove;
pub mod index;
pub mod manager;
pub mod metrics;
pub mod replica;
pub mod replication;
pub mod routing;
pub mod shard;
pub mod shard_actor;
pub mod topology;
pub mod wal;

pub use manager::{MANAGER_PATH, child_spec, child_spec_with};
pub use replication::ReplicationArgs;
pub use topology::child_spec_from_topology;

#[cfg(test)]
mod shard_tests;
