//! The cluster metadata Raft group with real `abi-node` processes on loopback (QUIC with
//! mutual TLS): concurrent writers while the leader is SIGKILLed and restarted, then a
//! checker; a membership change (learner, promotion, removal) under load; and replicated
//! vector shards through a leader kill, re-placement and the killed node's return.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use abi_tests::{NodeOptions, NodeProcess, Value, eventually, free_port, temp_dir};
use parking_lot::Mutex;
use serde_json::json;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_abi-node"))
}

fn cli(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run abi-node");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Spec {
    id: String,
    quic: u16,
    http: u16,
    tls: PathBuf,
    dir: PathBuf,
}

impl Spec {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }
}

/// Certificates and ports for `n` nodes; the first `voters` are declared in TOML and
/// form the initial group.
fn setup(root: &Path, n: usize, voters: usize) -> (Vec<Spec>, PathBuf) {
    let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let tls = abi_tests::cluster_certs(&bin(), root, &ids);
    let specs: Vec<Spec> = ids
        .into_iter()
        .zip(tls)
        .map(|(id, tls)| Spec {
            dir: root.join(&id),
            id,
            quic: free_port(),
            http: free_port(),
            tls,
        })
        .collect();
    let seeds: Vec<String> = specs
        .iter()
        .map(|s| format!("\"127.0.0.1:{}\"", s.quic))
        .collect();
    let mut toml = format!(
        "[cluster]\nname = \"raft\"\ndiscovery = {{ kind = \"static\", seeds = [{}] }}\n\n\
         [membership]\nheartbeat_ms = 200\nsuspect_ms = 600\ndead_ms = 1500\n\n",
        seeds.join(", ")
    );
    for s in &specs {
        toml += &format!(
            "[[nodes]]\nid = \"{}\"\nlisten = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n\n",
            s.id,
            s.quic,
            s.http,
            s.dir.join("data").display()
        );
    }
    let names: Vec<String> = specs[..voters]
        .iter()
        .map(|s| format!("\"{}\"", s.id))
        .collect();
    toml += &format!(
        "[raft]\nvoters = [{}]\nelection_timeout_ms = 300\nheartbeat_ms = 100\nsnapshot_every = 100\n\
         replace_dead_after_ms = 4000\n",
        names.join(", ")
    );
    let config = root.join("abi.toml");
    std::fs::write(&config, toml).expect("config");
    (specs, config)
}

fn start(s: &Spec, config: &Path) -> NodeProcess {
    start_with(s, config, &[])
}

fn start_with(s: &Spec, config: &Path, env: &[(&str, String)]) -> NodeProcess {
    std::fs::create_dir_all(&s.dir).expect("dir");
    let mut opts = NodeOptions::fresh(&bin(), &s.dir);
    opts.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    opts.http = ([127, 0, 0, 1], s.http).into();
    opts.args = vec![
        "--config".into(),
        config.display().to_string(),
        "--node-id".into(),
        s.id.clone(),
        "--listen".into(),
        format!("127.0.0.1:{}", s.quic),
        "--http".into(),
        format!("127.0.0.1:{}", s.http),
        "--data-dir".into(),
        s.dir.join("data").display().to_string(),
        "--tls-dir".into(),
        s.tls.display().to_string(),
    ];
    NodeProcess::start(opts, Duration::from_secs(30))
}

fn raft(url: &str) -> Option<Value> {
    let r = abi_tests::get(&format!("{url}/v1/cluster/raft")).ok()?;
    (r.status == 200).then(|| r.json())
}

/// Waits until every listed node reports the same leader (not `not`); returns it.
fn agreed_leader(urls: &[String], within: Duration) -> String {
    agreed_leader_not(urls, "", within)
}

fn agreed_leader_not(urls: &[String], not: &str, within: Duration) -> String {
    eventually(within, || {
        let leaders: BTreeSet<String> = urls
            .iter()
            .map(|u| raft(u).and_then(|s| s["leader"].as_str().map(String::from)))
            .collect::<Option<_>>()?;
        if leaders.len() != 1 {
            return None;
        }
        leaders.into_iter().next().filter(|l| l != not)
    })
    .unwrap_or_else(|| {
        panic!(
            "no agreed leader: {:?}",
            urls.iter().map(|u| raft(u)).collect::<Vec<_>>()
        )
    })
}

