//! Collections: config validation and persistence, routing of points to shards by jump
//! consistent hash, exact merge of per-shard top-k lists, and an in-process collection
//! ([`LocalCollection`]) that fans out to its shards on threads (used by benchmarks and tests;
//! the actors do the same fan-out through `ask`).

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_protocol::vector::{
    CollectionConfig, Distance as Metric, PointId, PointInput, ScoredPoint, SearchQuery,
    VectorError,
};

use crate::shard::{MAX_DIM, Shard, ShardConfig, check_vector};

/// Most shards per collection.
pub const MAX_SHARDS: u32 = 256;
/// File holding a collection's config inside its directory.
pub const META_FILE: &str = "collection.json";

/// Jump consistent hash (Lamping & Veach): bucket in `0..buckets`; growing `buckets` from n to
/// n+1 moves only ~1/(n+1) of the keys.
pub fn jump_hash(mut key: u64, buckets: u32) -> u32 {
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b.max(0) as u32
}

/// The shard that owns a point.
pub fn shard_of(id: PointId, shards: u32) -> u32 {
    // Mix first: sequential integer ids would otherwise share the low-entropy high bits.
    let mut x = id.route_key();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    jump_hash(x, shards.max(1))
}

/// Checks a collection config before anything is created.
pub fn validate_config(cfg: &CollectionConfig) -> Result<(), VectorError> {
    let bad = |m: String| Err(VectorError::BadRequest(m));
    if cfg.name.is_empty()
        || cfg.name.len() > 128
        || !cfg
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || cfg.name.starts_with('.')
    {
        return bad(format!(
            "collection name {:?} must be 1-128 characters of [A-Za-z0-9._-], not starting with '.'",
            cfg.name
        ));
    }
    if cfg.dim == 0 || cfg.dim > MAX_DIM {
        return bad(format!("dimension {} must be in 1..={MAX_DIM}", cfg.dim));
    }
    if cfg.shards == 0 || cfg.shards > MAX_SHARDS {
        return bad(format!(
            "shard count {} must be in 1..={MAX_SHARDS}",
            cfg.shards
        ));
    }
    if cfg.replication == 0 {
        return bad("replication factor must be at least 1".into());
    }
    // hnsw_rs calls process::exit on m > 256: refuse it here.
    if !(2..=256).contains(&cfg.hnsw.m) {
        return bad(format!("hnsw m {} must be in 2..=256", cfg.hnsw.m));
    }
    if cfg.hnsw.ef_construct == 0 || cfg.hnsw.ef_construct > 10_000 {
        return bad(format!(
            "hnsw ef_construct {} must be in 1..=10000",
            cfg.hnsw.ef_construct
        ));
    }
    if cfg.hnsw.ef == 0 || cfg.hnsw.ef > 10_000 {
        return bad(format!("hnsw ef {} must be in 1..=10000", cfg.hnsw.ef));
    }
    Ok(())
}

/// Writes the config atomically into `dir/collection.json`.
pub fn save_config(dir: &Path, cfg: &CollectionConfig) -> Result<(), VectorError> {
    use std::io::Write;
    let st = |e: std::io::Error| VectorError::Storage(format!("saving collection config: {e}"));
    fs::create_dir_all(dir).map_err(st)?;
    let json = serde_json::to_vec_pretty(cfg)
        .map_err(|e| VectorError::Storage(format!("encoding collection config: {e}")))?;
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(st)?;
    f.write_all(&json).map_err(st)?;
    f.sync_all().map_err(st)?;
    fs::rename(&tmp, dir.join(META_FILE)).map_err(st)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(st)
}

/// Reads every collection config found under `root` (one directory per collection).
pub fn load_configs(root: &Path) -> Result<Vec<CollectionConfig>, VectorError> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(VectorError::Storage(format!(
                "listing {}: {e}",
                root.display()
            )));
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| VectorError::Storage(e.to_string()))?;
        let meta = entry.path().join(META_FILE);
        if !meta.exists() {
            continue;
        }
        let bytes = fs::read(&meta).map_err(|e| VectorError::Storage(e.to_string()))?;
        let cfg: CollectionConfig = serde_json::from_slice(&bytes)
            .map_err(|e| VectorError::Storage(format!("{}: {e}", meta.display())))?;
        out.push(cfg);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Shard engine config derived from a collection config.
