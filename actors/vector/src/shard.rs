//! One shard: point store + ANN index + write-ahead log, snapshots and compaction.
//!
//! Pure library (no actors): thread-safe, blocking. Writes are serialised by `writer`, so the WAL
//! order is the apply order. A write is visible once applied, and durable after
//! [`Shard::sync_to`] returns for its sequence number: callers acknowledge only then.
//!
//! Deletes are tombstones: the slot of a deleted or replaced point is cleared and filtered out of
//! searches. [`Shard::compact`] rebuilds the index from the live points without holding any lock
//! during the build; writes made meanwhile are replayed onto the new index before the swap.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use abi_protocol::vector::{
    Distance as Metric, Filter, FsyncPolicy, HnswParams, PointId, PointInput, PointRecord,
    ScoredPoint, ScrollPage, SearchQuery, VectorError,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::distance::{Blocked, LANES, MetricDistance, lanes_at_most, prepare};
use crate::filter;
use crate::index::{HnswIndex, VectorIndex};
use crate::wal::{SyncMode, Wal, WalError, WalOptions};

/// Largest vector dimension accepted.
pub const MAX_DIM: u32 = 65_536;

/// Static parameters of a shard.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Vector dimension.
    pub dim: usize,
    /// Metric.
    pub metric: Metric,
    /// Index parameters.
    pub hnsw: HnswParams,
    /// WAL durability.
    pub fsync: FsyncPolicy,
    /// Compact when tombstones exceed this fraction of slots...
    pub compact_ratio: f64,
    /// ...and at least this many.
    pub compact_min: usize,
    /// WAL segment size.
    pub wal_segment_bytes: u64,
    /// Shards with at most this many vector components are searched by exact scan
    /// ([`FULL_SCAN_FLOATS`]; 0 always walks the graph).
    pub full_scan_floats: usize,
}

impl ShardConfig {
    /// Defaults for a collection's dimension and metric.
    pub fn new(dim: usize, metric: Metric, hnsw: HnswParams, fsync: FsyncPolicy) -> Self {
        Self {
            dim,
            metric,
            hnsw,
            fsync,
            compact_ratio: 0.2,
            compact_min: 1000,
            wal_segment_bytes: 64 << 20,
            full_scan_floats: FULL_SCAN_FLOATS,
        }
    }
}

/// One logged write; postcard-encoded as a WAL record.
#[derive(Debug, Serialize, Deserialize)]
enum WalRecord {
    /// Insert or replace (vectors already prepared, payloads as JSON text).
    Upsert(Vec<LoggedPoint>),
    /// Delete by id.
    Delete(Vec<PointId>),
}

#[derive(Debug, Serialize, Deserialize)]
struct LoggedPoint {
    id: PointId,
    vector: Vec<f32>,
    payload_json: Option<String>,
}

/// Snapshot manifest, written last (atomically) so a half-written snapshot is never used.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    /// WAL records up to this one are in the snapshot.
    seq: u64,
    /// Index dump basename under `snapshot/`.
    index: String,
    /// Point file under `snapshot/`.
    points: String,
    /// Slots the index holds.
    slots: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapPoint {
    id: PointId,
    slot: u64,
    vector: Vec<f32>,
    payload_json: Option<String>,
}

struct Stored {
    vector: Vec<f32>,
    payload: Option<Value>,
    slot: usize,
}

struct State {
    points: BTreeMap<PointId, Stored>,
    /// slot -> point id; None is a tombstone.
    slots: Vec<Option<PointId>>,
    dead: usize,
    index: Arc<HnswIndex>,
    /// Ids written while a compaction runs.
    touched: Option<HashSet<PointId>>,
    /// Inserts into a reloaded index (hnsw_rs samples their levels badly; see compaction).
    inserted_after_load: usize,
    loaded: bool,
    /// Bumped by every change to `points`: tells whether a [`ScanCopy`] is current.
    version: u64,
}

/// A contiguous copy of a small shard's points (row `i` is `ids[i]`, in id order) for
/// exact scans: a scan then streams one blocked matrix instead of visiting a tree node and
/// a separately allocated vector per point. Taken by the first scan after a change.
struct ScanCopy {
    version: u64,
    ids: Vec<PointId>,
    vectors: Blocked,
}

