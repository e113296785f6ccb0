//! Shard engine tests on real files: tombstones, filters, replay, snapshots, compaction.

use std::path::Path;

use abi_protocol::vector::{
    Condition, Distance, Filter, FsyncPolicy, HnswParams, MatchValue, PointId, PointInput, Range,
    SearchQuery,
};

use crate::shard::{Shard, ShardConfig};

fn cfg() -> ShardConfig {
    let mut c = ShardConfig::new(
        4,
        Distance::Cosine,
        HnswParams {
            m: 16,
            ef_construct: 100,
            ef: 64,
        },
        FsyncPolicy::Always,
    );
    c.compact_min = 10;
    c.wal_segment_bytes = 4096;
    // These shards are tiny: walk the graph anyway, it is what most tests check.
    c.full_scan_floats = 0;
    c
}

/// Deterministic unit-ish vectors.
fn vector(i: u64) -> Vec<f32> {
    let f = i as f32;
    vec![
        (f * 0.37).sin() + 1.5,
        (f * 0.11).cos(),
        (f * 0.05).sin(),
        0.5,
    ]
}

fn point(i: u64) -> PointInput {
    PointInput {
        id: PointId::Num(i),
        vector: vector(i),
        payload_json: Some(format!(
            r#"{{"i":{i},"parity":"{}","tags":["t{}"]}}"#,
            if i.is_multiple_of(2) { "even" } else { "odd" },
            i % 5
        )),
    }
}

fn query(i: u64, limit: u32) -> SearchQuery {
    SearchQuery {
        vector: vector(i),
        limit,
        offset: 0,
        ef: None,
        filter: None,
        with_payload: true,
        with_vector: false,
        score_threshold: None,
    }
}

fn fill(shard: &Shard, range: std::ops::Range<u64>) {
    let pts: Vec<PointInput> = range.map(point).collect();
    for chunk in pts.chunks(100) {
        let seq = shard.upsert(chunk.to_vec()).expect("upsert");
        shard.sync_to(seq).expect("sync");
    }
}

fn ids(hits: &[abi_protocol::vector::ScoredPoint]) -> Vec<PointId> {
    hits.iter().map(|h| h.id).collect()
}

fn open(dir: &Path) -> Shard {
    Shard::open(dir, cfg()).expect("open shard")
}

#[test]
fn tombstones_are_filtered_and_k_live_results_come_back() {
    let tmp = tempfile::tempdir().expect("tmp");
    let shard = open(tmp.path());
    fill(&shard, 0..500);
    let hits = shard.search(&query(42, 10)).expect("search");
    assert_eq!(hits[0].id, PointId::Num(42));
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    // Delete the ten nearest: the next ten must come back, none of the deleted.
    let gone = ids(&hits);
    let seq = shard.delete(gone.clone()).expect("delete");
    shard.sync_to(seq).expect("sync");
    let again = shard.search(&query(42, 10)).expect("search");
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|h| !gone.contains(&h.id)));
    assert_eq!(shard.len(), 490);
    assert_eq!(shard.tombstones(), 10);
    // Deleting everything but 3 points still answers with exactly those 3.
    let seq = shard
        .delete(
            (0..500)
                .filter(|i| ![7, 8, 9].contains(i))
                .map(PointId::Num)
                .collect(),
        )
        .expect("delete");
    shard.sync_to(seq).expect("sync");
    let rest = shard.search(&query(42, 10)).expect("search");
    let mut got = ids(&rest);
    got.sort();
    assert_eq!(got, vec![PointId::Num(7), PointId::Num(8), PointId::Num(9)]);
}

#[test]
fn replace_moves_the_point_and_keeps_one_copy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let shard = open(tmp.path());
    fill(&shard, 0..200);
    let mut p = point(300);
    p.id = PointId::Num(5);
    let seq = shard.upsert(vec![p]).expect("replace");
    shard.sync_to(seq).expect("sync");
    let hits = shard.search(&query(300, 3)).expect("search");
    assert_eq!(hits[0].id, PointId::Num(5));
    assert_eq!(shard.len(), 200);
    let got = shard.get(&[PointId::Num(5)], true, true);
    assert!(got[0].payload_json.as_deref().unwrap_or("").contains("300"));
    // The old position of 5 no longer finds 5 first.
    let old = shard.search(&query(5, 1)).expect("search");
    assert_ne!(old[0].id, PointId::Num(5));
}

