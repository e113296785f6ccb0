//! Topology loading: the shipped configs pass, and a broken file reports
//! every error with file:line:column and a hint.

use std::path::Path;

use abi_topology::{Diagnostics, parse};

fn configs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn shipped_configs_pass() {
    for name in ["single-node.toml", "three-node.toml"] {
        let path = configs().join(name);
        let loaded = abi_topology::load_file(&path).unwrap_or_else(|d| panic!("{name}:\n{d}"));
        assert!(!loaded.topology.declared_nodes().is_empty(), "{name}");
    }
    let t = abi_topology::load_default()
        .expect("embedded default")
        .topology;
    let node = t.node.expect("default has [node]");
    assert_eq!(node.http.to_string(), "127.0.0.1:8080");
    assert_eq!(node.listen.to_string(), "127.0.0.1:7700");
    assert_eq!(node.data_dir.to_str(), Some("./abi-data"));
}

fn errors(text: &str) -> Diagnostics {
    match parse("bad.toml", text, Path::new("/nonexistent-base")) {
        Ok(_) => panic!("expected errors"),
        Err(d) => d,
    }
}

fn find<'a>(d: &'a Diagnostics, needle: &str) -> &'a abi_topology::Diagnostic {
    d.0.iter()
        .find(|x| x.message.contains(needle))
        .unwrap_or_else(|| panic!("no diagnostic containing {needle:?} in:\n{d}"))
}

#[test]
fn every_schema_error_is_reported_with_position_and_hint() {
    let text = r#"[cluster]
name = "x"
discovery = { kind = "etdc" }

[node]
id = "n1"
listn = "127.0.0.1:7700"
http = 8080

[supervision]
max_restarts = "five"
strategy = "one_for_one"

[[collection]]
name = "docs"
dimension = 3
"#;
    let d = errors(text);
    let kind = find(&d, "cluster.discovery.kind");
    assert_eq!((kind.line, kind.column), (3, 22));
    assert_eq!(kind.hint.as_deref(), Some("did you mean \"etcd\"?"));
    let listn = find(&d, "unknown key `node.listn`");
    assert_eq!((listn.line, listn.column), (7, 1));
    assert_eq!(listn.hint.as_deref(), Some("did you mean `node.listen`?"));
    let http = find(&d, "`node.http` must be a string");
    assert_eq!((http.line, http.column), (8, 8));
    let mr = find(&d, "`supervision.max_restarts` must be an integer");
    assert_eq!(mr.line, 11);
    let dim = find(&d, "unknown key `collection[0].dimension`");
    assert_eq!(dim.line, 16);
    assert_eq!(
        dim.hint.as_deref(),
        Some("did you mean `collection[0].dim`?")
    );
    find(&d, "missing key `collection[0].dim`");
    assert_eq!(d.len(), 6, "{d}");
    let shown = d.to_string();
    assert!(
        shown.contains("bad.toml:7:1: error: unknown key `node.listn`"),
        "{shown}"
    );
    assert!(shown.ends_with("6 errors found"), "{shown}");
}

#[test]
fn semantic_errors_are_all_reported() {
    let text = r#"[[nodes]]
id = "a"
listen = "127.0.0.1:7700"
http = "127.0.0.1:8080"

[[nodes]]
id = "b"
listen = "127.0.0.1:7700"
http = "0.0.0.0:8080"

[[nodes]]
id = "a"
listen = "127.0.0.1:7702"
http = "127.0.0.1:8082"

[[inference]]
name = "minilm"
kind = "embedding"
model = "models/missing"

[[collection]]
name = "docs"
dim = 4
placement = { nodes = ["c"] }

[[collection]]
name = "docs"
dim = 4
embed_with = "minlm"

[plugins]
dirs = ["no-such-dir"]
"#;
    let d = errors(text);
    assert_eq!(find(&d, "duplicate node id \"a\"").line, 12);
    assert_eq!(
        find(&d, "QUIC address 127.0.0.1:7700 of node \"b\"").line,
        8
    );
    assert_eq!(find(&d, "HTTP address 0.0.0.0:8080 of node \"b\"").line, 9);
    let model = find(&d, "model path");
    assert_eq!(model.line, 19);
    let place = find(&d, "placement names unknown node \"c\"");
    assert_eq!((place.line, place.column), (24, 24));
    assert_eq!(find(&d, "duplicate collection name \"docs\"").line, 27);
    let e = find(&d, "`embed_with` names unknown inference pool \"minlm\"");
    assert_eq!(e.hint.as_deref(), Some("did you mean \"minilm\"?"));
    find(&d, "plugin directory");
    assert_eq!(d.len(), 8, "{d}");
}