/// Shards holding at most this many vector components (1 MiB of `f32`) answer searches
/// by an exact scan rather than the graph (like Qdrant's `full_scan_threshold`): at this
/// size a scan takes tens of microseconds and always finds the true nearest points.
pub const FULL_SCAN_FLOATS: usize = 1 << 18;

/// Up to this many hits, a scan keeps them in a small sorted buffer instead of
/// collecting and partially sorting every distance.
const SMALL_K: usize = 128;

/// (index distance, then id): the order of hits. The ids are compared only on a tie.
fn hit_order<I: std::borrow::Borrow<PointId>>(a: &(I, f32), b: &(I, f32)) -> std::cmp::Ordering {
    a.1.total_cmp(&b.1)
        .then_with(|| a.0.borrow().cmp(b.0.borrow()))
}

thread_local! {
    /// A small shard's scan distances, kept for the thread's next scan: a search then
    /// allocates and zeroes no buffer of its own.
    static SCAN_DISTANCES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The few best hits so far, sorted; most candidates are rejected by one float comparison
/// with the worst kept (ties and NaN take the full order). Hits borrow their ids (16 bytes
/// a hit instead of 48): the ids are copied once, for the hits kept at the end.
struct TopK<'a> {
    want: usize,
    best: Vec<(&'a PointId, f32)>,
    /// The worst kept once `want` are kept, else infinity.
    worst: f32,
}

impl<'a> TopK<'a> {
    fn new(want: usize) -> Self {
        Self {
            want,
            best: Vec::with_capacity(want + 1),
            worst: f32::INFINITY,
        }
    }

    fn offer(&mut self, id: &'a PointId, d: f32) {
        if d > self.worst {
            return;
        }
        let hit = (id, d);
        if self.best.len() == self.want {
            if self.best.last().is_some_and(|w| hit_order(&hit, w).is_ge()) {
                return;
            }
            self.best.pop();
        }
        let at = self.best.partition_point(|h| hit_order(h, &hit).is_lt());
        self.best.insert(at, hit);
        if self.best.len() == self.want {
            self.worst = self.best.last().map_or(f32::INFINITY, |w| w.1);
        }
    }

    /// The hits kept, nearest first, with their ids copied.
    fn into_hits(self) -> Vec<(PointId, f32)> {
        self.best.into_iter().map(|(id, d)| (*id, d)).collect()
    }
}

/// The `want` nearest of `candidates` (index distance, then id), nearest first.
/// Candidates are borrowed: ids are copied only for the few kept.
fn best_hits<'a>(
    candidates: impl Iterator<Item = (&'a PointId, f32)>,
    want: usize,
) -> Vec<(PointId, f32)> {
    if want > SMALL_K {
        let mut hits: Vec<(PointId, f32)> = candidates.map(|(id, d)| (*id, d)).collect();
        if hits.len() > want {
            hits.select_nth_unstable_by(want - 1, hit_order);
            hits.truncate(want);
        }
        hits.sort_unstable_by(hit_order);
        return hits;
    }
    let mut top = TopK::new(want);
    for (id, d) in candidates {
        top.offer(id, d);
    }
    top.into_hits()
}

/// [`best_hits`] of a scan's distances (`dists[i]` belongs to `ids[i]`; `dists` may run
/// on in whole blocks of [`LANES`]): a block none of whose distances can make the list
/// is skipped with one vectorised comparison.
fn best_of_scan(ids: &[PointId], dists: &[f32], want: usize) -> Vec<(PointId, f32)> {
    if want > SMALL_K {
        return best_hits(ids.iter().zip(dists.iter().copied()), want);
    }
    let mut top = TopK::new(want);
    for (ids, ds) in ids.chunks(LANES).zip(dists.as_chunks::<LANES>().0) {
        // Only the lanes that could make the list are offered.
        let mut lanes = lanes_at_most(ds, top.worst);
        while lanes != 0 {
            let i = lanes.trailing_zeros() as usize;
            lanes &= lanes - 1;
            if let (Some(id), Some(&d)) = (ids.get(i), ds.get(i)) {
                top.offer(id, d);
            }
        }
    }
    top.into_hits()
}

/// A shard of a collection; see the module docs.
pub struct Shard {
    dir: PathBuf,
    cfg: ShardConfig,
    dist: MetricDistance,
    state: RwLock<State>,
    writer: Mutex<()>,
    wal: Wal,
    compacting: AtomicBool,
    scan_copy: Mutex<Option<Arc<ScanCopy>>>,
}

impl std::fmt::Debug for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shard").field("dir", &self.dir).finish()
    }
}

