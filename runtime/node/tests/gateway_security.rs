//! Gateway TLS, JWT and CORS with real `abi-node` processes: an HTTPS client
//! that trusts the cluster CA connects while plain HTTP on the same port gets
//! no HTTP answer; a non-loopback plain-HTTP bind is refused at start-up;
//! HS256/RS256 tokens grant their roles and bad tokens get 401; CORS headers
//! appear only for configured origins.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use abi_tests::{NodeOptions, NodeProcess, free_port, temp_dir, tls_agent};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_abi-node"))
}

fn abi(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run abi-node")
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn create_key(file: &Path, role: &str) -> String {
    ok(abi(&[
        "keys",
        "create",
        "--role",
        role,
        "--keys-file",
        &file.display().to_string(),
    ]))
}

fn plain_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// Status and body of `method url` with optional headers.
fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String, ureq::http::HeaderMap), ureq::Error> {
    let mut resp = match method {
        "GET" => {
            let mut r = agent.get(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        "OPTIONS" => {
            let mut r = agent.options(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.header("content-type", "application/json").send("{}")
        }
    }?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Ok((status, body, headers))
}

#[test]
fn https_gateway_serves_clients_that_trust_the_ca_and_refuses_plain_http() {
    let dir = temp_dir("gw-tls");
    let ca = dir.join("ca");
    let tls = dir.join("tls");
    ok(abi(&["certs", "init", &ca.display().to_string()]));
    ok(abi(&[
        "certs",
        "issue",
        "--ca",
        &ca.display().to_string(),
        "--node",
        "tlsnode",
        "--out",
        &tls.display().to_string(),
        "--san",
        "127.0.0.1",
        "--san",
        "localhost",
    ]));
    let keys = dir.join("keys.toml");
    let reader = create_key(&keys, "reader");
    let opts = NodeOptions::fresh(&bin(), &dir)
        .arg("--node-id")
        .arg("tlsnode")
        .arg("--keys-file")
        .arg(keys.display().to_string())
        .arg("--gateway-tls-cert")
        .arg(tls.join("node.pem").display().to_string())
        .arg("--gateway-tls-key")
        .arg(tls.join("node.key").display().to_string());
    let addr = opts.http;
    let node = NodeProcess::start_https(opts, &tls.join("ca.pem"), Duration::from_secs(30));
    assert!(node.http.starts_with("https://"));

    // A client trusting the cluster CA: health, then an authenticated call.
    let agent = tls_agent(&tls.join("ca.pem"));
    let (s, b, _) = call(&agent, "GET", &format!("{}/health", node.http), &[]).expect("https");
    assert_eq!(s, 200, "{b}");
    let bearer = format!("Bearer {reader}");
    let (s, b, _) = call(
        &agent,
        "GET",
        &format!("{}/v1/cluster/actors", node.http),
        &[("authorization", &bearer)],
    )
    .expect("https");
    assert_eq!(s, 200, "{b}");
    // By host name too (the certificate carries `localhost`).
    let by_name = format!("https://localhost:{}/health", addr.port());
    assert_eq!(call(&agent, "GET", &by_name, &[]).expect("https").0, 200);

    // A client with only the public web roots does not trust the node.
    assert!(
        call(&plain_agent(), "GET", &format!("{}/health", node.http), &[]).is_err(),
        "an untrusted certificate must fail the handshake"
    );

    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut sock = std::net::TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    sock.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = sock.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP must not be answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        call(&plain_agent(), "GET", &format!("http://{addr}/health"), &[]).is_err(),
        "an http:// client gets an error, not an answer"
    );
}

#[test]
fn plain_http_on_a_public_address_is_refused_at_start_up() {
    let dir = temp_dir("gw-plain");
    let http = format!("0.0.0.0:{}", free_port());
    let quic = format!("127.0.0.1:{}", free_port());
    let out = Command::new(bin())
        .args(["run", "--http", &http, "--listen", &quic, "--data-dir"])
        .arg(dir.join("data"))
        .current_dir(&dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plain HTTP") && err.contains("--allow-insecure-http"),
        "{err}"
    );
    // TLS given only half: a clear error as well.
    let out = Command::new(bin())
        .args(["run", "--gateway-tls-cert", "x.pem"])
        .current_dir(&dir)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses a cert without key"
    );
}

const SECRET: &str = "an-hs256-secret-for-tests-only-0123456789";
const RSA_PRIVATE: &str = include_str!("../../../actors/gateway/tests/fixtures/jwt-rs256-test.key");
const RSA_PUBLIC: &str = include_str!("../../../actors/gateway/tests/fixtures/jwt-rs256-test.pub");
const OTHER_RSA_PRIVATE: &str =
    include_str!("../../../actors/gateway/tests/fixtures/jwt-rs256-other.key");

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn token(alg: Algorithm, claims: &serde_json::Value, key: &EncodingKey) -> String {
    encode(&Header::new(alg), claims, key).expect("encode")
}

#[test]
fn jwt_bearer_tokens_grant_their_roles() {
    let dir = temp_dir("gw-jwt");
    let secret = dir.join("jwt.secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let public = dir.join("jwt.pub");
    std::fs::write(&public, RSA_PUBLIC).expect("public key");
    let keys = dir.join("keys.toml");
    let api_reader = create_key(&keys, "reader");
    // Leeway from the file; keys from flags (flags add to the file's section).
    let cfg = dir.join("abi.toml");
    std::fs::write(
        &cfg,
        "[node]\nid = \"jwtnode\"\n\n[gateway.jwt]\nleeway_secs = 60\n",
    )
    .expect("config");
    let opts = NodeOptions::fresh(&bin(), &dir)
        .arg("--config")
        .arg(cfg.display().to_string())
        .arg("--keys-file")
        .arg(keys.display().to_string())
        .arg("--jwt-hs256-secret-file")
        .arg(secret.display().to_string())
        .arg("--jwt-rs256-public-key")
        .arg(public.display().to_string());
    let node = NodeProcess::start(opts, Duration::from_secs(30));
    let agent = plain_agent();
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let rs = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("rsa");
    let other = EncodingKey::from_rsa_pem(OTHER_RSA_PRIVATE.as_bytes()).expect("rsa");
    let exp = now() + 300;
    let status = |method: &str, path: &str, tok: &str| {
        let auth = format!("Bearer {tok}");
        let (s, b, _) = call(
            &agent,
            method,
            &format!("{}{path}", node.http),
            &[("authorization", &auth)],
        )
        .expect("call");
        (s, b)
    };

    let reader = token(
        Algorithm::HS256,
        &json!({"sub": "r", "role": "reader", "exp": exp}),
        &hs,
    );
    assert_eq!(status("GET", "/v1/cluster/actors", &reader).0, 200);
    // Too weak for an admin route.
    let (s, b) = status("POST", "/v1/admin/keys/reload", &reader);
    assert_eq!(s, 403, "{b}");
    let admin = token(
        Algorithm::RS256,
        &json!({"sub": "a", "role": "admin", "exp": exp}),
        &rs,
    );
    let (s, b) = status("POST", "/v1/admin/keys/reload", &admin);
    assert_eq!(s, 200, "{b}");
    // Expired within the 60 s leeway: accepted; beyond it: 401.
    let skewed = token(
        Algorithm::HS256,
        &json!({"role": "reader", "exp": now() - 20}),
        &hs,
    );
    assert_eq!(status("GET", "/v1/cluster/actors", &skewed).0, 200);
    let expired = token(
        Algorithm::HS256,
        &json!({"role": "reader", "exp": now() - 600}),
        &hs,
    );
    let (s, b) = status("GET", "/v1/cluster/actors", &expired);
    assert_eq!(s, 401, "{b}");
    assert!(b.contains("unauthorized"), "{b}");
    // Wrong keys, and alg none.
    let wrong_rsa = token(
        Algorithm::RS256,
        &json!({"role": "admin", "exp": exp}),
        &other,
    );
    assert_eq!(status("GET", "/v1/cluster/actors", &wrong_rsa).0, 401);
    let wrong_secret = token(
        Algorithm::HS256,
        &json!({"role": "admin", "exp": exp}),
        &EncodingKey::from_secret(b"not-the-configured-secret-0123456789"),
    );
    assert_eq!(status("GET", "/v1/cluster/actors", &wrong_secret).0, 401);
    let body = {
        use std::fmt::Write as _;
        let claims = json!({"role": "admin", "exp": exp}).to_string();
        // base64url without padding, by hand: no extra dev-dependency.
        let mut s = String::new();
        for chunk in [r#"{"alg":"none","typ":"JWT"}"#, claims.as_str()] {
            let _ = write!(s, "{}.", b64url(chunk.as_bytes()));
        }
        s
    };
    assert_eq!(status("GET", "/v1/cluster/actors", &body).0, 401);
    assert_eq!(
        status("GET", "/v1/cluster/actors", &format!("{body}c2lnbmF0dXJl")).0,
        401
    );
    // API keys keep working next to JWTs.
    assert_eq!(status("GET", "/v1/cluster/actors", &api_reader).0, 200);
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[test]
fn cors_is_off_by_default_and_answers_preflights_for_configured_origins() {
    let preflight = |origin: &'static str| {
        [
            ("origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ]
    };
    // Default: no CORS headers at all.
    let dir = temp_dir("gw-cors-off");
    let node = NodeProcess::start(NodeOptions::fresh(&bin(), &dir), Duration::from_secs(30));
    let agent = plain_agent();
    let url = format!("{}/v1/cluster/actors", node.http);
    let (_, _, h) = call(&agent, "OPTIONS", &url, &preflight("https://a.example")).expect("call");
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    let (s, _, h) = call(&agent, "GET", &url, &[("origin", "https://a.example")]).expect("call");
    assert_eq!(s, 200);
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    drop(node);

    // Configured, with authentication on: preflights need no credentials.
    let dir = temp_dir("gw-cors-on");
    let keys = dir.join("keys.toml");
    let reader = create_key(&keys, "reader");
    let cfg = dir.join("abi.toml");
    std::fs::write(
        &cfg,
        "[node]\nid = \"corsnode\"\n\n[gateway]\ncors_origins = [\"https://a.example\"]\n",
    )
    .expect("config");
    let opts = NodeOptions::fresh(&bin(), &dir)
        .arg("--config")
        .arg(cfg.display().to_string())
        .arg("--keys-file")
        .arg(keys.display().to_string());
    let node = NodeProcess::start(opts, Duration::from_secs(30));
    let url = format!("{}/v1/cluster/actors", node.http);
    let (s, b, h) = call(&agent, "OPTIONS", &url, &preflight("https://a.example")).expect("call");
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        h.get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://a.example")
    );
    let allowed = h
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{h:?}");
    assert!(h.get("access-control-allow-methods").is_some(), "{h:?}");
    // Another origin: no allow-origin header.
    let (_, _, h) = call(&agent, "OPTIONS", &url, &preflight("https://b.example")).expect("call");
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
    // Actual requests: allowed origin gets the header, on success and on 401.
    let auth = format!("Bearer {reader}");
    let (s, _, h) = call(
        &agent,
        "GET",
        &url,
        &[("origin", "https://a.example"), ("authorization", &auth)],
    )
    .expect("call");
    assert_eq!(s, 200);
    assert_eq!(
        h.get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://a.example")
    );
    let (s, _, h) = call(&agent, "GET", &url, &[("origin", "https://a.example")]).expect("call");
    assert_eq!(s, 401);
    assert!(h.get("access-control-allow-origin").is_some(), "{h:?}");
    let (s, _, h) = call(
        &agent,
        "GET",
        &url,
        &[("origin", "https://b.example"), ("authorization", &auth)],
    )
    .expect("call");
    assert_eq!(s, 200);
    assert!(h.get("access-control-allow-origin").is_none(), "{h:?}");
}
