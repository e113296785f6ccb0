//! The `abi-node` binary, black-box: real processes, real signals, real HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use abi_tests::{NodeOptions, NodeProcess, eventually, temp_dir};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_abi-node"))
}

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

const READY: Duration = Duration::from_secs(20);

/// `abi-node run` with no arguments at all: the embedded default on 127.0.0.1:8080.
#[test]
fn default_run_serves_the_tree_and_exits_cleanly_on_sigterm() {
    let dir = temp_dir("default");
    let opts = NodeOptions {
        bin: bin(),
        dir: dir.to_path_buf(),
        args: vec![],
        http: ([127, 0, 0, 1], 8080).into(),
        env: vec![],
    };
    let mut node = NodeProcess::start(opts, READY);
    let health = node.get("/health").json();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node"], "node-a");
    let tree = node.get("/v1/cluster/actors").json();
    assert_eq!(tree["path"], "node-a");
    assert_eq!(tree["state"], "running");
    let gw = tree["children"]
        .as_array()
        .expect("children")
        .iter()
        .find(|c| c["path"] == "node-a/gateway")
        .expect("gateway in tree");
    for key in [
        "path",
        "state",
        "restarts",
        "last_failure",
        "uptime_secs",
        "children",
    ] {
        assert!(gw.get(key).is_some(), "tree node lacks {key}: {gw}");
    }
    assert_eq!(node.get("/ready").status, 200);
    assert!(dir.join("abi-data").is_dir(), "data under ./abi-data");

    let t0 = Instant::now();
    node.signal(libc::SIGTERM);
    let status = node
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s");
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        node.logs()
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(node.logs().contains("stopped cleanly"));
}

fn restarts(node: &NodeProcess, path: &str) -> u64 {
    fn find<'a>(t: &'a abi_tests::Value, path: &str) -> Option<&'a abi_tests::Value> {
        if t["path"] == path {
            return Some(t);
        }
        t["children"].as_array()?.iter().find_map(|c| find(c, path))
    }
    let tree = node.get("/v1/cluster/actors").json();
    find(&tree, path)
        .and_then(|n| n["restarts"].as_u64())
        .unwrap_or(u64::MAX)
}

#[test]
fn a_killed_actor_is_restarted_and_too_many_failures_escalate() {
    let dir = temp_dir("escalate");
    let cfg = dir.join("abi.toml");
    std::fs::write(
        &cfg,
        "[node]\nid = \"esc\"\n\n[supervision]\nmax_restarts = 1\nwithin_secs = 30\n",
    )
    .expect("write config");
    let opts = NodeOptions::fresh(&bin(), &dir)
        .arg("--config")
        .arg(cfg.display().to_string());
    let mut node = NodeProcess::start(opts, READY);
    assert_eq!(restarts(&node, "esc/gateway"), 0);

    // Operator restart through the supervisor.
    let r = abi_tests::post_empty(&format!(
        "{}/v1/cluster/actors/esc/gateway/restart",
        node.http
    ))
    .expect("restart");
    assert_eq!(r.status, 202, "{}", r.body);
    let got = eventually(Duration::from_secs(10), || {
        abi_tests::get(&format!("{}/health", node.http)).ok()?;
        (restarts(&node, "esc/gateway") == 1).then_some(())
    });
    assert!(got.is_some(), "restart counted; log:\n{}", node.logs());

    // A crash (fault injection) is a failure: restarted, counted, reason recorded.
    let r = abi_tests::post_empty(&format!("{}/v1/cluster/actors/esc/gateway/kill", node.http))
        .expect("kill");
    assert_eq!(r.status, 202);
    let got = eventually(Duration::from_secs(10), || {
        let tree = abi_tests::get(&format!("{}/v1/cluster/actors", node.http))
            .ok()?
            .json();
        let gw = tree["children"]
            .as_array()?
            .iter()
            .find(|c| c["path"] == "esc/gateway")?
            .clone();
        (gw["restarts"] == 2 && gw["last_failure"]["reason"] == "killed").then_some(())
    });
    assert!(
        got.is_some(),
        "kill counted; tree: {}\nlog:\n{}",
        node.get("/v1/cluster/actors").body,
        node.logs()
    );

    // Second failure within 30 s exceeds max_restarts = 1: the root escalates
    // and the node reports it and exits non-zero.
    let _ = abi_tests::post_empty(&format!("{}/v1/cluster/actors/esc/gateway/kill", node.http));
    let status = node
        .wait_exit(Duration::from_secs(10))
        .expect("node exits after escalation");
    assert_eq!(status.code(), Some(3), "log:\n{}", node.logs());
    let logs = node.logs();
    assert!(logs.contains("restart intensity exceeded"), "{logs}");
    assert!(logs.contains("root supervisor escalated"), "{logs}");
}

