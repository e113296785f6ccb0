//! The approximate nearest-neighbour index behind a trait, with its hnsw_rs implementation.
//!
//! Slots (hnsw_rs "data ids") are dense `usize`s handed out by the shard; the index knows nothing
//! about point ids, payloads or deletions (hnsw_rs has no delete: the shard filters tombstones).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use abi_protocol::vector::HnswParams;
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;

use crate::distance::MetricDistance;
use crate::flat::FlatGraph;

/// hnsw_rs can only reload dumps made with its maximum layer count (16).
const MAX_LAYER: usize = 16;
/// Below this many points a batch is inserted serially (rayon start-up costs more).
const PARALLEL_MIN: usize = 64;
/// Indexes of at least this many points are searched on a flat copy of their graph.
const FLAT_MIN: usize = 4096;
/// The flat copy is taken once the index went this long without an insert (a copy costs about
/// as much as a hundred searches, so not while inserts keep coming).
const FLAT_QUIET_MS: u64 = 500;

/// An ANN index over slots; `&self` everywhere so searches run while others insert.
pub trait VectorIndex: Send + Sync {
    /// Adds vectors under the given slots.
    fn insert(&self, items: &[(&[f32], usize)]);
    /// Up to `k` nearest slots with their index distance, nearest first; `keep` (when given)
    /// is consulted during the graph walk so that `k` kept slots come back where possible.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)>;
    /// Number of slots inserted (live or not).
    fn len(&self) -> usize;
    /// True when nothing was inserted.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes the index under `dir` with file names starting with `basename`.
    fn dump(&self, dir: &Path, basename: &str) -> Result<(), String>;
}

/// hnsw_rs index; `'static` because a reloaded graph borrows its loader, which is leaked once
/// per load (a few hundred bytes) so that the index can live in actor state.
pub struct HnswIndex {
    hnsw: Hnsw<'static, f32, MetricDistance>,
    dist: MetricDistance,
    /// Bumped by every insert: a flat copy serves searches only at the version it was taken.
    version: AtomicU64,
    /// When the last insert happened (ms since `born`).
    last_insert_ms: AtomicU64,
    born: Instant,
    flat: parking_lot::RwLock<Option<Arc<FlatGraph>>>,
    /// Held while a flat copy is built (one at a time).
    building: parking_lot::Mutex<()>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HnswIndex({} points)", self.hnsw.get_nb_point())
    }
}

struct KeepFilter<'a>(&'a dyn Fn(usize) -> bool);

impl hnsw_rs::filter::FilterT for KeepFilter<'_> {
    fn hnsw_filter(&self, id: &usize) -> bool {
        (self.0)(*id)
    }
}

impl HnswIndex {
    /// An empty index sized for about `capacity` points.
    pub fn new(params: &HnswParams, dist: MetricDistance, capacity: usize) -> Self {
        let hnsw = Hnsw::new(
            params.m as usize,
            capacity.max(1024),
            MAX_LAYER,
            params.ef_construct as usize,
            dist,
        );
        Self::wrap(hnsw, dist)
    }

    fn wrap(hnsw: Hnsw<'static, f32, MetricDistance>, dist: MetricDistance) -> Self {
        Self {
            hnsw,
            dist,
            version: AtomicU64::new(0),
            last_insert_ms: AtomicU64::new(0),
            born: Instant::now(),
            flat: parking_lot::RwLock::new(None),
            building: parking_lot::Mutex::new(()),
        }
    }

    /// The flat copy of the graph when it is current, taking it when the index has been quiet
    /// for a while; `None` = search hnsw_rs's structures.
    fn flat(&self) -> Option<Arc<FlatGraph>> {
        let version = self.version.load(Ordering::Acquire);
        if let Some(f) = self.flat.read().as_ref()
            && f.version == version
        {
            return Some(f.clone());
        }
        let quiet = (self.born.elapsed().as_millis() as u64)
            .saturating_sub(self.last_insert_ms.load(Ordering::Relaxed))
            >= FLAT_QUIET_MS;
        if !quiet || self.hnsw.get_nb_point() < FLAT_MIN {
            return None;
        }
        // One builder; the others search hnsw_rs meanwhile.
        let _building = self.building.try_lock()?;
        let built = Arc::new(FlatGraph::build(&self.hnsw, version)?);
        // An insert that raced the copy bumped the version: the copy is stored but not used.
        *self.flat.write() = Some(built.clone());
        (self.version.load(Ordering::Acquire) == version).then_some(built)
    }

    /// Reloads a dump written by [`VectorIndex::dump`].
    pub fn load(dir: &Path, basename: &str, dist: MetricDistance) -> Result<Self, String> {
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        let hnsw = loader
            .load_hnsw_with_dist::<f32, MetricDistance>(dist)
            .map_err(|e| format!("reloading index {basename}: {e}"))?;
        Ok(Self::wrap(hnsw, dist))
    }
}

impl HnswIndex {
    fn insert_into_graph(&self, items: &[(&[f32], usize)]) {
        if items.len() >= PARALLEL_MIN {
            self.hnsw.parallel_insert_slice(&items.to_vec());
        } else {
            for &(v, slot) in items {
                self.hnsw.insert_slice((v, slot));
            }
        }
    }
}

