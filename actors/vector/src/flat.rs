//! A frozen, flat copy of an hnsw_rs graph to search: adjacency lists in arrays, vectors in one
//! matrix by slot, an epoch-stamped visited array reused per thread. hnsw_rs's own walk
//! allocates per visited node (an `Arc` per candidate, a SipHash map of visited points, a lock
//! per neighbour list read), which dominates a search at small `ef`; this walk allocates
//! nothing per node. Same graph, same algorithm (greedy descent, then a beam of width `ef` on
//! layer 0), so the results match hnsw_rs's.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use hnsw_rs::hnsw::Hnsw;

use crate::distance::MetricDistance;

/// Neighbour lists of one layer: `nbrs[offsets[s]..offsets[s + 1]]` for slot `s`.
struct Adjacency {
    offsets: Vec<u32>,
    nbrs: Vec<u32>,
}

impl Adjacency {
    fn of(&self, slot: u32) -> &[u32] {
        let s = slot as usize;
        match (self.offsets.get(s), self.offsets.get(s + 1)) {
            (Some(&a), Some(&b)) => &self.nbrs[a as usize..b as usize],
            _ => &[],
        }
    }
}

/// The flat graph of one index at one version.
pub struct FlatGraph {
    dim: usize,
    /// Row `s` = the vector of slot `s` (zeros for slots never inserted).
    vecs: Vec<f32>,
    layers: Vec<Adjacency>,
    entry: u32,
    /// The index version this copy was taken at.
    pub version: u64,
}

/// A distance paired with a slot, ordered by distance (then slot) for the heaps.
#[derive(Clone, Copy, PartialEq)]
struct Hit(f32, u32);

impl Eq for Hit {}
impl PartialOrd for Hit {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Hit {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then(self.1.cmp(&o.1))
    }
}

thread_local! {
    /// Visited stamps by slot and the current stamp: a slot is visited when its stamp equals
    /// the current one, so clearing is one increment.
    static VISITED: RefCell<(Vec<u32>, u32)> = const { RefCell::new((Vec::new(), 0)) };
}

impl FlatGraph {
    /// Copies `hnsw`'s graph and vectors (`None` when it is empty).
    pub fn build(hnsw: &Hnsw<'static, f32, MetricDistance>, version: u64) -> Option<Self> {
        let top = hnsw.get_max_level_observed() as usize;
        let mut dim = 0;
        let mut vecs: Vec<f32> = Vec::new();
        // (slot, neighbour slots per layer)
        let mut lists: Vec<(u32, Vec<Vec<u32>>)> = Vec::with_capacity(hnsw.get_nb_point());
        let mut entry = None;
        for p in hnsw.get_point_indexation() {
            let slot = p.get_origin_id();
            let v = p.get_v();
            if dim == 0 {
                dim = v.len();
            }
            if v.len() != dim || dim == 0 {
                return None;
            }
            let need = (slot + 1) * dim;
            if vecs.len() < need {
                vecs.resize(need, 0.0);
            }
            vecs[slot * dim..need].copy_from_slice(v);
            if p.get_point_id().0 as usize == top {
                entry.get_or_insert(slot as u32);
            }
            let nb: Vec<Vec<u32>> = p
                .get_neighborhood_id()
                .into_iter()
                .map(|layer| layer.into_iter().map(|n| n.d_id as u32).collect())
                .collect();
            lists.push((slot as u32, nb));
        }
        let entry = entry?;
        let slots = vecs.len() / dim;
        let mut layers = Vec::with_capacity(top + 1);
        for layer in 0..=top {
            let mut counts = vec![0u32; slots + 1];
            for (slot, nb) in &lists {
                counts[*slot as usize + 1] = nb.get(layer).map_or(0, |l| l.len() as u32);
            }
            for i in 1..counts.len() {
                counts[i] += counts[i - 1];
            }
            let mut nbrs = vec![0u32; counts[slots] as usize];
            for (slot, nb) in &lists {
                if let Some(l) = nb.get(layer) {
                    let at = counts[*slot as usize] as usize;
                    nbrs[at..at + l.len()].copy_from_slice(l);
                }
            }
            layers.push(Adjacency {
                offsets: counts,
                nbrs,
            });
        }
        Some(Self {
            dim,
            vecs,
            layers,
            entry,
            version,
        })
    }

    /// Rows of the vector matrix (the highest slot + 1).
    fn slots(&self) -> usize {
        self.vecs.len() / self.dim
    }

    fn row(&self, slot: u32) -> &[f32] {
        let s = slot as usize * self.dim;
        &self.vecs[s..s + self.dim]
    }

    /// Up to `k` nearest slots, nearest first, by a beam of width `ef` (at least `k`).
    pub fn search(
        &self,
        dist: &MetricDistance,
        q: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<(usize, f32)> {
        if q.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        let mut ep = self.entry;
        let mut d_ep = dist.index_distance(q, self.row(ep));
        for layer in self.layers.iter().skip(1).rev() {
            let mut moved = true;
            while moved {
                moved = false;
                for &n in layer.of(ep) {
                    let d = dist.index_distance(q, self.row(n));
                    if d < d_ep {
                        (d_ep, ep, moved) = (d, n, true);
                    }
                }
            }
        }
        VISITED.with(|cell| {
            let mut cell = cell.borrow_mut();
            let (marks, stamp) = &mut *cell;
            if marks.len() < self.slots() {
                marks.resize(self.slots(), 0);
            }
            *stamp = stamp.wrapping_add(1);
            if *stamp == 0 {
                marks.iter_mut().for_each(|m| *m = 0);
                *stamp = 1;
            }
            let stamp = *stamp;
            let base = &self.layers[0];
            let mut candidates = BinaryHeap::with_capacity(ef * 2);
            let mut best: BinaryHeap<Hit> = BinaryHeap::with_capacity(ef + 1);
            marks[ep as usize] = stamp;
            candidates.push(Reverse(Hit(d_ep, ep)));
            best.push(Hit(d_ep, ep));
            while let Some(Reverse(Hit(d, c))) = candidates.pop() {
                if best.len() >= ef && best.peek().is_some_and(|w| d > w.0) {
                    break;
                }
                for &n in base.of(c) {
                    let m = &mut marks[n as usize];
                    if *m == stamp {
                        continue;
                    }
                    *m = stamp;
                    let dn = dist.index_distance(q, self.row(n));
                    if best.len() < ef || best.peek().is_some_and(|w| dn < w.0) {
                        candidates.push(Reverse(Hit(dn, n)));
                        best.push(Hit(dn, n));
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
            let mut out: Vec<(usize, f32)> =
                best.into_iter().map(|Hit(d, s)| (s as usize, d)).collect();
            out.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
            out.truncate(k);
            out
        })
    }
}