pub fn shard_config(cfg: &CollectionConfig) -> ShardConfig {
    ShardConfig::new(cfg.dim as usize, cfg.distance, cfg.hnsw, cfg.fsync)
}

/// Directory of shard `i` of a collection.
pub fn shard_dir(collection_dir: &Path, i: u32) -> PathBuf {
    collection_dir.join(format!("shard-{i}"))
}

/// Orders hits best first for the metric (ties by id, so merges are deterministic).
pub fn better(metric: Metric, a: &ScoredPoint, b: &ScoredPoint) -> Ordering {
    let by_score = match metric {
        Metric::Cosine | Metric::Dot => b.score.total_cmp(&a.score),
        Metric::Euclid => a.score.total_cmp(&b.score),
    };
    by_score.then(a.id.cmp(&b.id))
}

/// Exact top-k merge of per-shard lists (each already the shard's best `limit + offset`).
pub fn merge_top_k(
    metric: Metric,
    lists: Vec<Vec<ScoredPoint>>,
    limit: usize,
    offset: usize,
) -> Vec<ScoredPoint> {
    let mut all: Vec<ScoredPoint> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| better(metric, a, b));
    all.into_iter().skip(offset).take(limit).collect()
}

/// Validates a whole upsert batch and splits it by shard; nothing is returned for a bad batch.
pub fn route_points(
    cfg: &CollectionConfig,
    points: Vec<PointInput>,
) -> Result<Vec<Vec<PointInput>>, VectorError> {
    for p in &points {
        check_vector(&p.vector, cfg.dim as usize, cfg.distance)
            .map_err(|e| VectorError::BadRequest(format!("point {}: {e}", p.id)))?;
        if let Some(js) = &p.payload_json {
            let v: serde_json::Value = serde_json::from_str(js).map_err(|e| {
                VectorError::BadRequest(format!("point {}: payload is not JSON: {e}", p.id))
            })?;
            if !v.is_object() {
                return Err(VectorError::BadRequest(format!(
                    "point {}: payload must be a JSON object",
                    p.id
                )));
            }
        }
    }
    let mut by_shard = vec![Vec::new(); cfg.shards as usize];
    for p in points {
        by_shard[shard_of(p.id, cfg.shards) as usize].push(p);
    }
    Ok(by_shard)
}

/// Splits ids by shard.
pub fn route_ids(ids: Vec<PointId>, shards: u32) -> Vec<Vec<PointId>> {
    let mut by_shard = vec![Vec::new(); shards as usize];
    for id in ids {
        by_shard[shard_of(id, shards) as usize].push(id);
    }
    by_shard
}

/// A collection whose shards live in this process; fan-out on rayon's pool.
#[derive(Debug)]
pub struct LocalCollection {
    cfg: CollectionConfig,
    shards: Vec<Arc<Shard>>,
}

impl LocalCollection {
    /// Opens (creating if needed) the collection under `dir`.
    pub fn open(dir: &Path, cfg: CollectionConfig) -> Result<Self, VectorError> {
        validate_config(&cfg)?;
        save_config(dir, &cfg)?;
        let shards = (0..cfg.shards)
            .map(|i| Shard::open(&shard_dir(dir, i), shard_config(&cfg)).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { cfg, shards })
    }

    /// The shards, in order.
    pub fn shards(&self) -> &[Arc<Shard>] {
        &self.shards
    }

