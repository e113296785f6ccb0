//! Membership over real QUIC transports in one process, discovery by static seeds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_discovery::static_seeds::StaticSeeds;
use abi_discovery::{
    Cluster, ClusterHandle, MemberInfo, MembershipConfig, MembershipEvent, Status,
};
use abi_protocol::NodeId;
use abi_transport::certs::{self, TlsFiles};
use abi_transport::{Inbound, RemoteError, Transport, TransportConfig};
use futures::future::BoxFuture;

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

fn handler(_m: Inbound) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
    Box::pin(async { Ok(Vec::new()) })
}

fn timing() -> MembershipConfig {
    MembershipConfig {
        heartbeat_interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(400),
        dead_after: Duration::from_millis(1200),
    }
}

fn tls(ca: &Path, node: &str) -> TlsFiles {
    let out = ca.join(format!("tls-{node}"));
    if !out.exists() {
        certs::issue(ca, &id(node), &out).expect("issue");
    }
    TlsFiles::load(&out).expect("load")
}

async fn start(
    ca: &Path,
    node: &str,
    inc: u64,
    listen: SocketAddr,
    seeds: &[SocketAddr],
) -> (Transport, ClusterHandle) {
    let cfg = TransportConfig {
        listen,
        idle_timeout: Duration::from_millis(1000),
        keep_alive: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(500),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..TransportConfig::default()
    };
    let t = loop {
        // A restarted node may find its port still held for a moment.
        match Transport::bind(
            id(node),
            inc,
            &tls(ca, node),
            cfg.clone(),
            Arc::new(handler),
        ) {
            Ok(t) => break t,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let addr = t.local_addr().expect("addr");
    let seeds: Vec<String> = seeds.iter().map(|s| s.to_string()).collect();
    let disc = Arc::new(StaticSeeds::parse(&seeds).expect("seeds"));
    let mut labels = BTreeMap::new();
    labels.insert("zone".to_string(), node.to_string());
    let me = MemberInfo {
        id: id(node),
        addr,
        incarnation: inc,
        labels,
    };
    let h = Cluster::start(t.clone(), disc, me, timing())
        .await
        .expect("cluster");
    (t, h)
}

async fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

fn statuses(h: &ClusterHandle) -> Vec<(String, Status, u64)> {
    h.nodes()
        .into_iter()
        .map(|v| (v.id.to_string(), v.status, v.incarnation))
        .collect()
}

#[tokio::test]
async fn unroutable_announce_address_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    certs::init_ca(dir.path()).expect("ca");
    let t = Transport::bind(
        id("a"),
        1,
        &tls(dir.path(), "a"),
        TransportConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..TransportConfig::default()
        },
        Arc::new(handler),
    )
    .expect("bind");
    let me = MemberInfo {
        id: id("a"),
        addr: SocketAddr::from(([0, 0, 0, 0], 7700)),
        incarnation: 1,
        labels: BTreeMap::new(),
    };
    let disc = Arc::new(StaticSeeds::parse::<&str>(&[]).expect("seeds"));
    let e = Cluster::start(t.clone(), disc, me, timing())
        .await
        .expect_err("0.0.0.0 is not an address peers can dial");
    assert!(e.to_string().contains("advertise"), "{e}");
    t.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_seeds_form_a_cluster_detect_death_and_rejoin() {
    let dir = tempfile::tempdir().expect("tmp");
    certs::init_ca(dir.path()).expect("ca");
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let (ta, a) = start(dir.path(), "a", 1, any, &[]).await;
    let a_addr = ta.local_addr().expect("addr");
    // b and c know only a; they must learn about each other through gossip.
    let (tb, b) = start(dir.path(), "b", 1, any, &[a_addr]).await;
    let (tc, c) = start(dir.path(), "c", 1, any, &[a_addr]).await;
    let c_addr = tc.local_addr().expect("addr");
    let mut a_events = a.subscribe();

    let all_alive = |h: &ClusterHandle| {
        let s = statuses(h);
        s.len() == 3 && s.iter().all(|(_, st, _)| *st == Status::Alive)
    };
    let took = wait_for("full mesh", Duration::from_secs(10), || {
        all_alive(&a) && all_alive(&b) && all_alive(&c)
    })
    .await;
    eprintln!("cluster formed in {took:?}");
    // Labels travel with gossip (b may first learn c's bare address from a, then its record).
    wait_for(
        "c's record, labels included, on b",
        Duration::from_secs(5),
        || {
            b.nodes().iter().any(|v| {
                v.id == id("c")
                    && v.labels.get("zone").map(String::as_str) == Some("c")
                    && v.addr == c_addr.to_string()
            })
        },
    )
    .await;

    // c dies abruptly: no leave, heartbeats stop.
    drop(c);
    tc.shutdown();
    drop(tc);
    let t0 = Instant::now();
    wait_for("c dead on a and b", Duration::from_secs(5), || {
        a.status(&id("c")) == Some(Status::Dead) && b.status(&id("c")) == Some(Status::Dead)
    })
    .await;
    let took = t0.elapsed();
    eprintln!("c declared dead after {took:?} (dead_after 1.2 s)");
    assert!(took >= Duration::from_millis(700), "too early: {took:?}");
    assert!(took < Duration::from_secs(3), "too late: {took:?}");
    let mut seen = Vec::new();
    while let Ok(e) = a_events.try_recv() {
        seen.push(e);
    }
    assert!(
        seen.contains(&MembershipEvent::Suspect(id("c"))),
        "{seen:?}"
    );
    assert!(seen.contains(&MembershipEvent::Dead(id("c"))), "{seen:?}");
    assert!(a.status(&id("b")) == Some(Status::Alive));

    // c restarts (new incarnation, same address, same seeds): it rejoins everywhere.
    let (tc2, c2) = start(dir.path(), "c", 2, c_addr, &[a_addr]).await;
    wait_for("c rejoined", Duration::from_secs(10), || {
        [&a, &b, &c2].iter().all(|h| all_alive(h))
            && statuses(&a).contains(&("c".into(), Status::Alive, 2))
            && statuses(&b).contains(&("c".into(), Status::Alive, 2))
    })
    .await;

    for (t, h) in [(ta, a), (tb, b), (tc2, c2)] {
        h.leave().await.expect("leave");
        t.shutdown();
    }
}
