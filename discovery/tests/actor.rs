//! The membership actor under real runtime nodes: `membership.list_nodes`
//! answered locally and across the transport (what `GET /v1/cluster/nodes` asks).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_discovery::static_seeds::StaticSeeds;
use abi_discovery::{MemberInfo, MembershipArgs, MembershipConfig, MembershipEvent, child_spec};
use abi_protocol::NodeId;
use abi_protocol::membership::{ListNodes, NodeStatus};
use abi_runtime::{Node, RootHandle, Strategy, SupervisorSpec};
use abi_transport::certs::{self, TlsFiles};
use abi_transport::remote::node_handler;
use abi_transport::{Transport, TransportConfig};
use tokio::sync::broadcast;

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("id")
}

async fn start(
    ca: &std::path::Path,
    name: &str,
    seeds: &[SocketAddr],
) -> (
    Node,
    Transport,
    RootHandle,
    broadcast::Receiver<MembershipEvent>,
) {
    let out = ca.join(name);
    certs::issue(ca, &id(name), &out).expect("issue");
    let node = Node::new(id(name), 1);
    let cfg = TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..TransportConfig::default()
    };
    let t = Transport::bind(
        id(name),
        1,
        &TlsFiles::load(&out).expect("tls"),
        cfg,
        node_handler(node.clone()),
    )
    .expect("bind");
    node.set_remote(Arc::new(t.clone()));
    let seeds: Vec<String> = seeds.iter().map(ToString::to_string).collect();
    let (events, rx) = broadcast::channel(64);
    let args = MembershipArgs {
        transport: t.clone(),
        discovery: Arc::new(StaticSeeds::parse(&seeds).expect("seeds")),
        me: MemberInfo {
            id: id(name),
            addr: t.local_addr().expect("addr"),
            incarnation: 1,
            labels: BTreeMap::new(),
        },
        timing: MembershipConfig {
            heartbeat_interval: Duration::from_millis(100),
            suspect_after: Duration::from_millis(500),
            dead_after: Duration::from_millis(1500),
        },
        events,
    };
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(child_spec(args)))
        .await
        .expect("root");
    (node, t, root, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_nodes_locally_and_remotely() {
    let dir = tempfile::tempdir().expect("tmp");
    certs::init_ca(dir.path()).expect("ca");
    let (n1, t1, r1, _) = start(dir.path(), "m1", &[]).await;
    let (n2, t2, r2, mut ev2) = start(dir.path(), "m2", &[t1.local_addr().expect("addr")]).await;

    let t0 = Instant::now();
    loop {
        // m2 asks m1's membership actor over QUIC (m1's address is learnt
        // from the seed, so the first asks may find it unknown).
        let remote = n2
            .ask(
                &n1.path("membership").expect("path"),
                ListNodes,
                Duration::from_secs(2),
            )
            .await;
        let local = n2
            .ask(
                &n2.path("membership").expect("path"),
                ListNodes,
                Duration::from_secs(2),
            )
            .await
            .expect("local list");
        let ok = |v: &Vec<abi_protocol::membership::NodeView>| {
            v.len() == 2 && v.iter().all(|n| n.status == NodeStatus::Alive)
        };
        if let Ok(remote) = &remote
            && ok(remote)
            && ok(&local)
        {
            assert_eq!(remote[0].id, id("m1"), "answering node first");
            assert_eq!(local[0].id, id("m2"));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{remote:?} {local:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined = ev2.recv().await.expect("event");
    assert!(
        matches!(joined, MembershipEvent::Joined(ref m) if m.id == id("m1")),
        "{joined:?}"
    );

    r2.shutdown(Duration::from_secs(5)).await;
    r1.shutdown(Duration::from_secs(5)).await;
    t1.shutdown();
    t2.shutdown();
}
