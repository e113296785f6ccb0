//! From the topology file's `[[collection]]` entries to collection configs.

use abi_protocol::vector::{CollectionConfig, Distance, FsyncPolicy, HnswParams};
use abi_topology::{Collection, DistanceName, FsyncName};

/// Converts one `[[collection]]` entry; out-of-range numbers are clamped to values that
/// [`crate::collection::validate_config`] then refuses with a clear message.
pub fn collection_config(c: &Collection) -> CollectionConfig {
    let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    CollectionConfig {
        name: c.name.clone(),
        dim: clamp(c.dim),
        distance: match c.distance {
            DistanceName::Cosine => Distance::Cosine,
            DistanceName::Dot => Distance::Dot,
            DistanceName::Euclid => Distance::Euclid,
        },
        shards: clamp(c.shards),
        replication: clamp(c.replication),
        write_consistency: 0,
        hnsw: HnswParams {
            m: u16::try_from(c.m).unwrap_or(u16::MAX),
            ef_construct: clamp(c.ef_construct),
            ef: clamp(c.ef),
        },
        fsync: match c.fsync {
            FsyncName::Always => FsyncPolicy::Always,
            FsyncName::Group => {
                FsyncPolicy::GroupCommitMs(u32::try_from(c.group_commit_ms).unwrap_or(u32::MAX))
            }
            FsyncName::None => FsyncPolicy::Never,
        },
        embed_with: c.embed_with.clone(),
    }
}

/// The `vector` subsystem's child spec from the topology's collections (see
/// [`crate::child_spec`]).
pub fn child_spec_from_topology(
    data_dir: &std::path::Path,
    collections: &[Collection],
) -> abi_runtime::ChildSpec {
    crate::child_spec(
        data_dir,
        collections.iter().map(collection_config).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_entry_maps_to_a_valid_config() {
        let c = Collection {
            name: "docs".into(),
            dim: 384,
            distance: DistanceName::Dot,
            shards: 4,
            replication: 2,
            m: 16,
            ef_construct: 200,
            ef: 64,
            embed_with: Some("minilm".into()),
            fsync: FsyncName::Group,
            group_commit_ms: 5,
            placement: Default::default(),
        };
        let cfg = collection_config(&c);
        assert_eq!(cfg.distance, Distance::Dot);
        assert_eq!(cfg.fsync, FsyncPolicy::GroupCommitMs(5));
        assert_eq!((cfg.shards, cfg.replication, cfg.hnsw.m), (4, 2, 16));
        assert!(crate::collection::validate_config(&cfg).is_ok());
        let mut bad = c;
        bad.m = 100_000;
        assert!(crate::collection::validate_config(&collection_config(&bad)).is_err());
    }
}
