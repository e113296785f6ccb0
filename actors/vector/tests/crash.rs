//! Crash test with a real process: a child process streams acknowledged upserts and deletes
//! into a 3-shard collection (fsync = always) and is killed with SIGKILL mid-stream; reopened,
//! every acknowledged upsert is present and searchable and every acknowledged delete is gone.
//! (The end-to-end version through `abi-node` and HTTP is `tests/python/qdrant/test_crash.py`.)

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use abi_protocol::vector::{
    CollectionConfig, Distance, FsyncPolicy, HnswParams, PointId, PointInput, SearchQuery,
};
use abi_vector::collection::LocalCollection;

const CHILD_ENV: &str = "ABI_VECTOR_CRASH_CHILD";

fn config() -> CollectionConfig {
    CollectionConfig {
        name: "crash".into(),
        dim: 8,
        distance: Distance::Euclid,
        shards: 3,
        replication: 1,
        write_consistency: 0,
        hnsw: HnswParams {
            m: 12,
            ef_construct: 64,
            ef: 64,
        },
        fsync: FsyncPolicy::Always,
        embed_with: None,
    }
}

/// Well-spread pseudo-random vectors (splitmix64), so exact self-matches are unambiguous.
fn vector(i: u64) -> Vec<f32> {
    (0..8u64)
        .map(|d| {
            let mut z = (i * 8 + d).wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// The child: writes forever, printing each acknowledgement ("U a b" = ids a..b upserted,
/// "P x y" = delete of x..y in flight, "D x y" = that delete acknowledged).
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // only runs as the child of `sigkill_keeps_acknowledged_writes`
    };
    let col = LocalCollection::open(Path::new(&dir), config()).expect("open");
    let out = std::io::stdout();
    let mut next = 0u64;
    loop {
        let pts = (next..next + 10)
            .map(|i| PointInput {
                id: PointId::Num(i),
                vector: vector(i),
                payload_json: Some(format!(r#"{{"i":{i}}}"#)),
            })
            .collect();
        col.upsert(pts).expect("upsert");
        writeln!(out.lock(), "U {} {}", next, next + 10).expect("stdout");
        // Delete the first two of the batch.
        writeln!(out.lock(), "P {} {}", next, next + 2).expect("stdout");
        col.delete(vec![PointId::Num(next), PointId::Num(next + 1)])
            .expect("delete");
        writeln!(out.lock(), "D {} {}", next, next + 2).expect("stdout");
        next += 10;
    }
}

#[test]
fn sigkill_keeps_acknowledged_writes() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("crash");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let (mut acked_up, mut acked_del, mut pending_del) = (Vec::new(), Vec::new(), Vec::new());
    let mut record = |line: &str| {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if let [kind, a, b] = parts[..]
            && let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>())
        {
            match kind {
                "U" => acked_up.extend(a..b),
                "P" => pending_del.extend(a..b),
                "D" => acked_del.extend(a..b),
                _ => {}
            }
        }
        acked_up.len()
    };
    let start = Instant::now();
    loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("child stopped early");
        };
        let n = record(&line);
        if start.elapsed() > Duration::from_millis(1500) && n >= 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "child too slow");
    }
    child.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    child.wait().expect("reap");
    // What the child printed before it died is still in the pipe: every acknowledgement counts.
    for line in lines.map_while(Result::ok) {
        record(&line);
    }
    let col = LocalCollection::open(&dir, config()).expect("reopen after SIGKILL");
    for shard in col.shards() {
        for &id in &acked_del {
            assert!(
                shard.get(&[PointId::Num(id)], false, false).is_empty(),
                "acknowledged delete of {id} came back"
            );
        }
    }
    let mut checked = 0;
    for &id in &acked_up {
        if acked_del.contains(&id) || pending_del.contains(&id) {
            continue;
        }
        let present = col
            .shards()
            .iter()
            .any(|s| !s.get(&[PointId::Num(id)], false, false).is_empty());
        assert!(present, "acknowledged upsert {id} lost");
        let hits = col
            .search(&SearchQuery {
                vector: vector(id),
                limit: 1,
                offset: 0,
                ef: Some(128),
                filter: None,
                with_payload: true,
                with_vector: false,
                score_threshold: None,
            })
            .expect("search");
        assert_eq!(
            hits[0].id,
            PointId::Num(id),
            "acknowledged upsert {id} not found"
        );
        assert_eq!(
            hits[0].payload_json.as_deref(),
            Some(format!(r#"{{"i":{id}}}"#).as_str())
        );
        checked += 1;
    }
    assert!(checked >= 150, "only {checked} acknowledged points checked");
    println!(
        "SIGKILL after {} acknowledged upserts, {} acknowledged deletes: all present / gone; {} points live after restart",
        acked_up.len(),
        acked_del.len(),
        col.len()
    );
}
