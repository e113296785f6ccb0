//! Replicated metadata writes through the Raft group of three local `abi-node`
//! processes, next to a three-member etcd cluster on the same machine, in the same run.
//!
//! Both are driven the same way: N client threads, each with one keep-alive HTTP/1.1
//! connection, writing 100-byte values to the leader (abi: `PUT /v1/cluster/meta/kv/{k}`;
//! etcd: its JSON gateway `POST /v3/kv/put`). Then leader failover: SIGKILL the leader,
//! time until a put through a surviving member succeeds, restart it; several trials.
//!
//! `cargo build --release -p abi-node && cargo run --release -p abi-node --example bench_raft`
//! (needs `/usr/bin/etcd`, Debian `etcd-server`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use abi_tests::{NodeOptions, NodeProcess, free_port, temp_dir};
use serde_json::{Value, json};

const SECS: u64 = 5;
const VALUE: &str = "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789";

fn abi_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    // target/<profile>/examples/bench_raft -> target/<profile>/abi-node
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("abi-node"))
        .expect("abi-node beside the examples dir")
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// One system under test.
trait Store: Sync {
    fn put(&self, a: &ureq::Agent, base: &str, key: &str) -> bool;
}

struct Abi;
impl Store for Abi {
    fn put(&self, a: &ureq::Agent, base: &str, key: &str) -> bool {
        a.put(&format!("{base}/v1/cluster/meta/kv/{key}"))
            .send_json(json!({ "value": VALUE }))
            .is_ok_and(|r| r.status() == 200)
    }
}

struct Etcd;
fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
impl Store for Etcd {
    fn put(&self, a: &ureq::Agent, base: &str, key: &str) -> bool {
        a.post(&format!("{base}/v3/kv/put"))
            .send_json(json!({ "key": b64(key), "value": b64(VALUE) }))
            .is_ok_and(|r| r.status() == 200)
    }
}

/// Throughput and latency of `clients` writers against `base` for SECS seconds.
fn load(store: &dyn Store, base: &str, clients: usize) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let lats: Vec<Vec<Duration>> = thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                let stop = stop.clone();
                s.spawn(move || {
                    let a = agent(Duration::from_secs(10));
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        if store.put(&a, base, &format!("bench-{c}-{i}")) {
                            lat.push(t.elapsed());
                        }
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        thread::sleep(Duration::from_secs(SECS));
        stop.store(true, Ordering::Relaxed);
        hs.into_iter().map(|h| h.join().expect("client")).collect()
    });
    let mut all: Vec<Duration> = lats.into_iter().flatten().collect();
    all.sort();
    let n = all.len().max(1);
    let pct = |p: f64| all[((n as f64 * p) as usize).min(n - 1)].as_secs_f64() * 1e3;
    (all.len() as f64 / SECS as f64, pct(0.5), pct(0.99))
}

/// Time from `kill()` until a put through one of `survivors` succeeds.
fn failover(store: &dyn Store, survivors: &[String], kill: impl FnOnce()) -> Duration {
    let a = agent(Duration::from_millis(500));
    let t = Instant::now();
    kill();
    let mut i = 0usize;
    loop {
        let base = &survivors[i % survivors.len()];
        if store.put(&a, base, &format!("failover-{i}")) {
            return t.elapsed();
        }
        i += 1;
        assert!(t.elapsed() < Duration::from_secs(30), "no failover");
        thread::sleep(Duration::from_millis(5));
    }
}

struct AbiCluster {
    nodes: Vec<Option<NodeProcess>>,
    opts: Vec<NodeOptions>,
    urls: Vec<String>,
}

fn abi_cluster(root: &Path) -> AbiCluster {
    let ids: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
    let tls_dirs = abi_tests::cluster_certs(&abi_bin(), root, &ids);
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let seeds: Vec<String> = ports
        .iter()
        .map(|(q, _)| format!("\"127.0.0.1:{q}\""))
        .collect();
    let mut toml = format!(
        "[cluster]\nname = \"bench\"\ndiscovery = {{ kind = \"static\", seeds = [{}] }}\n\n",
        seeds.join(", ")
    );
    for (i, (q, h)) in ports.iter().enumerate() {
        toml += &format!(
            "[[nodes]]\nid = \"n{i}\"\nlisten = \"127.0.0.1:{q}\"\nhttp = \"127.0.0.1:{h}\"\ndata_dir = \"{}\"\n\n",
            root.join(format!("n{i}/data")).display()
        );
    }
    toml += "[raft]\nvoters = [\"n0\", \"n1\", \"n2\"]\n";
    let config = root.join("abi.toml");
    std::fs::write(&config, toml).expect("config");
    let mut opts = Vec::new();
    for (i, ((q, h), tls)) in ports.iter().zip(&tls_dirs).enumerate() {
        let dir = root.join(format!("n{i}"));
        let mut o = NodeOptions::fresh(&abi_bin(), &dir);
        o.http = ([127, 0, 0, 1], *h).into();
        o.args = vec![
            "--config".into(),
            config.display().to_string(),
            "--node-id".into(),
            format!("n{i}"),
            "--listen".into(),
            format!("127.0.0.1:{q}"),
            "--http".into(),
            format!("127.0.0.1:{h}"),
            "--tls-dir".into(),
            tls.display().to_string(),
        ];
        o.env.push(("RUST_LOG".into(), "warn".into()));
        opts.push(o);
    }
    let nodes = opts
        .iter()
        .map(|o| Some(NodeProcess::start(clone_opts(o), Duration::from_secs(60))))
        .collect();
    let urls = ports
        .iter()
        .map(|(_, h)| format!("http://127.0.0.1:{h}"))
        .collect();
    AbiCluster { nodes, opts, urls }
}

