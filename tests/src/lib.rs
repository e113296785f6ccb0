//! Black-box test harness: real `abi-node` processes on loopback.
//!
//! [`NodeProcess`] starts the binary with flags, waits until `/health`
//! answers, and kills it (SIGKILL) when dropped, so a failing test never
//! leaves a node behind.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// A free TCP port on 127.0.0.1 (also free for UDP, for QUIC).
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = tcp.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh empty directory under the system temp dir, removed (with what the
/// test wrote in it) when dropped, so repeated test runs do not fill the disk.
pub fn temp_dir(tag: &str) -> TestDir {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("abi-test-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    TestDir(dir)
}

/// A test's scratch directory; dereferences to its path, deleted on drop.
#[derive(Debug)]
pub struct TestDir(PathBuf);

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TestDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        // Nodes are SIGKILLed before their dirs drop (declared later, dropped first);
        // a failure to remove is only a leftover, never a test failure.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP answer: status and body text.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

impl Reply {
    /// The body parsed as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// An HTTPS client that trusts only the CA certificate(s) in the PEM file `ca_pem`
/// (not the public web roots), with HTTP errors as plain answers.
pub fn tls_agent(ca_pem: &Path) -> ureq::Agent {
    use ureq::tls::{Certificate, RootCerts, TlsConfig};
    let pem = std::fs::read(ca_pem).unwrap_or_else(|e| panic!("{}: {e}", ca_pem.display()));
    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect();
    assert!(!certs.is_empty(), "{}: no certificate", ca_pem.display());
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(
            TlsConfig::builder()
                .root_certs(RootCerts::new_with_certs(&certs))
                .build(),
        )
        .build()
        .into()
}

fn finish(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Reply, String> {
    let mut resp = r.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())?;
    Ok(Reply { status, body })
}

/// GET `url`.
pub fn get(url: &str) -> Result<Reply, String> {
    finish(agent().get(url).call())
}

/// POST a JSON body to `url`.
pub fn post_json(url: &str, body: &Value) -> Result<Reply, String> {
    finish(agent().post(url).send_json(body))
}

/// A cluster CA in `root/ca` and a node certificate per id in `root/<id>/tls`, made with
/// `bin`'s `certs init|issue` subcommands; returns the TLS directories in `ids` order.
pub fn cluster_certs(bin: &Path, root: &Path, ids: &[String]) -> Vec<PathBuf> {
    let run = |args: &[&str]| {
        let out = Command::new(bin).args(args).output().expect("run abi-node");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca = root.join("ca");
    let ca = ca.to_str().expect("utf8 path");
    run(&["certs", "init", ca]);
    ids.iter()
        .map(|id| {
            let tls = root.join(id).join("tls");
            run(&[
                "certs",
                "issue",
                "--ca",
                ca,
                "--node",
                id,
                "--out",
                tls.to_str().expect("utf8 path"),
            ]);
            tls
        })
        .collect()
}

/// PUT a JSON body to `url`.
pub fn put_json(url: &str, body: &Value) -> Result<Reply, String> {
    finish(agent().put(url).send_json(body))
}

/// DELETE `url`.
pub fn delete(url: &str) -> Result<Reply, String> {
    finish(agent().delete(url).call())
}

/// POST raw bytes with a content type.
pub fn post_raw(url: &str, content_type: &str, body: &[u8]) -> Result<Reply, String> {
    finish(
        agent()
            .post(url)
            .header("content-type", content_type)
            .send(body),
    )
}

/// POST with an empty body.
pub fn post_empty(url: &str) -> Result<Reply, String> {
    finish(agent().post(url).send_empty())
}

/// A running `abi-node` child process.
#[derive(Debug)]
pub struct NodeProcess {
    child: Option<Child>,
    /// Base URL of its gateway, e.g. `http://127.0.0.1:41234`.
    pub http: String,
    /// Where its stderr (logs) go.
    pub log: PathBuf,
    /// Its working directory.
    pub dir: PathBuf,
}

/// How to start a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Path of the abi-node binary.
    pub bin: PathBuf,
    /// Working directory.
    pub dir: PathBuf,
    /// Arguments after `run` (the harness adds nothing else).
    pub args: Vec<String>,
    /// The gateway address the node will serve on.
    pub http: SocketAddr,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl NodeOptions {
    /// `abi-node run` in `dir` on fresh loopback ports (`--http`, `--listen`, `--data-dir`).
    pub fn fresh(bin: &Path, dir: &Path) -> Self {
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let quic: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        Self {
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
            args: vec![
                "--http".into(),
                http.to_string(),
                "--listen".into(),
                quic.to_string(),
                "--data-dir".into(),
                dir.join("data").display().to_string(),
            ],
            http,
            env: Vec::new(),
        }
    }

    /// Appends arguments.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }
}

impl NodeProcess {
    /// Starts the node and waits (up to `ready_within`) for `/health`.
    pub fn start(opts: NodeOptions, ready_within: Duration) -> Self {
        Self::spawn(opts, "http", &agent(), ready_within)
    }

    /// Starts a node whose gateway serves HTTPS with a certificate issued by
    /// the CA in `ca_pem`; `/health` is polled over HTTPS trusting only that CA.
    pub fn start_https(opts: NodeOptions, ca_pem: &Path, ready_within: Duration) -> Self {
        Self::spawn(opts, "https", &tls_agent(ca_pem), ready_within)
    }

    fn spawn(opts: NodeOptions, scheme: &str, agent: &ureq::Agent, ready_within: Duration) -> Self {
        let log = opts.dir.join(format!("node-{}.log", opts.http.port()));
        let logf = std::fs::File::create(&log).expect("create log file");
        let mut cmd = Command::new(&opts.bin);
        cmd.arg("run")
            .args(&opts.args)
            .current_dir(&opts.dir)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf);
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn abi-node");
        let mut node = Self {
            child: Some(child),
            http: format!("{scheme}://{}", opts.http),
            log,
            dir: opts.dir,
        };
        node.wait_healthy(agent, ready_within);
        node
    }

    fn wait_healthy(&mut self, agent: &ureq::Agent, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = finish(agent.get(&format!("{}/health", self.http)).call())
                && r.status == 200
            {
                return;
            }
            if let Some(status) = self.try_wait() {
                panic!("abi-node exited early ({status}); log:\n{}", self.logs());
            }
            if Instant::now() > deadline {
                panic!(
                    "abi-node not healthy within {within:?}; log:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET {http}{path}`.
    pub fn get(&self, path: &str) -> Reply {
        get(&format!("{}{path}", self.http)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST {http}{path}` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Reply {
        post_json(&format!("{}{path}", self.http), body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// The node's log so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we spawned and still own; no memory is touched.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for the process to exit, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL now.
    pub fn kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            self.kill();
        }
    }
}

/// Polls `f` until it returns `Some`, at most `within`.
pub fn eventually<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}