#[test]
fn payload_filters_in_search_count_and_scroll() {
    let tmp = tempfile::tempdir().expect("tmp");
    let shard = open(tmp.path());
    fill(&shard, 0..300);
    let even = Filter {
        must: vec![Condition::Match {
            key: "parity".into(),
            value: MatchValue::Str("even".into()),
        }],
        ..Filter::default()
    };
    let mut q = query(41, 10);
    q.filter = Some(even.clone());
    let hits = shard.search(&q).expect("search");
    assert_eq!(hits.len(), 10);
    assert!(
        hits.iter()
            .all(|h| matches!(h.id, PointId::Num(n) if n % 2 == 0))
    );
    assert_eq!(shard.count(Some(&even)).expect("count"), 150);
    // A very selective filter (2 points) still finds both: exact fallback.
    let narrow = Filter {
        must: vec![Condition::Range {
            key: "i".into(),
            range: Range {
                gte: Some(100.0),
                lt: Some(102.0),
                ..Range::default()
            },
        }],
        ..Filter::default()
    };
    q.filter = Some(narrow.clone());
    let mut got = ids(&shard.search(&q).expect("search"));
    got.sort();
    assert_eq!(got, vec![PointId::Num(100), PointId::Num(101)]);
    let page = shard
        .scroll(Some(PointId::Num(10)), 5, Some(&even), true, false)
        .expect("scroll");
    assert_eq!(
        ids_of(&page.points),
        vec![10, 12, 14, 16, 18]
            .into_iter()
            .map(PointId::Num)
            .collect::<Vec<_>>()
    );
    assert_eq!(page.next, Some(PointId::Num(20)));
}

fn ids_of(p: &[abi_protocol::vector::PointRecord]) -> Vec<PointId> {
    p.iter().map(|r| r.id).collect()
}

#[test]
fn bad_batch_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let shard = open(tmp.path());
    let mut bad = vec![point(1), point(2)];
    bad[1].vector.push(1.0);
    assert!(shard.upsert(bad).is_err());
    let mut bad = vec![point(1), point(2)];
    bad[1].payload_json = Some("[1,2]".into());
    assert!(shard.upsert(bad).is_err());
    assert_eq!(shard.len(), 0);
    drop(shard);
    assert_eq!(open(tmp.path()).len(), 0, "nothing reached the WAL either");
}

#[test]
fn reopen_replays_wal_then_snapshot_truncates_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let shard = open(tmp.path());
        fill(&shard, 0..300);
        let seq = shard
            .delete(vec![PointId::Num(3), PointId::Num(4)])
            .expect("del");
        shard.sync_to(seq).expect("sync");
    }
    let shard = open(tmp.path());
    assert_eq!(shard.len(), 298);
    assert!(shard.get(&[PointId::Num(3)], false, false).is_empty());
    assert_eq!(
        shard.search(&query(77, 1)).expect("search")[0].id,
        PointId::Num(77)
    );
    let wal_files = || {
        std::fs::read_dir(tmp.path().join("wal"))
            .expect("wal dir")
            .count()
    };
    assert!(wal_files() > 1, "4 KiB segments must have rolled");
    let seq = shard.snapshot().expect("snapshot");
    assert!(seq > 0);
    assert_eq!(wal_files(), 1, "covered segments are dropped");
    // Writes after the snapshot go to the WAL and are replayed on top of it.
    fill(&shard, 300..320);
    let seq = shard.delete(vec![PointId::Num(10)]).expect("del");
    shard.sync_to(seq).expect("sync");
    drop(shard);
    let shard = open(tmp.path());
    assert_eq!(shard.len(), 298 + 20 - 1);
    assert_eq!(
        shard.search(&query(310, 1)).expect("search")[0].id,
        PointId::Num(310)
    );
    assert_eq!(
        shard.search(&query(77, 1)).expect("search")[0].id,
        PointId::Num(77)
    );
    assert!(shard.get(&[PointId::Num(10)], false, false).is_empty());
    // A second snapshot replaces the first.
    shard.snapshot().expect("snapshot 2");
    drop(shard);
    let shard = open(tmp.path());
    assert_eq!(shard.len(), 317);
}