fn storage<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> VectorError + '_ {
    move |e| VectorError::Storage(format!("{what}: {e}"))
}

fn wal_err(e: WalError) -> VectorError {
    VectorError::Storage(e.to_string())
}

/// Validates one vector: dimension and finite values (NaN/inf are refused).
pub fn check_vector(v: &[f32], dim: usize, metric: Metric) -> Result<(), VectorError> {
    if v.len() != dim {
        return Err(VectorError::BadRequest(format!(
            "vector has dimension {} but the collection expects {dim}",
            v.len()
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(VectorError::BadRequest(format!(
            "vector value {i} is not a finite number"
        )));
    }
    if metric == Metric::Cosine && v.iter().all(|&x| x == 0.0) {
        return Err(VectorError::BadRequest(
            "a zero vector has no cosine direction".into(),
        ));
    }
    Ok(())
}

fn parse_payload(json: &Option<String>) -> Result<Option<Value>, VectorError> {
    match json {
        None => Ok(None),
        Some(s) => {
            let v: Value = serde_json::from_str(s)
                .map_err(|e| VectorError::BadRequest(format!("payload is not valid JSON: {e}")))?;
            if !v.is_object() {
                return Err(VectorError::BadRequest(
                    "payload must be a JSON object".into(),
                ));
            }
            Ok(Some(v))
        }
    }
}

impl State {
    fn live(&self, slot: usize) -> Option<PointId> {
        self.slots.get(slot).copied().flatten()
    }

    fn kill(&mut self, id: PointId) -> bool {
        self.version += 1;
        match self.points.remove(&id) {
            Some(old) => {
                self.slots[old.slot] = None;
                self.dead += 1;
                if let Some(t) = &mut self.touched {
                    t.insert(id);
                }
                true
            }
            None => false,
        }
    }

    /// Applies an upsert whose vectors were inserted into `index` at `first_slot..`.
    fn apply_upsert(&mut self, points: Vec<(PointId, Vec<f32>, Option<Value>)>, first_slot: usize) {
        self.version += 1;
        for (i, (id, vector, payload)) in points.into_iter().enumerate() {
            let slot = first_slot + i;
            if let Some(old) = self.points.get(&id) {
                let old_slot = old.slot;
                self.slots[old_slot] = None;
                self.dead += 1;
            }
            if self.slots.len() <= slot {
                self.slots.resize(slot + 1, None);
            }
            self.slots[slot] = Some(id);
            if let Some(t) = &mut self.touched {
                t.insert(id);
            }
            self.points.insert(
                id,
                Stored {
                    vector,
                    payload,
                    slot,
                },
            );
        }
    }
}

/// Inserts a batch into `state`'s index and applies it (used by replay, which owns the state).
fn replay_upsert(
    state: &mut State,
    pts: Vec<LoggedPoint>,
    dim: usize,
    metric: Metric,
) -> Result<(), String> {
    let mut parsed = Vec::with_capacity(pts.len());
    for p in pts {
        check_vector(&p.vector, dim, metric).map_err(|e| e.to_string())?;
        let payload = parse_payload(&p.payload_json).map_err(|e| e.to_string())?;
        parsed.push((p.id, p.vector, payload));
    }
    let first = state.slots.len();
    {
        let items: Vec<(&[f32], usize)> = parsed
            .iter()
            .enumerate()
            .map(|(i, p)| (p.1.as_slice(), first + i))
            .collect();
        state.index.insert(&items);
    }
    if state.loaded {
        state.inserted_after_load += parsed.len();
    }
    state.apply_upsert(parsed, first);
    Ok(())
}

impl Shard {
    /// Opens the shard stored in `dir` (created if missing): latest snapshot, then WAL replay.
    pub fn open(dir: &Path, cfg: ShardConfig) -> Result<Shard, VectorError> {
        fs::create_dir_all(dir).map_err(storage("creating shard dir"))?;
        let dist = MetricDistance::new(cfg.metric);
        let snap_dir = dir.join("snapshot");
        let manifest_path = snap_dir.join("MANIFEST");
        let (mut state, after) = if manifest_path.exists() {
            let bytes = fs::read(&manifest_path).map_err(storage("reading snapshot manifest"))?;
            let m: Manifest =
                postcard::from_bytes(&bytes).map_err(storage("decoding snapshot manifest"))?;
            let index = HnswIndex::load(&snap_dir, &m.index, dist).map_err(VectorError::Storage)?;
            let bytes = fs::read(snap_dir.join(&m.points)).map_err(storage("reading snapshot"))?;
            let pts: Vec<SnapPoint> =
                postcard::from_bytes(&bytes).map_err(storage("decoding snapshot points"))?;
            let mut slots = vec![None; m.slots as usize];
            let mut points = BTreeMap::new();
            for p in pts {
                let slot = p.slot as usize;
                if slot >= slots.len() {
                    return Err(VectorError::Storage(format!(
                        "snapshot point {} has slot {slot} beyond {}",
                        p.id, m.slots
                    )));
                }
                slots[slot] = Some(p.id);
                let payload = parse_payload(&p.payload_json)
                    .map_err(|e| VectorError::Storage(format!("snapshot payload: {e}")))?;
                points.insert(
                    p.id,
                    Stored {
                        vector: p.vector,
                        payload,
                        slot,
                    },
                );
            }
            if index.len() != slots.len() {
                return Err(VectorError::Storage(format!(
                    "snapshot index holds {} slots, manifest says {}",
                    index.len(),
                    slots.len()
                )));
            }
            let dead = slots.len() - points.len();
            (
                State {
                    points,
                    slots,
                    dead,
                    index: Arc::new(index),
                    touched: None,
                    inserted_after_load: 0,
                    loaded: true,
                    version: 0,
                },
                m.seq,
            )
        } else {
            (
                State {
                    points: BTreeMap::new(),
                    slots: Vec::new(),
                    dead: 0,
                    index: Arc::new(HnswIndex::new(&cfg.hnsw, dist, 1024)),
                    touched: None,
                    inserted_after_load: 0,
                    loaded: false,
                    version: 0,
                },
                0,
            )
        };
        let sync = match cfg.fsync {
            FsyncPolicy::Always => SyncMode::Immediate,
            FsyncPolicy::GroupCommitMs(ms) => SyncMode::Group(Duration::from_millis(ms as u64)),
            FsyncPolicy::Never => SyncMode::Never,
        };
        let (dim, metric) = (cfg.dim, cfg.metric);
        let mut replay = |seq: u64, bytes: &[u8]| -> Result<(), WalError> {
            let rec: WalRecord = postcard::from_bytes(bytes).map_err(|e| WalError::Replay {
                seq,
                reason: e.to_string(),
            })?;
            match rec {
                WalRecord::Upsert(pts) => replay_upsert(&mut state, pts, dim, metric)
                    .map_err(|reason| WalError::Replay { seq, reason }),
                WalRecord::Delete(ids) => {
                    for id in ids {
                        state.kill(id);
                    }
                    Ok(())
                }
            }
        };
        let wal = Wal::open(
            &dir.join("wal"),
            WalOptions {
                segment_bytes: cfg.wal_segment_bytes,
                sync,
            },
            after,
            &mut replay,
        )
        .map_err(wal_err)?;
        Ok(Shard {
            dir: dir.to_path_buf(),
            cfg,
            dist,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            wal,
            compacting: AtomicBool::new(false),
            scan_copy: Mutex::new(None),
        })
    }

    /// The shard's configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.cfg
    }

    /// Validates, logs and applies an upsert batch; nothing is written when any point is bad.
    /// Returns the WAL sequence number to pass to [`Shard::sync_to`] before acknowledging.
    pub fn upsert(&self, points: Vec<PointInput>) -> Result<u64, VectorError> {
        let mut logged = Vec::with_capacity(points.len());
        let mut parsed = Vec::with_capacity(points.len());
        let mut seen = HashSet::with_capacity(points.len());
        for p in points {
            check_vector(&p.vector, self.cfg.dim, self.cfg.metric)?;
            let payload = parse_payload(&p.payload_json)?;
            let mut v = p.vector;
            prepare(self.cfg.metric, &mut v);
            if !seen.insert(p.id) {
                // Last write wins inside one batch, as in Qdrant: drop the earlier copy.
                parsed.retain(|(id, _, _): &(PointId, Vec<f32>, Option<Value>)| *id != p.id);
                logged.retain(|l: &LoggedPoint| l.id != p.id);
            }
            logged.push(LoggedPoint {
                id: p.id,
                vector: v.clone(),
                payload_json: p.payload_json,
            });
            parsed.push((p.id, v, payload));
        }
        let record = postcard::to_stdvec(&WalRecord::Upsert(logged))
            .map_err(storage("encoding wal record"))?;
        let _w = self.writer.lock();
        let seq = self.wal.append(&record).map_err(wal_err)?;
        let (index, first) = {
            let st = self.state.read();
            (Arc::clone(&st.index), st.slots.len())
        };
        // The graph insert runs without the state lock: searches go on meanwhile and simply do
        // not see slots that are not applied yet.
        let items: Vec<(&[f32], usize)> = parsed
            .iter()
            .enumerate()
            .map(|(i, p)| (p.1.as_slice(), first + i))
            .collect();
        index.insert(&items);
        let mut st = self.state.write();
        if st.loaded {
            st.inserted_after_load += parsed.len();
        }
        st.apply_upsert(parsed, first);
        Ok(seq)
    }

    /// Logs and applies a delete; returns the WAL sequence number (see [`Shard::upsert`]).
    pub fn delete(&self, ids: Vec<PointId>) -> Result<u64, VectorError> {
        let record =
            postcard::to_stdvec(&WalRecord::Delete(ids.clone())).map_err(storage("encoding"))?;
        let _w = self.writer.lock();
        let seq = self.wal.append(&record).map_err(wal_err)?;
        let mut st = self.state.write();
        for id in ids {
            st.kill(id);
        }
        Ok(seq)
    }

    /// Blocks until the WAL holds everything up to `seq` durably (per the fsync policy).
    pub fn sync_to(&self, seq: u64) -> Result<(), VectorError> {
        self.wal.sync_to(seq).map_err(wal_err)
    }

    /// Live points.
    pub fn len(&self) -> usize {
        self.state.read().points.len()
    }

    /// True when the shard holds no live point.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tombstoned slots still in the index.
    pub fn tombstones(&self) -> usize {
        self.state.read().dead
    }

    fn record(id: PointId, s: &Stored, with_payload: bool, with_vector: bool) -> PointRecord {
        PointRecord {
            id,
            vector: with_vector.then(|| s.vector.clone()),
            payload_json: if with_payload {
                s.payload.as_ref().map(Value::to_string)
            } else {
                None
            },
        }
    }

    /// Points by id, in request order; missing ids are left out.
    pub fn get(&self, ids: &[PointId], with_payload: bool, with_vector: bool) -> Vec<PointRecord> {
        let st = self.state.read();
        ids.iter()
            .filter_map(|id| {
                st.points
                    .get(id)
                    .map(|s| Self::record(*id, s, with_payload, with_vector))
            })
            .collect()
    }

    /// Live points matching the filter.
    pub fn count(&self, filter: Option<&Filter>) -> Result<u64, VectorError> {
        let st = self.state.read();
        Ok(match filter {
            None => st.points.len() as u64,
            Some(f) => {
                filter::validate(f).map_err(VectorError::BadRequest)?;
                st.points
                    .iter()
                    .filter(|(id, s)| matches(f, **id, s))
                    .count() as u64
            }
        })
    }

    /// A page of points in id order starting at `offset`.
    pub fn scroll(
        &self,
        offset: Option<PointId>,
        limit: usize,
        filter: Option<&Filter>,
        with_payload: bool,
        with_vector: bool,
    ) -> Result<ScrollPage, VectorError> {
        if let Some(f) = filter {
            filter::validate(f).map_err(VectorError::BadRequest)?;
        }
        let st = self.state.read();
        let mut it = st
            .points
            .range(offset.unwrap_or(PointId::Num(0))..)
            .filter(|(id, s)| filter.is_none_or(|f| matches(f, **id, s)));
        let points: Vec<PointRecord> = it
            .by_ref()
            .take(limit)
            .map(|(id, s)| Self::record(*id, s, with_payload, with_vector))
            .collect();
        let next = it.next().map(|(id, _)| *id);
        Ok(ScrollPage { points, next })
    }

    /// Answers one query: `limit + offset` best live hits matching the filter (the caller pages).
    pub fn search(&self, q: &SearchQuery) -> Result<Vec<ScoredPoint>, VectorError> {
        check_vector(&q.vector, self.cfg.dim, self.cfg.metric)?;
        if let Some(f) = &q.filter {
            filter::validate(f).map_err(VectorError::BadRequest)?;
        }
        let mut v = q.vector.clone();
        prepare(self.cfg.metric, &mut v);
        let want = (q.limit as usize).saturating_add(q.offset as usize);
        if want == 0 {
            return Ok(Vec::new());
        }
        let ef = q.ef.unwrap_or(self.cfg.hnsw.ef) as usize;
        let st = self.state.read();
        let hits = if self.small(&st) {
            // Small shard: an exact scan is cheaper than a graph walk, and exact.
            self.scan(&st, &v, q.filter.as_ref(), want)
        } else {
            let clean = q.filter.is_none() && st.dead == 0 && st.index.len() == st.slots.len();
            let hits: Vec<(PointId, f32)> = if clean {
                st.index
                    .search(&v, want, ef, None)
                    .into_iter()
                    .filter_map(|(slot, d)| st.live(slot).map(|id| (id, d)))
                    .collect()
            } else {
                let keep = |slot: usize| match st.live(slot) {
                    None => false,
                    Some(id) => q
                        .filter
                        .as_ref()
                        .is_none_or(|f| st.points.get(&id).is_some_and(|s| matches(f, id, s))),
                };
                st.index
                    .search(&v, want, ef, Some(&keep))
                    .into_iter()
                    .filter_map(|(slot, d)| st.live(slot).map(|id| (id, d)))
                    .collect()
            };
            // The graph walk ran out (very selective filter, many tombstones): answer
            // exactly by a scan when more matching points exist than were found.
            let short = hits.len() < want
                && match &q.filter {
                    None => st.points.len(),
                    Some(f) => st
                        .points
                        .iter()
                        .filter(|(id, s)| matches(f, **id, s))
                        .count(),
                } > hits.len();
            if short {
                self.scan(&st, &v, q.filter.as_ref(), want)
            } else {
                hits
            }
        };
        let out = hits
            .into_iter()
            .map(|(id, d)| (id, self.dist.score(d)))
            .filter(|(_, score)| {
                q.score_threshold
                    .is_none_or(|t| self.dist.passes(*score, t))
            })
            .map(|(id, score)| {
                let s = st.points.get(&id).expect("hit ids are live under the lock");
                ScoredPoint {
                    id,
                    score,
                    vector: q.with_vector.then(|| s.vector.clone()),
                    payload_json: if q.with_payload {
                        s.payload.as_ref().map(Value::to_string)
                    } else {
                        None
                    },
                }
            })
            .collect();
        Ok(out)
    }

    /// The `want` nearest live points matching `filter`, by computing every distance.
    fn scan(
        &self,
        st: &State,
        v: &[f32],
        filter: Option<&Filter>,
        want: usize,
    ) -> Vec<(PointId, f32)> {
        if filter.is_none() && self.small(st) {
            let copy = self.scan_copy(st);
            return SCAN_DISTANCES.with(|buf| {
                let scan = |dists: &mut Vec<f32>| {
                    self.dist.block_distances(v, &copy.vectors, dists);
                    best_of_scan(&copy.ids, dists, want)
                };
                match buf.try_borrow_mut() {
                    Ok(mut dists) => scan(&mut dists),
                    Err(_) => scan(&mut Vec::new()),
                }
            });
        }
        let candidates = st
            .points
            .iter()
            .filter(|(id, s)| filter.is_none_or(|f| matches(f, **id, s)))
            .map(|(id, s)| (id, self.dist.index_distance(v, &s.vector)));
        best_hits(candidates, want)
    }

    /// The current [`ScanCopy`] of `st`, taken now if points changed since the last one.
    fn scan_copy(&self, st: &State) -> Arc<ScanCopy> {
        let mut slot = self.scan_copy.lock();
        if let Some(copy) = slot.as_ref().filter(|c| c.version == st.version) {
            return copy.clone();
        }
        let mut ids = Vec::with_capacity(st.points.len());
        let mut vectors = Blocked::with_capacity(self.cfg.dim, st.points.len());
        for (id, s) in &st.points {
            ids.push(*id);
            vectors.push(&s.vector);
        }
        let copy = Arc::new(ScanCopy {
            version: st.version,
            ids,
            vectors,
        });
        *slot = Some(copy.clone());
        copy
    }

    /// Whether this shard is small enough that reads cost microseconds (exact scans):
    /// the shard actor then answers them inline instead of on a blocking thread.
    pub fn is_small(&self) -> bool {
        self.small(&self.state.read())
    }

    fn small(&self, st: &State) -> bool {
        st.points.len().saturating_mul(self.cfg.dim) <= self.cfg.full_scan_floats
    }

    /// Writes a snapshot (index dump + point store) and drops the WAL segments it covers.
    /// Writers wait for its duration; readers do not. Returns the covered sequence number.
    pub fn snapshot(&self) -> Result<u64, VectorError> {
        let _w = self.writer.lock();
        let st = self.state.read();
        let seq = self.wal.next_seq() - 1;
        // Everything in the snapshot must be durable in the WAL first, or a crash right after
        // truncation could lose writes that were never acknowledged anyway but are now visible.
        self.wal.sync_to(seq).map_err(wal_err)?;
        let snap_dir = self.dir.join("snapshot");
        fs::create_dir_all(&snap_dir).map_err(storage("creating snapshot dir"))?;
        let old: Option<Manifest> = fs::read(snap_dir.join("MANIFEST"))
            .ok()
            .and_then(|b| postcard::from_bytes(&b).ok());
        if old.as_ref().is_some_and(|m| m.seq == seq) {
            return Ok(seq);
        }
        let index_name = format!("index-{seq}");
        let points_name = format!("points-{seq}.bin");
        for suffix in [".hnsw.graph", ".hnsw.data"] {
            let _ = fs::remove_file(snap_dir.join(format!("{index_name}{suffix}")));
        }
        st.index
            .dump(&snap_dir, &index_name)
            .map_err(VectorError::Storage)?;
        let pts: Vec<SnapPoint> = st
            .points
            .iter()
            .map(|(id, s)| SnapPoint {
                id: *id,
                slot: s.slot as u64,
                vector: s.vector.clone(),
                payload_json: s.payload.as_ref().map(Value::to_string),
            })
            .collect();
        let bytes = postcard::to_stdvec(&pts).map_err(storage("encoding snapshot"))?;
        write_durable(&snap_dir.join(&points_name), &bytes)?;
        for suffix in [".hnsw.graph", ".hnsw.data"] {
            let p = snap_dir.join(format!("{index_name}{suffix}"));
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(storage("syncing index dump"))?;
        }
        let manifest = Manifest {
            seq,
            index: index_name,
            points: points_name,
            slots: st.slots.len() as u64,
        };
        let mbytes = postcard::to_stdvec(&manifest).map_err(storage("encoding manifest"))?;
        let tmp = snap_dir.join("MANIFEST.tmp");
        write_durable(&tmp, &mbytes)?;
        fs::rename(&tmp, snap_dir.join("MANIFEST")).map_err(storage("installing manifest"))?;
        fs::File::open(&snap_dir)
            .and_then(|d| d.sync_all())
            .map_err(storage("syncing snapshot dir"))?;
        if let Some(m) = old {
            let _ = fs::remove_file(snap_dir.join(&m.points));
            for suffix in [".hnsw.graph", ".hnsw.data"] {
                let _ = fs::remove_file(snap_dir.join(format!("{}{suffix}", m.index)));
            }
        }
        drop(st);
        self.wal.truncate_through(seq).map_err(wal_err)?;
        Ok(seq)
    }

    /// Whether tombstones (or inserts into a reloaded graph) call for a rebuild.
    pub fn needs_compaction(&self) -> bool {
        let st = self.state.read();
        let n = st.slots.len();
        let stale = st.dead + st.inserted_after_load / 2;
        !self.compacting.load(Ordering::Relaxed)
            && stale >= self.cfg.compact_min
            && stale as f64 >= self.cfg.compact_ratio * n as f64
    }

    /// Rebuilds the index from live points. Long, but holds no lock while building: reads and
    /// writes continue, and writes made meanwhile are re-applied to the new index at the swap.
    /// Returns false when another compaction was already running.
    pub fn compact(&self) -> Result<bool, VectorError> {
        if self.compacting.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        struct Reset<'a>(&'a AtomicBool);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _reset = Reset(&self.compacting);
        let live: Vec<(PointId, Vec<f32>)> = {
            let mut st = self.state.write();
            st.touched = Some(HashSet::new());
            st.points
                .iter()
                .map(|(id, s)| (*id, s.vector.clone()))
                .collect()
        };
        let index = HnswIndex::new(&self.cfg.hnsw, self.dist, live.len());
        {
            let items: Vec<(&[f32], usize)> = live
                .iter()
                .enumerate()
                .map(|(slot, (_, v))| (v.as_slice(), slot))
                .collect();
            index.insert(&items);
        }
        let mut slots: Vec<Option<PointId>> = live.iter().map(|(id, _)| Some(*id)).collect();
        drop(live);
        // Swap: no writer in flight, readers wait only for this short step.
        let _w = self.writer.lock();
        let mut st = self.state.write();
        let touched = st.touched.take().unwrap_or_default();
        if !touched.is_empty() {
            let mut pos: std::collections::HashMap<PointId, usize> = slots
                .iter()
                .enumerate()
                .filter_map(|(i, id)| id.map(|id| (id, i)))
                .collect();
            let mut again = Vec::new();
            for id in &touched {
                if let Some(i) = pos.remove(id) {
                    slots[i] = None;
                }
                if st.points.contains_key(id) {
                    again.push(*id);
                }
            }
            let first = slots.len();
            let items: Vec<(&[f32], usize)> = again
                .iter()
                .enumerate()
                .map(|(i, id)| (st.points[id].vector.as_slice(), first + i))
                .collect();
            index.insert(&items);
            slots.extend(again.iter().map(|id| Some(*id)));
        }
        for (slot, id) in slots.iter().enumerate() {
            if let Some(s) = id.and_then(|id| st.points.get_mut(&id)) {
                s.slot = slot;
            }
        }
        st.dead = slots.iter().filter(|s| s.is_none()).count();
        st.slots = slots;
        st.index = Arc::new(index);
        st.inserted_after_load = 0;
        st.loaded = false;
        Ok(true)
    }
}

fn matches(f: &Filter, id: PointId, s: &Stored) -> bool {
    match &s.payload {
        Some(p) => filter::matches(f, id, p),
        None => filter::matches(f, id, &Value::Null),
    }
}

fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), VectorError> {
    use std::io::Write;
    let mut f = fs::File::create(path).map_err(storage("creating snapshot file"))?;
    f.write_all(bytes)
        .map_err(storage("writing snapshot file"))?;
    f.sync_all().map_err(storage("syncing snapshot file"))
}