fn clone_opts(o: &NodeOptions) -> NodeOptions {
    NodeOptions {
        bin: o.bin.clone(),
        dir: o.dir.clone(),
        args: o.args.clone(),
        http: o.http,
        env: o.env.clone(),
    }
}

impl AbiCluster {
    /// Index of the leader once all live members agree on one.
    fn leader(&self) -> usize {
        let a = agent(Duration::from_secs(2));
        let t = Instant::now();
        loop {
            let names: Vec<Option<String>> = self
                .urls
                .iter()
                .zip(&self.nodes)
                .filter(|(_, n)| n.is_some())
                .map(|(u, _)| {
                    let mut r = a.get(&format!("{u}/v1/cluster/raft")).call().ok()?;
                    let v: Value = r.body_mut().read_json().ok()?;
                    v["leader"].as_str().map(String::from)
                })
                .collect();
            if let Some(Some(first)) = names.first()
                && names.iter().all(|n| n.as_deref() == Some(first.as_str()))
                && let Some(i) = first.strip_prefix('n').and_then(|i| i.parse().ok())
            {
                return i;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "no leader: {names:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

struct EtcdMember {
    child: Option<Child>,
    args: Vec<String>,
    client: String,
}

fn etcd_cluster(root: &Path) -> Vec<EtcdMember> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
        .collect();
    ports
        .iter()
        .enumerate()
        .map(|(i, (c, p))| {
            let args = vec![
                format!("--name=e{i}"),
                format!("--data-dir={}", root.join(format!("e{i}")).display()),
                format!("--listen-client-urls=http://127.0.0.1:{c}"),
                format!("--advertise-client-urls=http://127.0.0.1:{c}"),
                format!("--listen-peer-urls=http://127.0.0.1:{p}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{p}"),
                format!("--initial-cluster={}", initial.join(",")),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=bench".into(),
                "--log-level=error".into(),
            ];
            let mut m = EtcdMember {
                child: None,
                args,
                client: format!("http://127.0.0.1:{c}"),
            };
            m.start();
            m
        })
        .collect()
}

impl EtcdMember {
    fn start(&mut self) {
        self.child = Some(
            Command::new("/usr/bin/etcd")
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd"),
        );
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Index of the etcd leader (all live members agree).
fn etcd_leader(members: &[EtcdMember]) -> usize {
    let a = agent(Duration::from_secs(2));
    let t = Instant::now();
    loop {
        let mut ids = Vec::new();
        let mut leader = None;
        for m in members {
            if m.child.is_none() {
                ids.push(None);
                continue;
            }
            let v: Option<Value> = a
                .post(&format!("{}/v3/maintenance/status", m.client))
                .send_json(json!({}))
                .ok()
                .and_then(|mut r| r.body_mut().read_json().ok());
            let me = v
                .as_ref()
                .and_then(|v| v["header"]["member_id"].as_str().map(String::from));
            if let Some(l) = v
                .as_ref()
                .and_then(|v| v["leader"].as_str().map(String::from))
            {
                leader = Some(l);
            }
            ids.push(me);
        }
        if let Some(l) = &leader
            && let Some(i) = ids.iter().position(|id| id.as_deref() == Some(l.as_str()))
            && Store::put(&Etcd, &a, &members[i].client, "probe")
        {
            return i;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no etcd leader");
        thread::sleep(Duration::from_millis(50));
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let root = temp_dir("bench-raft");
    let mut abi = abi_cluster(&root);
    let mut etcd = etcd_cluster(&root);
    let li = abi.leader();
    let ei = etcd_leader(&etcd);
    // Warm both (connections, first elections' leftovers).
    load(&Abi, &abi.urls[li], 4);
    load(&Etcd, &etcd[ei].client, 4);

    println!("replicated writes, 100-byte values, {SECS} s per point, to the leader");
    println!(
        "{:>8} | {:>24} | {:>24} | ratio",
        "clients", "abi puts/s p50/p99 ms", "etcd puts/s p50/p99 ms"
    );
    for clients in [16, 32, 64] {
        let (at, a50, a99) = load(&Abi, &abi.urls[li], clients);
        let (et, e50, e99) = load(&Etcd, &etcd[ei].client, clients);
        println!(
            "{clients:>8} | {at:>9.0} {a50:>6.2}/{a99:<7.2} | {et:>9.0} {e50:>6.2}/{e99:<7.2} | {:.2}x",
            at / et
        );
    }

    let trials = 3;
    let (mut af, mut ef) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        let li = abi.leader();
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != li)
            .map(|i| abi.urls[i].clone())
            .collect();
        let d = failover(&Abi, &survivors, || {
            if let Some(mut n) = abi.nodes[li].take() {
                n.kill();
            }
        });
        af.push(d.as_secs_f64() * 1e3);
        abi.nodes[li] = Some(NodeProcess::start(
            clone_opts(&abi.opts[li]),
            Duration::from_secs(60),
        ));
        thread::sleep(Duration::from_secs(2));

        let ei = etcd_leader(&etcd);
        let survivors: Vec<String> = (0..3)
            .filter(|i| *i != ei)
            .map(|i| etcd[i].client.clone())
            .collect();
        let d = failover(&Etcd, &survivors, || etcd[ei].kill());
        ef.push(d.as_secs_f64() * 1e3);
        etcd[ei].start();
        thread::sleep(Duration::from_secs(2));
    }
    println!(
        "leader SIGKILL -> first successful put, {trials} trials: abi {af:.0?} ms (median {:.0}), etcd {ef:.0?} ms (median {:.0})",
        median(af.clone()),
        median(ef.clone())
    );
    println!(
        "(abi: election timeout 300-600 ms, heartbeat 100 ms; etcd defaults: election 1000 ms, heartbeat 100 ms)"
    );
}
