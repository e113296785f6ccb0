//! Gateway security with a real node: every route in the role table refuses
//! missing credentials (401) and too weak a role (403) and admits the right
//! one; bursts get 429 then recover; revocation applies on SIGHUP.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use abi_gateway::auth::Role;
use abi_gateway::auth::roles::{Access, ROUTES};
use abi_tests::{NodeOptions, NodeProcess, temp_dir};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_abi-node"))
}

fn create_key(file: &std::path::Path, role: &str) -> String {
    let out = Command::new(bin())
        .args(["keys", "create", "--role", role, "--keys-file"])
        .arg(file)
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn call(node: &NodeProcess, method: &str, path: &str, key: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let url = format!("{}{path}", node.http);
    let resp = match method {
        "GET" => {
            let mut r = agent.get(&url);
            if let Some(k) = key {
                r = r.header("authorization", &format!("Bearer {k}"));
            }
            r.call()
        }
        "DELETE" => {
            let mut r = agent.delete(&url);
            if let Some(k) = key {
                r = r.header("api-key", k);
            }
            r.call()
        }
        m => {
            let mut r = match m {
                "PUT" => agent.put(&url),
                "PATCH" => agent.patch(&url),
                _ => agent.post(&url),
            };
            if let Some(k) = key {
                r = r.header("api-key", k);
            }
            r.header("content-type", "application/json").send("{}")
        }
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    (status, body)
}

fn concrete(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|s| match s {
            "{path:.*}" => "authnode/nothing",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_route_checks_credentials_and_roles() {
    let dir = temp_dir("auth");
    let keys = dir.join("keys.toml");
    let reader = create_key(&keys, "reader");
    let writer = create_key(&keys, "writer");
    let admin = create_key(&keys, "admin");
    let text = std::fs::read_to_string(&keys).expect("keys file");
    assert!(
        !text.contains(reader.rsplit('_').next().expect("secret")),
        "only hashes stored"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&keys).expect("meta").permissions().mode() & 0o777,
        0o600
    );

    let opts = NodeOptions::fresh(&bin(), &dir)
        .arg("--node-id")
        .arg("authnode")
        .arg("--keys-file")
        .arg(keys.display().to_string());
    let node = NodeProcess::start(opts, Duration::from_secs(20));
    let key_of = |r: Role| match r {
        Role::Reader => reader.as_str(),
        Role::Writer => writer.as_str(),
        Role::Admin => admin.as_str(),
    };
    let weaker = |r: Role| match r {
        Role::Reader => None,
        Role::Writer => Some(Role::Reader),
        Role::Admin => Some(Role::Writer),
    };
    for (method, pattern, access) in ROUTES {
        let path = concrete(pattern);
        // Operator commands on the gateway itself would restart it mid-walk.
        match access {
            Access::Open => {
                let (s, b) = call(&node, method, &path, None);
                assert!(s != 401 && s != 403, "{method} {path} is open: {s} {b}");
            }
            Access::Role(need) => {
                if *pattern == "/metrics" {
                    continue; // open by default (`open_metrics`), checked below
                }
                let (s, b) = call(&node, method, &path, None);
                assert_eq!(s, 401, "{method} {path} without key: {b}");
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&b).expect("json")["error"]["code"],
                    "unauthorized"
                );
                let (s, _) = call(&node, method, &path, Some("abi_0000_bogus"));
                assert_eq!(s, 401, "{method} {path} with a bogus key");
                if let Some(w) = weaker(*need) {
                    let (s, b) = call(&node, method, &path, Some(key_of(w)));
                    assert_eq!(s, 403, "{method} {path} with {w:?}: {b}");
                }
                let (s, b) = call(&node, method, &path, Some(key_of(*need)));
                assert!(
                    s != 401 && s != 403,
                    "{method} {path} with {need:?}: {s} {b}"
                );
            }
        }
    }
    // Unknown routes are admin-only: no probing without a key.
    assert_eq!(call(&node, "GET", "/no/such/route", None).0, 401);
    assert_eq!(call(&node, "GET", "/no/such/route", Some(&admin)).0, 404);
    assert_eq!(call(&node, "GET", "/metrics", None).0, 200);
}

#[test]
fn bursts_are_rate_limited_then_recover_and_revocation_applies_on_sighup() {
    let dir = temp_dir("ratelimit");
    let keys = dir.join("keys.toml");
    let reader = create_key(&keys, "reader");
    let cfg = dir.join("abi.toml");
    std::fs::write(
        &cfg,
        "[node]\nid = \"rl\"\n\n[gateway]\nrate_limit_per_sec = 5\nrate_limit_burst = 5\n",
    )
    .expect("config");
    let opts = NodeOptions::fresh(&bin(), &dir)
        .arg("--config")
        .arg(cfg.display().to_string())
        .arg("--keys-file")
        .arg(keys.display().to_string());
    let node = NodeProcess::start(opts, Duration::from_secs(20));
    let statuses: Vec<u16> = (0..20)
        .map(|_| call(&node, "GET", "/v1/cluster/actors", Some(&reader)).0)
        .collect();
    assert!(
        statuses.iter().filter(|&&s| s == 200).count() >= 5,
        "{statuses:?}"
    );
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = ureq::get(&format!("{}/v1/cluster/actors", node.http))
        .header("authorization", &format!("Bearer {reader}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("call");
    if r.status().as_u16() == 429 {
        assert!(r.headers().get("retry-after").is_some());
    }
    assert!(
        r.headers().get("x-request-id").is_some(),
        "request id echoed"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        call(&node, "GET", "/v1/cluster/actors", Some(&reader)).0,
        200,
        "recovered"
    );

    // Revoke and SIGHUP: the key stops working without a restart.
    let id = reader.split('_').nth(1).expect("id");
    let out = Command::new(bin())
        .args(["keys", "revoke", "--id", id, "--keys-file"])
        .arg(&keys)
        .output()
        .expect("revoke");
    assert!(out.status.success());
    node.signal(libc::SIGHUP);
    let gone = abi_tests::eventually(Duration::from_secs(5), || {
        (call(&node, "GET", "/v1/cluster/actors", Some(&reader)).0 == 401).then_some(())
    });
    assert!(
        gone.is_some(),
        "revoked key refused after SIGHUP; log:\n{}",
        node.logs()
    );
    assert_eq!(call(&node, "GET", "/health", None).0, 200, "node still up");
}