#[test]
fn unknown_paths_are_json_errors() {
    let dir = temp_dir("errors");
    let node = NodeProcess::start(NodeOptions::fresh(&bin(), &dir), READY);
    let r = node.get("/no/such/route");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["code"].is_string());
    let id = node.get("/health").json()["node"]
        .as_str()
        .expect("id")
        .to_string();
    let r = abi_tests::post_empty(&format!(
        "{}/v1/cluster/actors/{id}/nothing/restart",
        node.http
    ))
    .expect("post");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = abi_tests::post_empty(&format!("{}/v1/cluster/actors/{id}/restart", node.http))
        .expect("post");
    assert_eq!(r.status, 400, "root cannot be restarted: {}", r.body);
    let r = abi_tests::post_empty(&format!(
        "{}/v1/cluster/actors/bad%20id/x/restart",
        node.http
    ))
    .expect("post");
    assert_eq!(r.status, 400, "{}", r.body);
    // A node the cluster does not know: the caller's mistake, not a 503.
    let r = node.get("/v1/cluster/actors?node=nosuchnode");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = node.get(&format!("/v1/cluster/actors?node={id}"));
    assert_eq!(r.status, 200, "its own id is this node: {}", r.body);
}

const BROKEN: &str = r#"[node]
id = "a"
listn = "127.0.0.1:7700"

[supervision]
max_restarts = "lots"

[[collection]]
name = "docs"
dim = 4

[[collection]]
name = "docs"
dim = 4
"#;

#[test]
fn malformed_topology_fails_check_and_run_with_every_position() {
    let dir = temp_dir("broken");
    let file = dir.join("bad.toml");
    std::fs::write(&file, BROKEN).expect("write");
    let out = Command::new(bin())
        .arg("check")
        .arg(&file)
        .output()
        .expect("run check");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let f = file.display();
    assert!(
        err.contains(&format!("{f}:3:1: error: unknown key `node.listn`")),
        "{err}"
    );
    assert!(err.contains("did you mean `node.listen`?"), "{err}");
    assert!(
        err.contains(&format!(
            "{f}:6:16: error: `supervision.max_restarts` must be an integer"
        )),
        "{err}"
    );
    // Semantic errors come after schema errors are fixed; check them too.
    let fixed = BROKEN.replace("listn", "listen").replace("\"lots\"", "3");
    std::fs::write(&file, fixed).expect("write");
    let out = Command::new(bin())
        .arg("check")
        .arg(&file)
        .output()
        .expect("run check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "{f}:13:8: error: duplicate collection name \"docs\""
        )),
        "{err}"
    );

    // `run` refuses too, and nothing starts listening.
    std::fs::write(&file, BROKEN).expect("write");
    let port = abi_tests::free_port();
    let out = Command::new(bin())
        .current_dir(&dir)
        .args(["run", "--http", &format!("127.0.0.1:{port}"), "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(":3:1: error: unknown key"), "{err}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "nothing bound"
    );
    assert!(!dir.join("abi-data").exists(), "nothing started");
}

#[test]
fn init_writes_a_config_that_checks_and_shipped_configs_pass() {
    let dir = temp_dir("init");
    let out = Command::new(bin())
        .arg("init")
        .arg(&*dir)
        .output()
        .expect("init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = dir.join("abi.toml");
    assert!(written.is_file());
    let again = Command::new(bin())
        .arg("init")
        .arg(&*dir)
        .output()
        .expect("init");
    assert!(!again.status.success(), "refuses to overwrite");
    for f in [
        written,
        configs().join("single-node.toml"),
        configs().join("three-node.toml"),
        configs().join("gpu-node.toml"),
    ] {
        let out = Command::new(bin())
            .arg("check")
            .arg(&f)
            .output()
            .expect("check");
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v = Command::new(bin())
        .arg("version")
        .output()
        .expect("version");
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("abi-node "));
}

#[test]
fn a_cluster_file_needs_node_id_and_flags_select_the_node() {
    let dir = temp_dir("cluster-file");
    let cfg = configs().join("three-node.toml");
    let out = Command::new(bin())
        .current_dir(&dir)
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-id"));
    // The example names a TLS dir; give node-b real certificates.
    let ca = dir.join("ca");
    let tls = dir.join("tls");
    for args in [
        vec!["certs".to_string(), "init".into(), ca.display().to_string()],
        vec![
            "certs".into(),
            "issue".into(),
            "--ca".into(),
            ca.display().to_string(),
            "--node".into(),
            "node-b".into(),
            "--out".into(),
            tls.display().to_string(),
        ],
    ] {
        let out = Command::new(bin()).args(&args).output().expect("certs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let opts = NodeOptions::fresh(&bin(), &dir)
        .arg("--config")
        .arg(cfg.display().to_string())
        .arg("--node-id")
        .arg("node-b")
        .arg("--tls-dir")
        .arg(tls.display().to_string());
    let node = NodeProcess::start(opts, READY);
    assert_eq!(node.get("/health").json()["node"], "node-b");
}
