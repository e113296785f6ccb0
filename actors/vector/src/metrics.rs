//! Vector metrics (registered once per process in the node's registry), per
//! shard: queries searched, points upserted, time for a write to become
//! durable (the WAL fsync, group commit included), tombstones.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Labels of per-shard series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    /// Collection name.
    pub collection: String,
    /// Shard index.
    pub shard: u32,
}

/// The vector families.
#[derive(Debug, Clone)]
pub struct VectorMetrics {
    searches: Family<ShardLabels, Counter>,
    upserts: Family<ShardLabels, Counter>,
    wal_sync: Family<ShardLabels, Histogram>,
    tombstones: Family<ShardLabels, Gauge>,
}

fn sync_histogram() -> Histogram {
    // 50 us .. ~4 s: tmpfs to a loaded spinning disk.
    Histogram::new(exponential_buckets(0.00005, 2.5, 13))
}

impl VectorMetrics {
    /// Registers (or finds) the families in `node`'s registry.
    pub fn of(node: &abi_runtime::Node) -> Self {
        node.metrics().get_or_init(|reg| {
            let m = VectorMetrics {
                searches: Family::default(),
                upserts: Family::default(),
                wal_sync: Family::new_with_constructor(sync_histogram),
                tombstones: Family::default(),
            };
            reg.register(
                "abi_vector_searches",
                "k-NN queries searched by a shard",
                m.searches.clone(),
            );
            reg.register(
                "abi_vector_upserted_points",
                "Points inserted or replaced in a shard",
                m.upserts.clone(),
            );
            reg.register_with_unit(
                "abi_vector_wal_sync_duration",
                "Time for an acknowledged write to become durable (WAL fsync, group commit included)",
                prometheus_client::registry::Unit::Seconds,
                m.wal_sync.clone(),
            );
            reg.register(
                "abi_vector_tombstones",
                "Deleted or replaced slots not yet compacted away",
                m.tombstones.clone(),
            );
            m
        })
    }

    /// The series of one shard.
    pub fn shard(&self, collection: &str, shard: u32) -> ShardMetrics {
        let l = ShardLabels {
            collection: collection.to_string(),
            shard,
        };
        ShardMetrics {
            searches: self.searches.get_or_create(&l).clone(),
            upserts: self.upserts.get_or_create(&l).clone(),
            wal_sync: self.wal_sync.get_or_create(&l).clone(),
            tombstones: self.tombstones.get_or_create(&l).clone(),
        }
    }
}

/// One shard's series (shared atomics).
#[derive(Debug, Clone)]
pub struct ShardMetrics {
    /// Queries searched.
    pub searches: Counter,
    /// Points upserted.
    pub upserts: Counter,
    /// Write-to-durable latency.
    pub wal_sync: Histogram,
    /// Current tombstones.
    pub tombstones: Gauge,
}

impl ShardMetrics {
    /// Series registered nowhere (a shard run without a node registry).
    pub fn detached() -> Self {
        Self {
            searches: Counter::default(),
            upserts: Counter::default(),
            wal_sync: sync_histogram(),
            tombstones: Gauge::default(),
        }
    }
}