#[test]
fn compaction_rebuilds_while_writes_continue() {
    let tmp = tempfile::tempdir().expect("tmp");
    let shard = open(tmp.path());
    fill(&shard, 0..600);
    let seq = shard
        .delete((0..300).map(PointId::Num).collect())
        .expect("delete");
    shard.sync_to(seq).expect("sync");
    assert!(shard.needs_compaction());
    std::thread::scope(|s| {
        let c = s.spawn(|| shard.compact());
        // Writes and reads during the rebuild.
        fill(&shard, 1000..1100);
        let seq = shard.delete(vec![PointId::Num(400)]).expect("delete");
        shard.sync_to(seq).expect("sync");
        assert!(!shard.search(&query(500, 5)).expect("search").is_empty());
        assert!(c.join().expect("join").expect("compact"));
    });
    assert_eq!(shard.len(), 300 + 100 - 1);
    assert!(
        shard.tombstones() <= 101,
        "rebuild dropped the old tombstones"
    );
    assert_eq!(
        shard.search(&query(1050, 1)).expect("search")[0].id,
        PointId::Num(1050)
    );
    assert_eq!(
        shard.search(&query(450, 1)).expect("search")[0].id,
        PointId::Num(450)
    );
    assert!(shard.get(&[PointId::Num(400)], false, false).is_empty());
    let hits = shard.search(&query(400, 10)).expect("search");
    assert!(hits.iter().all(|h| h.id != PointId::Num(400)));
    // Survives a snapshot + reopen after compaction.
    shard.snapshot().expect("snapshot");
    drop(shard);
    let shard = open(tmp.path());
    assert_eq!(shard.len(), 399);
    assert_eq!(
        shard.search(&query(1050, 1)).expect("search")[0].id,
        PointId::Num(1050)
    );
}

#[test]
fn torn_wal_tail_loses_only_the_unfinished_record() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        let shard = open(tmp.path());
        fill(&shard, 0..10);
    }
    // Append half a frame, as a crash in the middle of a write leaves it.
    let mut segs: Vec<_> = std::fs::read_dir(tmp.path().join("wal"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .collect();
    segs.sort();
    let last = segs.pop().expect("segment");
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&last, bytes).expect("write");
    let shard = open(tmp.path());
    assert_eq!(shard.len(), 10);
}

#[test]
fn small_shards_answer_exactly_by_scan() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut c = cfg();
    c.full_scan_floats = crate::shard::FULL_SCAN_FLOATS;
    let shard = Shard::open(tmp.path(), c).expect("open");
    fill(&shard, 0..300);
    assert!(shard.is_small());
    // The scan's answer is the brute-force truth: ranked by score, ties by id.
    for i in [0u64, 17, 150, 299] {
        let hits = shard.search(&query(i, 7)).expect("search");
        assert_eq!(hits[0].id, PointId::Num(i));
        let mut all: Vec<(f32, PointId)> = shard
            .search(&query(i, 300))
            .expect("all")
            .iter()
            .map(|h| (h.score, h.id))
            .collect();
        assert_eq!(all.len(), 300);
        all.truncate(7);
        assert_eq!(
            ids(&hits),
            all.iter().map(|(_, id)| *id).collect::<Vec<_>>()
        );
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
    }
    // Filters and deletes apply to the scan as to the graph.
    let mut q = query(42, 5);
    q.filter = Some(Filter {
        must: vec![Condition::Match {
            key: "parity".into(),
            value: MatchValue::Str("odd".into()),
        }],
        ..Default::default()
    });
    let hits = shard.search(&q).expect("filtered");
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter()
            .all(|h| matches!(h.id, PointId::Num(n) if n % 2 == 1))
    );
    let seq = shard.delete(vec![PointId::Num(42)]).expect("delete");
    shard.sync_to(seq).expect("sync");
    let hits = shard.search(&query(42, 3)).expect("search");
    assert!(hits.iter().all(|h| h.id != PointId::Num(42)));
}