impl VectorIndex for HnswIndex {
    fn insert(&self, items: &[(&[f32], usize)]) {
        // Bumped before and after: a copy taken while the graph changes carries the version
        // in between, which is never current once the insert returns.
        self.version.fetch_add(1, Ordering::AcqRel);
        self.insert_into_graph(items);
        self.version.fetch_add(1, Ordering::AcqRel);
        self.last_insert_ms
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
        if keep.is_none()
            && let Some(flat) = self.flat()
        {
            return flat.search(&self.dist, query, k, ef);
        }
        let found = match keep {
            None => self.hnsw.search(query, k, ef.max(k)),
            Some(f) => {
                let filter = KeepFilter(f);
                // Ask for ef hits (all kept) so the caller gets k even when many were dropped.
                let width = ef.max(k);
                let mut hits = self.hnsw.search_filter(query, width, width, Some(&filter));
                hits.truncate(k);
                hits
            }
        };
        found.into_iter().map(|n| (n.d_id, n.distance)).collect()
    }

    fn len(&self) -> usize {
        self.hnsw.get_nb_point()
    }

    fn dump(&self, dir: &Path, basename: &str) -> Result<(), String> {
        let used = self
            .hnsw
            .file_dump(dir, basename)
            .map_err(|e| format!("dumping index {basename}: {e}"))?;
        if used != basename {
            return Err(format!(
                "index dump went to {used} instead of {basename} (stale files in {})",
                dir.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_protocol::vector::Distance;

    fn grid() -> Vec<Vec<f32>> {
        (0..500)
            .map(|i| vec![(i % 25) as f32, (i / 25) as f32, 1.0])
            .collect()
    }

    /// An index holding `data` under slots 0..n.
    fn indexed(dist: MetricDistance, data: &[Vec<f32>]) -> HnswIndex {
        let idx = HnswIndex::new(&HnswParams::default(), dist, data.len());
        let items: Vec<(&[f32], usize)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_slice(), i))
            .collect();
        idx.insert(&items);
        idx
    }

    #[test]
    fn finds_exact_point_filters_and_reloads() {
        let dist = MetricDistance::new(Distance::Euclid);
        let data = grid();
        let idx = indexed(dist, &data);
        assert_eq!(idx.len(), 500);
        let hits = idx.search(&data[42], 5, 64, None);
        assert_eq!(hits[0], (42, 0.0));
        let odd = |s: usize| s % 2 == 1;
        let hits = idx.search(&data[42], 5, 64, Some(&odd));
        assert_eq!(hits.len(), 5);
        assert!(hits.iter().all(|(s, _)| s % 2 == 1), "{hits:?}");

        let tmp = tempfile::tempdir().expect("tmp");
        idx.dump(tmp.path(), "idx-1").expect("dump");
        let back = HnswIndex::load(tmp.path(), "idx-1", dist).expect("load");
        assert_eq!(back.len(), 500);
        assert_eq!(back.search(&data[7], 1, 64, None)[0].0, 7);
    }

    /// The flat copy answers like hnsw_rs's own walk, and never hides a later insert.
    #[test]
    fn flat_copy_matches_the_graph_and_follows_inserts() {
        // xorshift: deterministic data without a dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let dist = MetricDistance::new(Distance::Euclid);
        let data: Vec<Vec<f32>> = (0..6000)
            .map(|_| (0..16).map(|_| next()).collect())
            .collect();
        let idx = indexed(dist, &data);
        std::thread::sleep(std::time::Duration::from_millis(FLAT_QUIET_MS + 100));
        assert!(
            idx.flat().is_some(),
            "quiet index of 6000 points gets a flat copy"
        );
        let exact = |q: &[f32]| -> Vec<usize> {
            let mut all: Vec<(usize, f32)> = data
                .iter()
                .enumerate()
                .map(|(i, v)| (i, dist.index_distance(q, v)))
                .collect();
            all.sort_by(|a, b| a.1.total_cmp(&b.1));
            all.iter().take(10).map(|h| h.0).collect()
        };
        let (mut flat_found, mut graph_found) = (0, 0);
        for _ in 0..100 {
            let q: Vec<f32> = (0..16).map(|_| next()).collect();
            let truth = exact(&q);
            let flat = idx.search(&q, 10, 64, None);
            assert!(flat.windows(2).all(|w| w[0].1 <= w[1].1), "sorted");
            let graph = idx.hnsw.search(&q, 10, 64);
            flat_found += flat.iter().filter(|h| truth.contains(&h.0)).count();
            graph_found += graph.iter().filter(|h| truth.contains(&h.d_id)).count();
        }
        assert!(flat_found >= 950, "flat recall {flat_found}/1000");
        assert!(
            flat_found + 10 >= graph_found,
            "flat {flat_found} vs graph {graph_found}"
        );
        // A new point is found at once (the copy is stale), and after the next copy too.
        let new = vec![2.0f32; 16];
        idx.insert(&[(new.as_slice(), 6000)]);
        assert_eq!(idx.search(&new, 1, 64, None)[0].0, 6000);
        std::thread::sleep(std::time::Duration::from_millis(FLAT_QUIET_MS + 100));
        assert_eq!(idx.search(&new, 1, 64, None)[0].0, 6000);
        assert_eq!(
            idx.flat().map(|f| f.version),
            Some(idx.version.load(Ordering::Acquire))
        );
    }
}
