//! The etcd backend against a real etcd server (Debian's `etcd-server`),
//! started by the test on free loopback ports and killed afterwards.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_discovery::etcd::{EtcdConfig, EtcdDiscovery};
use abi_discovery::{Cluster, Discovery, DiscoveryEvent, MemberInfo, MembershipConfig, Status};
use abi_protocol::NodeId;
use abi_transport::certs::{self, TlsFiles};
use abi_transport::{Inbound, RemoteError, Transport, TransportConfig};
use futures::StreamExt;
use futures::future::BoxFuture;

/// A throw-away etcd; killed (by its own pid) when dropped.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Etcd {
    async fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tmp");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "abi-test", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("abi-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "cannot start `etcd`: install Debian's etcd-server (apt-get install etcd-server)",
            );
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let t0 = Instant::now();
        loop {
            let probe = EtcdDiscovery::connect(etcd.cfg("/probe", 5)).await;
            if probe.is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "etcd did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        etcd
    }

    fn cfg(&self, prefix: &str, ttl_s: u64) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.url.clone()],
            prefix: prefix.to_string(),
            ttl: Duration::from_secs(ttl_s),
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn member(node: &str, port: u16) -> MemberInfo {
    MemberInfo {
        id: id(node),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        incarnation: 7,
        labels: BTreeMap::from([("role".to_string(), "test".to_string())]),
    }
}

async fn next_event(
    w: &mut futures::stream::BoxStream<
        'static,
        Result<DiscoveryEvent, abi_discovery::DiscoveryError>,
    >,
    within: Duration,
) -> DiscoveryEvent {
    tokio::time::timeout(within, w.next())
        .await
        .expect("event in time")
        .expect("stream open")
        .expect("event ok")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_keep_alive_watch_expire_and_leave() {
    let etcd = Etcd::start().await;
    let d = EtcdDiscovery::connect(etcd.cfg("/abi/test/nodes", 2))
        .await
        .expect("connect");
    let mut watch = d.watch().await.expect("watch");

    let reg_a = d.register(member("a", 7001)).await.expect("register a");
    assert_eq!(
        next_event(&mut watch, Duration::from_secs(5)).await,
        DiscoveryEvent::Up(member("a", 7001))
    );
    let reg_b = d.register(member("b", 7002)).await.expect("register b");
    assert_eq!(
        next_event(&mut watch, Duration::from_secs(5)).await,
        DiscoveryEvent::Up(member("b", 7002))
    );

    // Keep-alive: after more than one TTL both records are still there.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut seeds: Vec<_> = d
        .seeds()
        .await
        .expect("seeds")
        .into_iter()
        .map(|s| s.member.expect("etcd seeds carry records").id.to_string())
        .collect();
    seeds.sort();
    assert_eq!(seeds, vec!["a", "b"]);

    // b dies (keep-alive stops without a leave): its key expires with the lease.
    let t0 = Instant::now();
    drop(reg_b);
    assert_eq!(
        next_event(&mut watch, Duration::from_secs(10)).await,
        DiscoveryEvent::Down(id("b"))
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(6), "expired after {took:?}");

    // a leaves: removed at once.
    let t0 = Instant::now();
    reg_a.deregister().await.expect("deregister");
    assert_eq!(
        next_event(&mut watch, Duration::from_secs(5)).await,
        DiscoveryEvent::Down(id("a"))
    );
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(d.seeds().await.expect("seeds").is_empty());
}

fn handler(_m: Inbound) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
    Box::pin(async { Ok(Vec::new()) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_a_cluster_through_etcd() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    certs::init_ca(dir.path()).expect("ca");
    let timing = MembershipConfig {
        heartbeat_interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(500),
        dead_after: Duration::from_millis(1500),
    };
    let mut nodes = Vec::new();
    for name in ["e1", "e2", "e3"] {
        let out = dir.path().join(name);
        certs::issue(dir.path(), &id(name), &out).expect("issue");
        let files = TlsFiles::load(&out).expect("load");
        let cfg = TransportConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..TransportConfig::default()
        };
        let t = Transport::bind(id(name), 1, &files, cfg, Arc::new(handler)).expect("bind");
        let disc = Arc::new(
            EtcdDiscovery::connect(etcd.cfg("/abi/etcd-cluster/nodes", 3))
                .await
                .expect("etcd"),
        );
        let me = MemberInfo {
            id: id(name),
            addr: t.local_addr().expect("addr"),
            incarnation: 1,
            labels: BTreeMap::new(),
        };
        let h = Cluster::start(t.clone(), disc, me, timing)
            .await
            .expect("cluster");
        nodes.push((t, h));
    }
    let t0 = Instant::now();
    loop {
        let done = nodes.iter().all(|(_, h)| {
            let v = h.nodes();
            v.len() == 3 && v.iter().all(|n| n.status == Status::Alive)
        });
        if done {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "cluster did not form"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // e3 leaves gracefully: the others see `left`, not `dead`.
    let (t3, h3) = nodes.pop().expect("e3");
    h3.leave().await.expect("leave");
    t3.shutdown();
    let t0 = Instant::now();
    while !nodes
        .iter()
        .all(|(_, h)| h.status(&id("e3")) == Some(Status::Left))
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "leave not seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (t, h) in nodes {
        h.leave().await.expect("leave");
        t.shutdown();
    }
}
