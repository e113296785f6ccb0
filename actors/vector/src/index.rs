//! The approximate nearest-neighbour index behind a trait, with its hnsw_rs implementation.
//!
//! Slots (hnsw_rs "data ids") are dense `usize`s handed out by the shard; the index knows nothing
//! about point ids, payloads or deletions (hnsw_rs has no delete: the shard filters tombstones).

use std::path::Path;

use abi_protocol::vector::HnswParams;
use hnsw_rs::api::AnnT;
use hnsw_rs::hnsw::Hnsw;
use hnsw_rs::hnswio::HnswIo;

use crate::distance::MetricDistance;

/// hnsw_rs can only reload dumps made with its maximum layer count (16).
const MAX_LAYER: usize = 16;
/// Below this many points a batch is inserted serially (rayon start-up costs more).
const PARALLEL_MIN: usize = 64;

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
        Self { hnsw }
    }

    /// Reloads a dump written by [`VectorIndex::dump`].
    pub fn load(dir: &Path, basename: &str, dist: MetricDistance) -> Result<Self, String> {
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, basename)));
        let hnsw = loader
            .load_hnsw_with_dist::<f32, MetricDistance>(dist)
            .map_err(|e| format!("reloading index {basename}: {e}"))?;
        Ok(Self { hnsw })
    }
}

impl VectorIndex for HnswIndex {
    fn insert(&self, items: &[(&[f32], usize)]) {
        if items.len() >= PARALLEL_MIN {
            self.hnsw.parallel_insert_slice(&items.to_vec());
        } else {
            for &(v, slot) in items {
                self.hnsw.insert_slice((v, slot));
            }
        }
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        keep: Option<&dyn Fn(usize) -> bool>,
    ) -> Vec<(usize, f32)> {
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

    #[test]
    fn finds_exact_point_filters_and_reloads() {
        let dist = MetricDistance::new(Distance::Euclid);
        let idx = HnswIndex::new(&HnswParams::default(), dist, 500);
        let data = grid();
        let items: Vec<(&[f32], usize)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_slice(), i))
            .collect();
        idx.insert(&items);
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
}