#[cfg(test)]
mod tests {
    use super::{LANES, PointId, best_hits, best_of_scan, hit_order};

    /// The small buffer (`TopK`, blocked scan) and the full sort agree, ties included:
    /// equal distances come out by id, whatever order the ids were scanned in.
    #[test]
    fn top_k_orders_ties_by_id_like_the_full_sort() {
        // 50 points over 5 distinct distances, ids scanned in a scrambled order.
        let ids: Vec<PointId> = (0..50u64)
            .map(|i| {
                let n = (i * 37) % 50;
                if n % 3 == 0 {
                    PointId::Uuid(u128::from(n) << 64)
                } else {
                    PointId::Num(n)
                }
            })
            .collect();
        let dists: Vec<f32> = (0..50).map(|i| (i % 5) as f32 * 0.25).collect();
        let mut truth: Vec<(PointId, f32)> =
            ids.iter().copied().zip(dists.iter().copied()).collect();
        truth.sort_by(hit_order);
        // A scan's distances run on in whole blocks (`block_distances` pads them); the
        // padding lanes have no id and are never offered.
        let mut padded = dists.clone();
        padded.resize(dists.len().div_ceil(LANES) * LANES, 0.0);
        for want in [1, 3, 7, 10, 23, 50] {
            let scanned = best_of_scan(&ids, &padded, want);
            let offered = best_hits(ids.iter().zip(dists.iter().copied()), want);
            assert_eq!(scanned, truth[..want], "scan, k = {want}");
            assert_eq!(offered, truth[..want], "offers, k = {want}");
        }
    }
}
