//! Three real abi-node processes on loopback, QUIC with mutual TLS: the
//! cluster forms through static seeds and through a real etcd; remote asks
//! work from every node to every other; SIGKILL marks a node dead on the
//! others in time and requests to it fail fast; a restarted node rejoins.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use abi_tests::{NodeOptions, NodeProcess, Value, eventually, free_port, temp_dir};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_abi-node"))
}

const TIMING: &str = "[membership]\nheartbeat_ms = 200\nsuspect_ms = 600\ndead_ms = 1500\n";

struct Spec {
    id: String,
    quic: u16,
    tls: PathBuf,
    dir: PathBuf,
}

fn specs(root: &Path, n: usize) -> Vec<Spec> {
    let ids: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let tls = abi_tests::cluster_certs(&bin(), root, &ids);
    ids.into_iter()
        .zip(tls)
        .map(|(id, tls)| Spec {
            dir: root.join(&id),
            id,
            quic: free_port(),
            tls,
        })
        .collect()
}

fn start(s: &Spec, config: &Path, extra: &[String]) -> NodeProcess {
    std::fs::create_dir_all(&s.dir).expect("dir");
    let mut opts = NodeOptions::fresh(&bin(), &s.dir);
    opts.args = vec![
        "--config".into(),
        config.display().to_string(),
        "--node-id".into(),
        s.id.clone(),
        "--listen".into(),
        format!("127.0.0.1:{}", s.quic),
        "--http".into(),
        opts.http.to_string(),
        "--data-dir".into(),
        s.dir.join("data").display().to_string(),
        "--tls-dir".into(),
        s.tls.display().to_string(),
    ];
    opts.args.extend(extra.iter().cloned());
    NodeProcess::start(opts, Duration::from_secs(30))
}

fn statuses(node: &NodeProcess) -> Vec<(String, String, u64)> {
    let r = abi_tests::get(&format!("{}/v1/cluster/nodes", node.http));
    let Ok(r) = r else { return vec![] };
    if r.status != 200 {
        return vec![];
    }
    r.json()["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["id"].as_str().unwrap_or("").to_string(),
                        n["status"].as_str().unwrap_or("").to_string(),
                        n["incarnation"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn all_alive(nodes: &[&NodeProcess], n: usize) -> bool {
    nodes.iter().all(|node| {
        let s = statuses(node);
        s.len() == n && s.iter().all(|(_, st, _)| st == "alive")
    })
}

fn remote_tree(from: &NodeProcess, id: &str) -> abi_tests::Reply {
    abi_tests::get(&format!("{}/v1/cluster/actors?node={id}", from.http)).expect("http")
}

#[test]
fn static_seeds_cluster_remote_asks_failure_detection_and_rejoin() {
    let root = temp_dir("cluster-static");
    let sp = specs(&root, 3);
    let seeds: Vec<String> = sp.iter().map(|s| format!("127.0.0.1:{}", s.quic)).collect();
    let config = root.join("abi.toml");
    std::fs::write(&config, format!("[cluster]\nname = \"t\"\n\n{TIMING}")).expect("config");
    let extra = vec!["--seeds".to_string(), seeds.join(",")];
    let mut nodes: Vec<NodeProcess> = sp.iter().map(|s| start(s, &config, &extra)).collect();

    let formed = eventually(Duration::from_secs(20), || {
        all_alive(&nodes.iter().collect::<Vec<_>>(), 3).then_some(())
    });
    assert!(
        formed.is_some(),
        "cluster did not form: {:?}",
        nodes.iter().map(statuses).collect::<Vec<_>>()
    );

    // An ask from each node to the root supervisor of each other node.
    for (i, from) in nodes.iter().enumerate() {
        for (j, to) in sp.iter().enumerate() {
            if i == j {
                continue;
            }
            let r = remote_tree(from, &to.id);
            assert_eq!(r.status, 200, "{} -> {}: {}", sp[i].id, to.id, r.body);
            assert_eq!(r.json()["path"], Value::from(to.id.clone()));
        }
    }

    // SIGKILL n3: the others mark it dead within dead_ms (+ slack), and asks to it fail fast.
    let t0 = Instant::now();
    nodes[2].kill();
    let dead = eventually(Duration::from_secs(10), || {
        nodes[..2]
            .iter()
            .all(|n| {
                statuses(n)
                    .iter()
                    .any(|(id, st, _)| id == "n3" && st == "dead")
            })
            .then(|| t0.elapsed())
    });
    let dead = dead.expect("n3 marked dead on n1 and n2");
    assert!(dead < Duration::from_secs(5), "took {dead:?}");
    eprintln!("SIGKILL -> dead on both peers: {dead:?}");
    // The change is in n1's event log (dashboard, /v1/cluster/events).
    let events = abi_tests::get(&format!("{}/v1/cluster/events", nodes[0].http)).expect("events");
    let logged = events.json()["events"].as_array().is_some_and(|ev| {
        ev.iter()
            .any(|e| e["kind"] == "membership_changed" && e["detail"] == "n3 is dead")
    });
    assert!(logged, "membership change logged: {}", events.body);
    let t1 = Instant::now();
    let r = remote_tree(&nodes[0], "n3");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "peer_unreachable");
    assert!(
        t1.elapsed() < Duration::from_millis(2500),
        "fails fast, not after the deadline: {:?}",
        t1.elapsed()
    );

    // Restart n3 on the same data dir: it rejoins with a new incarnation.
    let old_inc = statuses(&nodes[0])
        .iter()
        .find(|(id, ..)| id == "n3")
        .map(|x| x.2)
        .unwrap_or(0);
    nodes[2] = start(&sp[2], &config, &extra);
    let back = eventually(Duration::from_secs(20), || {
        statuses(&nodes[0])
            .iter()
            .any(|(id, st, inc)| id == "n3" && st == "alive" && *inc > old_inc)
            .then_some(())
    });
    assert!(back.is_some(), "n3 rejoined: {:?}", statuses(&nodes[0]));
    let r = remote_tree(&nodes[0], "n3");
    assert_eq!(r.status, 200, "{}", r.body);
}

struct Etcd(Child, PathBuf);
impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn cluster_forms_through_a_real_etcd() {
    let etcd_bin = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("etcd is installed by scripts/setup.sh --tests (Debian etcd-server)");
    let root = temp_dir("cluster-etcd");
    let (client, peer) = (free_port(), free_port());
    let data = root.join("etcd");
    let child = Command::new(etcd_bin)
        .args(["--data-dir", data.to_str().expect("utf8")])
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let _etcd = Etcd(child, data);
    let up = eventually(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", client)).ok()
    });
    assert!(up.is_some(), "etcd listening");
    let sp = specs(&root, 3);
    let config = root.join("abi.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nname = \"e\"\ndiscovery = {{ kind = \"etcd\", endpoints = [\"127.0.0.1:{client}\"], ttl_secs = 3 }}\n\n{TIMING}"
        ),
    )
    .expect("config");
    let nodes: Vec<NodeProcess> = sp.iter().map(|s| start(s, &config, &[])).collect();
    let formed = eventually(Duration::from_secs(30), || {
        all_alive(&nodes.iter().collect::<Vec<_>>(), 3).then_some(())
    });
    assert!(
        formed.is_some(),
        "etcd cluster did not form: {:?}",
        nodes.iter().map(statuses).collect::<Vec<_>>()
    );
    let r = remote_tree(&nodes[2], "n1");
    assert_eq!(r.status, 200, "{}", r.body);
}