/// What the writers got acknowledged.
#[derive(Default)]
struct Acked {
    puts: BTreeSet<String>,
    deletes: BTreeSet<String>,
    /// Keys whose delete failed without an answer: it may or may not have been applied.
    uncertain: BTreeSet<String>,
    /// (sent, acknowledged) of every acknowledged write.
    times: Vec<(Instant, Instant)>,
    failures: usize,
}

/// A writer: unique keys, every fourth operation deletes one of its own acknowledged keys.
/// Tries the nodes in turn, so a dead node only costs a connection refusal.
fn writer(w: usize, urls: Arc<Vec<String>>, stop: Arc<AtomicBool>, acked: Arc<Mutex<Acked>>) {
    let mut mine: Vec<String> = Vec::new();
    let mut i = 0usize;
    let mut target = w;
    while !stop.load(Ordering::Relaxed) {
        let url = &urls[target % urls.len()];
        let sent = Instant::now();
        let (res, key, delete) = if i % 4 == 3 && !mine.is_empty() {
            let key = mine.remove(0);
            let r = abi_tests::delete(&format!("{url}/v1/cluster/meta/kv/{key}"));
            (r, key, true)
        } else {
            let key = format!("w{w}-{i}");
            let r = abi_tests::put_json(
                &format!("{url}/v1/cluster/meta/kv/{key}"),
                &json!({ "value": format!("value of {key}") }),
            );
            (r, key, false)
        };
        match res {
            Ok(r) if r.status == 200 => {
                let mut a = acked.lock();
                a.times.push((sent, Instant::now()));
                if delete {
                    a.deletes.insert(key);
                } else {
                    a.puts.insert(key.clone());
                    mine.push(key);
                }
                i += 1;
            }
            _ => {
                let mut a = acked.lock();
                a.failures += 1;
                // A delete whose outcome is unknown (e.g. sent to the node being killed)
                // may or may not have been applied: its key is checked neither way.
                if delete {
                    a.uncertain.insert(key);
                } else {
                    i += 1;
                }
                drop(a);
                target += 1;
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Every acknowledged put is present unless acknowledged deleted, and no acknowledged
/// delete came back, on `url`'s local state.
fn check(url: &str, acked: &Acked) -> Result<(), String> {
    let r = abi_tests::get(&format!("{url}/v1/cluster/meta?consistency=local"))?;
    if r.status != 200 {
        return Err(format!("{url}: {}", r.body));
    }
    let kv = r.json()["kv"].clone();
    for k in &acked.puts {
        if !acked.deletes.contains(k) && !acked.uncertain.contains(k) && kv.get(k).is_none() {
            return Err(format!("{url}: acknowledged put {k} is missing"));
        }
    }
    for k in &acked.deletes {
        if kv.get(k).is_some() {
            return Err(format!("{url}: acknowledged delete {k} came back"));
        }
    }
    Ok(())
}

#[test]
fn leader_sigkill_loses_no_acknowledged_write() {
    let root = temp_dir("raft-kill");
    let (specs, config) = setup(&root, 3, 3);
    let mut nodes: Vec<NodeProcess> = specs.iter().map(|s| start(s, &config)).collect();
    let urls: Vec<String> = specs.iter().map(Spec::url).collect();
    let leader = agreed_leader(&urls, Duration::from_secs(30));
    let term0 = raft(&urls[0]).expect("status")["term"]
        .as_u64()
        .unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let shared = Arc::new(urls.clone());
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (u, s, a) = (shared.clone(), stop.clone(), acked.clone());
            thread::spawn(move || writer(w, u, s, a))
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    let before = acked.lock().puts.len();
    assert!(
        before > 20,
        "writers made progress before the kill: {before}"
    );

    // SIGKILL the leader.
    let li = specs
        .iter()
        .position(|s| s.id == leader)
        .expect("leader idx");
    let killed_at = Instant::now();
    nodes[li].kill();
    let others: Vec<String> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, u)| u.clone())
        .collect();
    let resumed = eventually(Duration::from_secs(20), || {
        acked
            .lock()
            .times
            .iter()
            // A write sent after the kill needs the new leader.
            .find(|(sent, _)| *sent > killed_at)
            .map(|(_, acked)| acked.duration_since(killed_at))
    })
    .expect("writes resumed after the leader was killed");
    eprintln!("leader {leader} SIGKILLed: writes succeeded again after {resumed:?}");
    let new_leader = agreed_leader_not(&others, &leader, Duration::from_secs(20));
    assert_ne!(new_leader, leader);
    let term1 = raft(&others[0]).expect("status")["term"]
        .as_u64()
        .unwrap_or(0);
    assert!(term1 > term0, "a new term: {term0} -> {term1}");
    // The new leader records the killed node as dead in the metadata.
    let recorded = eventually(Duration::from_secs(15), || {
        let r = abi_tests::get(&format!("{}/v1/cluster/meta", others[0])).ok()?;
        (r.json()["nodes"][&leader] == "dead").then_some(())
    });
    assert!(
        recorded.is_some(),
        "node status of {leader} recorded as dead"
    );
    thread::sleep(Duration::from_secs(2));

    // Restart the old leader on its data dir; it catches up (log tail or snapshot).
    nodes[li] = start(&specs[li], &config);
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock();
    eprintln!(
        "acknowledged: {} puts, {} deletes; {} failed attempts",
        acked.puts.len(),
        acked.deletes.len(),
        acked.failures
    );
    assert!(acked.puts.len() > before, "writes resumed");

    // Every node, including the restarted one, converges on every acknowledged write.
    for url in &urls {
        let ok = eventually(Duration::from_secs(20), || check(url, &acked).ok());
        if ok.is_none() {
            panic!("{}", check(url, &acked).expect_err("failed"));
        }
    }
    // Linearizable reads through any node agree too.
    for url in &urls {
        let r = abi_tests::get(&format!("{url}/v1/cluster/meta")).expect("read");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let s = raft(&urls[li]).expect("restarted status");
    assert_eq!(s["leader"].as_str(), Some(new_leader.as_str()), "{s}");
    assert!(
        s["snapshot_index"].as_u64().is_some(),
        "snapshots taken: {s}"
    );
}

#[test]
fn learner_promotion_and_voter_removal_under_load() {
    let root = temp_dir("raft-members");
    let (specs, config) = setup(&root, 4, 3);
    let _nodes: Vec<NodeProcess> = specs.iter().map(|s| start(s, &config)).collect();
    let urls: Vec<String> = specs.iter().map(Spec::url).collect();
    agreed_leader(&urls[..3], Duration::from_secs(30));
    // n4 runs but is not in the group yet.
    let s4 = raft(&urls[3]).expect("n4 status");
    assert!(
        s4["voters"].as_array().is_some_and(|v| v.is_empty()),
        "{s4}"
    );

    // Writers through n2 and n3 (n1 will be removed) keep going throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let targets = Arc::new(vec![urls[1].clone(), urls[2].clone()]);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (u, s, a) = (targets.clone(), stop.clone(), acked.clone());
            thread::spawn(move || writer(w, u, s, a))
        })
        .collect();
    thread::sleep(Duration::from_secs(1));

    // Through the CLI, as an operator would.
    let n4_addr = format!("127.0.0.1:{}", specs[3].quic);
    let out = cli(&["cluster", "--url", &urls[1], "add-learner", "n4", &n4_addr]);
    assert!(out.contains("\"n4\""), "{out}");
    let out = cli(&["cluster", "--url", &urls[2], "promote", "n4"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert!(
        v["voters"]
            .as_array()
            .expect("voters")
            .contains(&json!("n4")),
        "{out}"
    );
    let out = cli(&["cluster", "--url", &urls[1], "remove", "n1"]);
    let v: Value = serde_json::from_str(&out).expect("json");
    let voters: BTreeSet<String> = v["voters"]
        .as_array()
        .expect("voters")
        .iter()
        .filter_map(|x| x.as_str().map(String::from))
        .collect();
    assert_eq!(
        voters,
        ["n2", "n3", "n4"].iter().map(|s| s.to_string()).collect()
    );
    thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock();
    eprintln!(
        "during membership changes: {} puts, {} deletes acknowledged, {} failed",
        acked.puts.len(),
        acked.deletes.len(),
        acked.failures
    );
    assert_eq!(acked.failures, 0, "the cluster kept serving throughout");
    let leader = agreed_leader(&urls[1..], Duration::from_secs(20));
    assert_ne!(leader, "n1");
    // The new voter has every acknowledged write.
    let ok = eventually(Duration::from_secs(20), || check(&urls[3], &acked).ok());
    assert!(ok.is_some(), "{:?}", check(&urls[3], &acked));
    // Bad requests get clear 4xx errors.
    let r = abi_tests::post_json(
        &format!("{}/v1/cluster/raft/voters", urls[1]),
        &json!({ "nodes": ["nope"] }),
    )
    .expect("http");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("nope"), "{}", r.body);
}

#[test]
fn any_gateway_serves_any_collection() {
    let root = temp_dir("any-gateway");
    let (specs, config) = setup(&root, 3, 3);
    let _nodes: Vec<NodeProcess> = specs.iter().map(|s| start(s, &config)).collect();
    let urls: Vec<String> = specs.iter().map(Spec::url).collect();
    agreed_leader(&urls, Duration::from_secs(30));
    // A collection that only n1 holds.
    let r = abi_tests::put_json(
        &format!("{}/collections/only_on_n1", urls[0]),
        &json!({ "vectors": { "size": 2, "distance": "Euclid" } }),
    )
    .expect("create");
    assert_eq!(r.status, 200, "{}", r.body);
    // Written through n2, read through n3.
    let r = abi_tests::put_json(
        &format!("{}/collections/only_on_n1/points", urls[1]),
        &json!({ "points": [
            { "id": 1, "vector": [0.0, 0.0], "payload": { "k": "a" } },
            { "id": 2, "vector": [5.0, 5.0], "payload": { "k": "b" } }
        ] }),
    )
    .expect("upsert");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = abi_tests::post_json(
        &format!("{}/collections/only_on_n1/points/search", urls[2]),
        &json!({ "vector": [4.0, 4.0], "limit": 1, "with_payload": true }),
    )
    .expect("search");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"][0]["payload"]["k"], "b", "{}", r.body);
    let r = abi_tests::get(&format!("{}/collections/only_on_n1/exists", urls[2])).expect("exists");
    assert_eq!(r.json()["result"]["exists"], true, "{}", r.body);
    let r = abi_tests::get(&format!("{}/collections/only_on_n1", urls[1])).expect("info");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["result"]["points_count"], 2, "{}", r.body);
    // The data lives on n1 only: n3's own manager does not have it.
    let r = abi_tests::get(&format!("{}/collections", urls[2])).expect("list");
    assert!(!r.body.contains("only_on_n1"), "{}", r.body);
    // Unknown collections are still 404 everywhere.
    let r = abi_tests::get(&format!("{}/collections/nowhere", urls[1])).expect("404");
    assert_eq!(r.status, 404, "{}", r.body);
}

#[test]
fn any_gateway_serves_any_model() {
    // The test command sets ABI_MODELS_DIR (scripts/test.sh fetches the models).
    let Ok(models) = std::env::var("ABI_MODELS_DIR") else {
        eprintln!("ABI_MODELS_DIR not set: run through scripts/test.sh");
        return;
    };
    let root = temp_dir("any-model");
    let (specs, config) = setup(&root, 2, 2);
    let empty = root.join("no-models");
    std::fs::create_dir_all(&empty).expect("dir");
    let _n1 = start_with(&specs[0], &config, &[("ABI_MODELS_DIR", models)]);
    let _n2 = start_with(
        &specs[1],
        &config,
        &[("ABI_MODELS_DIR", empty.display().to_string())],
    );
    let n2 = specs[1].url();
    // n2 runs no pool; its gateway finds n1's through the cluster.
    let body = json!({ "model": "all-minilm-l6-v2", "input": ["a remote embedding"] });
    let r = eventually(Duration::from_secs(60), || {
        let r = abi_tests::post_json(&format!("{n2}/v1/embeddings"), &body).ok()?;
        (r.status == 200).then_some(r)
    })
    .expect("n2 serves n1's embedding model");
    let v = r.json();
    assert_eq!(
        v["data"][0]["embedding"].as_array().map(Vec::len),
        Some(384),
        "{}",
        r.body
    );
    let r = abi_tests::post_json(
        &format!("{n2}/v1/embeddings"),
        &json!({ "model": "no-such-model", "input": ["x"] }),
    )
    .expect("http");
    assert_eq!(r.status, 404, "{}", r.body);
    // The pool announced itself in the cluster metadata; n2 runs none.
    let pools = eventually(Duration::from_secs(20), || {
        let r = abi_tests::get(&format!("{n2}/v1/cluster/meta")).ok()?;
        let p = r.json()["pools"]["all-minilm-l6-v2"].clone();
        (p["nodes"] == json!(["n1"])).then_some(p)
    })
    .expect("pool placement recorded");
    assert_eq!(pools["kind"], "embedding", "{pools}");
}

/// A point's vector: 8 pseudo-random components derived from its id (distinct points,
/// distinct directions).
fn vector_of(id: u64) -> Vec<f32> {
    let mut x = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..8)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// What the vector writers got acknowledged.
#[derive(Default)]
struct AckedPoints {
    upserts: BTreeSet<u64>,
    deletes: BTreeSet<u64>,
    uncertain: BTreeSet<u64>,
    /// (writer, acknowledged at) of every acknowledged write.
    times: Vec<(u64, Instant)>,
    failures: usize,
}

impl AckedPoints {
    /// The longest any writer waited between two acknowledgements ending after `t`:
    /// how long writes stalled around an event at `t`.
    fn stall_after(&self, t: Instant) -> Duration {
        let mut last: std::collections::HashMap<u64, Instant> = Default::default();
        let mut worst = Duration::ZERO;
        for (w, at) in &self.times {
            if let Some(prev) = last.insert(*w, *at)
                && *at > t
            {
                worst = worst.max(*at - prev.max(t));
            }
        }
        worst
    }
}

/// A vector writer through the Qdrant API: unique ids, every fourth operation deletes one
/// of its own acknowledged points; tries the nodes in turn.
fn point_writer(
    w: u64,
    urls: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<AckedPoints>>,
) {
    let mut mine: Vec<u64> = Vec::new();
    let mut i = 0u64;
    let mut target = w as usize;
    while !stop.load(Ordering::Relaxed) {
        let url = &urls[target % urls.len()];
        let (res, id, delete) = if i % 4 == 3 && !mine.is_empty() {
            let id = mine.remove(0);
            let r = abi_tests::post_json(
                &format!("{url}/collections/rv/points/delete?wait=true"),
                &json!({ "points": [id] }),
            );
            (r, id, true)
        } else {
            let id = w * 1_000_000 + i;
            let r = abi_tests::put_json(
                &format!("{url}/collections/rv/points?wait=true"),
                &json!({ "points": [{ "id": id, "vector": vector_of(id), "payload": { "w": w } }] }),
            );
            (r, id, false)
        };
        let mut a = acked.lock();
        match res {
            Ok(r) if r.status == 200 => {
                a.times.push((w, Instant::now()));
                if delete {
                    a.deletes.insert(id);
                } else {
                    a.upserts.insert(id);
                    mine.push(id);
                }
                i += 1;
            }
            _ => {
                a.failures += 1;
                // Unknown outcome: the point may or may not be there.
                a.uncertain.insert(id);
                if !delete {
                    i += 1;
                }
                drop(a);
                target += 1;
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Scrolls and searches through `url` (`query`: the read-consistency parameter): every
/// acknowledged upsert (not deleted since) is there and found by a search for its own
/// vector; no acknowledged delete is.
fn check_points(url: &str, query: &str, acked: &AckedPoints) -> Result<(), String> {
    let mut have = BTreeSet::new();
    let mut offset = Value::Null;
    loop {
        let r = abi_tests::post_json(
            &format!("{url}/collections/rv/points/scroll{query}"),
            &json!({ "limit": 10000, "offset": offset, "with_payload": false }),
        )?;
        if r.status != 200 {
            return Err(format!("{url}: scroll {}", r.body));
        }
        let v = r.json();
        have.extend(
            v["result"]["points"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["id"].as_u64()),
        );
        offset = v["result"]["next_page_offset"].clone();
        if offset.is_null() {
            break;
        }
    }
    let live: Vec<u64> = acked
        .upserts
        .iter()
        .filter(|id| !acked.deletes.contains(id) && !acked.uncertain.contains(id))
        .copied()
        .collect();
    if let Some(id) = live.iter().find(|id| !have.contains(id)) {
        return Err(format!("{url}: acknowledged point {id} is missing"));
    }
    if let Some(id) = acked.deletes.iter().find(|id| have.contains(id)) {
        return Err(format!("{url}: acknowledged delete of {id} came back"));
    }
    for chunk in live.chunks(200) {
        let searches: Vec<Value> = chunk
            .iter()
            .map(|id| json!({ "vector": vector_of(*id), "limit": 3 }))
            .collect();
        let r = abi_tests::post_json(
            &format!("{url}/collections/rv/points/search/batch{query}"),
            &json!({ "searches": searches }),
        )?;
        if r.status != 200 {
            return Err(format!("{url}: search {}", r.body));
        }
        let v = r.json();
        for (q, id) in chunk.iter().enumerate() {
            let found = v["result"][q]
                .as_array()
                .is_some_and(|hits| hits.iter().any(|h| h["id"].as_u64() == Some(*id)));
            if !found {
                return Err(format!("{url}: a search for point {id} does not find it"));
            }
        }
    }
    Ok(())
}

/// Shard -> nodes of the replicated collection in the cluster metadata.
fn placement(url: &str) -> Option<Vec<Vec<String>>> {
    let r = abi_tests::get(&format!("{url}/v1/cluster/meta")).ok()?;
    let p = r.json()["collections"]["rv"]["placement"].clone();
    let p = p.as_object()?;
    Some(
        p.values()
            .map(|ns| {
                ns.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect(),
    )
}

#[test]
fn replicated_shards_survive_leader_sigkill_and_replacement() {
    let root = temp_dir("raft-vectors");
    // n1..n3 vote in the metadata group; n4 holds replicas only.
    let (specs, config) = setup(&root, 4, 3);
    let mut nodes: Vec<NodeProcess> = specs.iter().map(|s| start(s, &config)).collect();
    let urls: Vec<String> = specs.iter().map(Spec::url).collect();
    let leader = agreed_leader(&urls[..3], Duration::from_secs(30));
    // Every member must be alive in everyone's view before placement picks nodes.
    eventually(Duration::from_secs(20), || {
        let r = abi_tests::get(&format!("{}/v1/cluster/nodes", urls[3])).ok()?;
        let alive = r.json()["nodes"]
            .as_array()?
            .iter()
            .filter(|n| n["status"] == "alive")
            .count();
        (alive == 4).then_some(())
    })
    .expect("four live nodes");

    // R=3, two shards, created through the node that is not a metadata voter.
    let r = abi_tests::put_json(
        &format!("{}/collections/rv", urls[3]),
        &json!({ "vectors": { "size": 8, "distance": "Cosine" }, "shard_number": 2,
                 "replication_factor": 3 }),
    )
    .expect("create");
    assert_eq!(r.status, 200, "{}", r.body);
    let before_placement = placement(&urls[0]).expect("placement");
    assert_eq!(before_placement.len(), 2, "{before_placement:?}");
    assert!(before_placement.iter().all(|p| p.len() == 3));
    // Bad replication settings are refused with a clear 4xx.
    let r = abi_tests::put_json(
        &format!("{}/collections/too_many", urls[0]),
        &json!({ "vectors": { "size": 8, "distance": "Cosine" }, "replication_factor": 9 }),
    )
    .expect("http");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = abi_tests::put_json(
        &format!("{}/collections/weak", urls[0]),
        &json!({ "vectors": { "size": 8, "distance": "Cosine" }, "replication_factor": 3,
                 "write_consistency_factor": 1 }),
    )
    .expect("http");
    assert_eq!(r.status, 400, "{}", r.body);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(AckedPoints::default()));
    let shared = Arc::new(urls.clone());
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (u, s, a) = (shared.clone(), stop.clone(), acked.clone());
            thread::spawn(move || point_writer(w, u, s, a))
        })
        .collect();
    thread::sleep(Duration::from_secs(3));
    let before = acked.lock().upserts.len();
    assert!(
        before > 20,
        "writers made progress before the kill: {before}"
    );

    // A short outage (shorter than the re-placement delay): n4's replicas stay placed on
    // it and catch up from their leaders when it is back.
    nodes[3].kill();
    thread::sleep(Duration::from_secs(2));
    nodes[3] = start(&specs[3], &config);
    thread::sleep(Duration::from_secs(2));

    // SIGKILL the metadata leader: it holds replicas (and likely shard leaders) too.
    let li = specs
        .iter()
        .position(|s| s.id == leader)
        .expect("leader idx");
    let killed_at = Instant::now();
    nodes[li].kill();
    // Every writer is acknowledged again (each writes to both shards in turn).
    eventually(Duration::from_secs(30), || {
        let a = acked.lock();
        let back: BTreeSet<u64> = a
            .times
            .iter()
            .filter(|(_, at)| *at > killed_at + Duration::from_secs(1))
            .map(|(w, _)| *w)
            .collect();
        (back.len() == 3).then_some(())
    })
    .expect("vector writes resumed after the kill");
    let stall = acked.lock().stall_after(killed_at);
    eprintln!("node {leader} (metadata leader) SIGKILLed: longest writer stall {stall:?}");
    let others: Vec<String> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, u)| u.clone())
        .collect();
    let new_leader = agreed_leader_not(&others[..2], &leader, Duration::from_secs(20));
    assert_ne!(new_leader, leader);

    // After the dead timeout, the new metadata leader places the dead node's replicas on
    // the spare node, and their groups take them in.
    // With four nodes and R=3 each shard has one spare node, so none keeps the dead one.
    let moved = eventually(Duration::from_secs(40), || {
        let p = placement(&others[0])?;
        p.iter().all(|reps| !reps.contains(&leader)).then_some(p)
    })
    .expect("dead node's replicas placed elsewhere");
    eprintln!("placement after the kill: {moved:?} (was {before_placement:?})");
    assert_ne!(moved, before_placement, "some replica moved");
    thread::sleep(Duration::from_secs(2));

    // The killed node comes back: replicas still placed on it catch up, the moved ones
    // are removed from it.
    nodes[li] = start(&specs[li], &config);
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock();
    eprintln!(
        "acknowledged: {} upserts, {} deletes; {} failed attempts",
        acked.upserts.len(),
        acked.deletes.len(),
        acked.failures
    );
    assert!(acked.upserts.len() > before, "writes resumed");
    // Reads through the shard leaders see every acknowledged write at once, from any
    // surviving node.
    for url in &others {
        check_points(url, "?consistency=majority", &acked).unwrap_or_else(|e| panic!("{e}"));
    }
    // Reads from any replica (this node's own first) converge on every node, including
    // the restarted one.
    for url in &urls {
        let ok = eventually(Duration::from_secs(30), || {
            check_points(url, "", &acked).ok()
        });
        if ok.is_none() {
            panic!("{}", check_points(url, "", &acked).expect_err("failed"));
        }
    }
    let r = abi_tests::post_json(
        &format!(
            "{}/collections/rv/points/count?consistency=sometimes",
            urls[0]
        ),
        &json!({}),
    )
    .expect("http");
    assert_eq!(r.status, 400, "{}", r.body);
}