    /// Validated, routed, logged, applied and synced upsert.
    pub fn upsert(&self, points: Vec<PointInput>) -> Result<(), VectorError> {
        let routed = route_points(&self.cfg, points)?;
        std::thread::scope(|s| {
            let handles: Vec<_> = routed
                .into_iter()
                .zip(&self.shards)
                .filter(|(pts, _)| !pts.is_empty())
                .map(|(pts, shard)| {
                    s.spawn(move || {
                        let seq = shard.upsert(pts)?;
                        shard.sync_to(seq)
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| VectorError::Unavailable("shard thread panicked".into()))??;
            }
            Ok(())
        })
    }

    /// Deletes ids (durably).
    pub fn delete(&self, ids: Vec<PointId>) -> Result<(), VectorError> {
        for (ids, shard) in route_ids(ids, self.cfg.shards)
            .into_iter()
            .zip(&self.shards)
        {
            if !ids.is_empty() {
                let seq = shard.delete(ids)?;
                shard.sync_to(seq)?;
            }
        }
        Ok(())
    }

    /// Searches every shard concurrently and merges exactly.
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<ScoredPoint>, VectorError> {
        // rayon's pool, not fresh threads: a query costs ~1 ms, a thread spawn tens of us.
        let lists = if self.shards.len() == 1 {
            vec![self.shards[0].search(q)?]
        } else {
            use rayon::prelude::*;
            self.shards
                .par_iter()
                .map(|shard| shard.search(q))
                .collect::<Result<Vec<_>, _>>()?
        };
        Ok(merge_top_k(
            self.cfg.distance,
            lists,
            q.limit as usize,
            q.offset as usize,
        ))
    }

    /// Live points over all shards.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// True when no shard holds a point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_protocol::vector::{FsyncPolicy, HnswParams};

    #[test]
    fn jump_hash_is_balanced_and_moves_few_keys() {
        let n = 20_000u64;
        let mut counts = [0u32; 4];
        let mut moved = 0;
        for k in 0..n {
            let a = shard_of(PointId::Num(k), 4);
            counts[a as usize] += 1;
            if shard_of(PointId::Num(k), 5) != a {
                moved += 1;
            }
        }
        for c in counts {
            assert!((4_500..5_500).contains(&c), "{counts:?}");
        }
        // Going from 4 to 5 shards should move about 1/5 of the keys, never most of them.
        assert!((3_000..5_000).contains(&moved), "moved {moved}");
        assert_eq!(jump_hash(12345, 1), 0);
    }

    fn cfg(name: &str) -> CollectionConfig {
        CollectionConfig {
            name: name.into(),
            dim: 3,
            distance: Metric::Euclid,
            shards: 3,
            replication: 1,
            write_consistency: 0,
            hnsw: HnswParams::default(),
            fsync: FsyncPolicy::Never,
            embed_with: None,
        }
    }

    #[test]
    fn config_validation() {
        assert!(validate_config(&cfg("ok")).is_ok());
        assert!(validate_config(&cfg("bad/name")).is_err());
        let mut c = cfg("x");
        c.hnsw.m = 300;
        assert!(validate_config(&c).is_err());
        c = cfg("x");
        c.dim = 0;
        assert!(validate_config(&c).is_err());
    }

    #[test]
    fn bad_point_rejects_whole_batch_and_merge_is_exact() {
        let tmp = tempfile::tempdir().expect("tmp");
        let col = LocalCollection::open(&tmp.path().join("c"), cfg("c")).expect("open");
        let mut pts: Vec<PointInput> = (0..50u64)
            .map(|i| PointInput {
                id: PointId::Num(i),
                vector: vec![i as f32, 0.0, 0.0],
                payload_json: None,
            })
            .collect();
        pts.push(PointInput {
            id: PointId::Num(99),
            vector: vec![f32::NAN, 0.0, 0.0],
            payload_json: None,
        });
        assert!(matches!(
            col.upsert(pts.clone()),
            Err(VectorError::BadRequest(_))
        ));
        assert_eq!(col.len(), 0);
        pts.pop();
        col.upsert(pts).expect("upsert");
        assert_eq!(col.len(), 50);
        assert!(col.shards().iter().all(|s| !s.is_empty()));
        let q = SearchQuery {
            vector: vec![10.2, 0.0, 0.0],
            limit: 4,
            offset: 1,
            ef: None,
            filter: None,
            with_payload: false,
            with_vector: false,
            score_threshold: None,
        };
        let ids: Vec<PointId> = col
            .search(&q)
            .expect("search")
            .iter()
            .map(|h| h.id)
            .collect();
        assert_eq!(
            ids,
            vec![
                PointId::Num(11),
                PointId::Num(9),
                PointId::Num(12),
                PointId::Num(8)
            ]
        );
        assert_eq!(load_configs(tmp.path()), Ok(vec![cfg("c")]));
    }
}