#[test]
fn syntax_errors_point_at_the_problem() {
    let d = errors("[node]\nid = \"a\"\nlisten = \n");
    assert_eq!(d.0[0].line, 3);
    assert!(d.0[0].message.starts_with("TOML syntax error"), "{d}");
}

#[test]
fn schema_and_model_agree_on_every_key() {
    // A file using every key the schema knows must deserialise cleanly.
    let dir = std::env::temp_dir().join(format!("abi-topo-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("models/m")).expect("mkdir");
    std::fs::create_dir_all(dir.join("plugins")).expect("mkdir");
    let text = r#"
[cluster]
name = "c"
discovery = { kind = "etcd", seeds = [], endpoints = ["127.0.0.1:2379"], address = "http://x", token = "t", prefix = "p", ttl_secs = 5 }
[node]
id = "n"
listen = "127.0.0.1:1"
http = "127.0.0.1:2"
advertise = "127.0.0.1:1"
data_dir = "d"
models_dir = "m"
labels = { a = "b" }
[tls]
dir = "t"
ca = "ca.pem"
cert = "c.pem"
key = "k.pem"
[plugins]
dirs = ["plugins"]
require = ["cpu"]
pins = { "libabi_plugin_cpu.so" = "sha256:0000000000000000000000000000000000000000000000000000000000000000" }
[supervision]
strategy = "rest_for_one"
max_restarts = 1
within_secs = 2
backoff_initial_ms = 3
backoff_max_ms = 4
backoff_jitter = 0.5
reset_after_secs = 6
shutdown_timeout_ms = 7
[gateway]
placement = { all = true, nodes = ["n"], labels = { a = "b" } }
workers = 1
request_timeout_ms = 2
max_body_bytes = 3
keys_file = "keys.toml"
open_metrics = false
rate_limit_per_sec = 5.5
rate_limit_burst = 10
max_concurrency = 64
tls_cert = "gw.pem"
tls_key = "gw.key"
allow_plain_http = true
cors_origins = ["https://a.example", "*"]
jwt = { hs256_secret_file = "s", rs256_public_key_file = "p.pem", leeway_secs = 5, issuer = "i", audience = "a", role_claim = "roles" }
[[inference]]
name = "m"
kind = "embedding"
model = "models/m"
replicas = 1
max_batch = 2
max_wait_ms = 3
queue_capacity = 4
device = "cpu"
placement = { all = true }
[[collection]]
name = "docs"
dim = 3
distance = "dot"
shards = 2
replication = 1
m = 8
ef_construct = 50
ef = 20
embed_with = "m"
fsync = "group"
group_commit_ms = 2
placement = { nodes = ["n"] }
[gpu]
placement = { all = true }
health_interval_secs = 5
[raft]
voters = ["n"]
election_timeout_ms = 1
heartbeat_ms = 2
snapshot_every = 3
[telemetry]
otlp_endpoint = "http://127.0.0.1:4317"
prometheus = false
sampling_ratio = 0.5
log_format = "json"
queue_size = 64
max_export_batch_size = 100
service_name = "abi-test"
[membership]
heartbeat_ms = 100
suspect_ms = 300
dead_ms = 900
"#;
    let t = parse("all.toml", text, &dir).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(t.collections[0].fsync, abi_topology::FsyncName::Group);
    assert_eq!(t.membership.dead_ms, 900);
    let jwt = t.gateway.jwt.as_ref().expect("[gateway.jwt]");
    assert_eq!((jwt.leeway_secs, jwt.role_claim.as_str()), (5, "roles"));
    assert_eq!(t.gateway.cors_origins.len(), 2);
    assert!(t.gateway.allow_plain_http && t.gateway.tls_key.is_some());
    assert_eq!(t.telemetry.queue_size, 64);
    assert_eq!(t.telemetry.max_export_batch_size, 100);
    assert_eq!(t.telemetry.service_name, "abi-test");
    assert_eq!(
        t.supervision.strategy,
        abi_topology::StrategyName::RestForOne
    );
    let _ = std::fs::remove_dir_all(&dir);
}
