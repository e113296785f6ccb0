//! Remote messaging between real QUIC endpoints on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use abi_protocol::ActorPath;
use abi_transport::{PeerEvent, RemoteError, RequestMeta};
use common::*;

fn secs(n: u64) -> Instant {
    Instant::now() + Duration::from_secs(n)
}

#[tokio::test]
async fn ask_round_trip_both_directions_on_one_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let a = bind(&files(dir.path(), "node-a"), "node-a", 11);
    let b = bind(&files(dir.path(), "node-b"), "node-b", 22);
    mesh(&[&a, &b]);
    let mut events = b.subscribe();

    let r = a
        .ask(
            path("node-b", "echo"),
            "test.echo",
            b"hi".to_vec(),
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect("ask a->b");
    assert_eq!(r, b"node-a:test.echo:hi");

    // b answers over the connection a opened: no second connection is dialled.
    let r = b
        .ask(
            path("node-a", "echo"),
            "test.echo",
            b"yo".to_vec(),
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect("ask b->a");
    assert_eq!(r, b"node-b:test.echo:yo");

    let c1 = a
        .raw_connection(&id("node-b"))
        .await
        .expect("conn")
        .stable_id();
    for i in 0..20u8 {
        let r = a
            .ask(
                path("node-b", "mirror"),
                "t",
                vec![i],
                secs(5),
                RequestMeta::default(),
            )
            .await
            .expect("ask");
        assert_eq!(r, vec![i]);
    }
    let c2 = a
        .raw_connection(&id("node-b"))
        .await
        .expect("conn")
        .stable_id();
    assert_eq!(c1, c2, "connection must be reused");
    assert_eq!(a.connected(), vec![(id("node-b"), 22)]);
    assert_eq!(b.connected(), vec![(id("node-a"), 11)]);

    match events.recv().await.expect("event") {
        PeerEvent::Connected {
            node, incarnation, ..
        } => {
            assert_eq!(node, id("node-a"));
            assert_eq!(incarnation, 11);
        }
        other => panic!("unexpected {other:?}"),
    }
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn three_nodes_every_pair_and_remote_contract() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let names = ["n1", "n2", "n3"];
    let ts: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| bind(&files(dir.path(), n), n, i as u64 + 1))
        .collect();
    mesh(&ts.iter().collect::<Vec<_>>());
    for from in &ts {
        for to in names {
            if from.node_id().as_str() == to {
                continue;
            }
            let r = from
                .ask(
                    path(to, "echo"),
                    "test.echo",
                    b"x".to_vec(),
                    secs(5),
                    RequestMeta::default(),
                )
                .await
                .expect("ask");
            assert_eq!(r, format!("{}:test.echo:x", from.node_id()).into_bytes());
        }
    }
    for t in &ts {
        assert_eq!(t.connected().len(), 2, "{:?}", t.connected());
        t.shutdown();
    }
}

#[tokio::test]
async fn typed_errors_cross_the_wire() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    let b = bind(&files(dir.path(), "node-b"), "node-b", 2);
    mesh(&[&a, &b]);

    let e = a
        .ask(
            path("node-b", "nobody"),
            "t",
            vec![],
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect_err("no such actor");
    assert_eq!(e, RemoteError::NoSuchActor("node-b/nobody".into()));

    // Deadline: answered by the caller's own timer, at the deadline, not later.
    let t0 = Instant::now();
    let e = a
        .ask(
            path("node-b", "slow"),
            "t",
            vec![],
            Instant::now() + Duration::from_millis(300),
            RequestMeta::default(),
        )
        .await
        .expect_err("timeout");
    assert!(matches!(e, RemoteError::Timeout { .. }), "{e}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(290) && took < Duration::from_secs(2),
        "{took:?}"
    );

    // A path for another life of node-b is refused before sending.
    let stale = ActorPath::new(id("node-b"), 99, "echo").expect("path");
    let e = a
        .ask(stale, "t", vec![], secs(5), RequestMeta::default())
        .await
        .expect_err("stale");
    assert!(
        matches!(
            e,
            RemoteError::StaleIncarnation {
                wanted: 99,
                current: 2,
                ..
            }
        ),
        "{e}"
    );

    // No address known.
    let e = a
        .ask(
            path("node-z", "echo"),
            "t",
            vec![],
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect_err("unknown");
    assert_eq!(e, RemoteError::UnknownPeer("node-z".into()));

    // The transport's own heartbeat answers with the incarnation.
    assert_eq!(a.ping(&id("node-b"), secs(5)).await.expect("ping"), 2);
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn tell_is_delivered() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let fb = files(dir.path(), "node-b");
    let b = abi_transport::Transport::bind(
        id("node-b"),
        2,
        &fb,
        config(),
        std::sync::Arc::new(move |m: abi_transport::Inbound| {
            let tx = tx.clone();
            let fut: futures::future::BoxFuture<'static, Result<Vec<u8>, RemoteError>> =
                Box::pin(async move {
                    let _ = tx.send((m.to.name.clone(), m.payload, m.want_reply, m.from_node));
                    Ok(Vec::new())
                });
            fut
        }),
    )
    .expect("bind");
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    mesh(&[&a, &b]);
    a.tell(
        path("node-b", "sink"),
        "t",
        b"one".to_vec(),
        RequestMeta::default(),
    )
    .await
    .expect("tell");
    a.tell_queued(
        path("node-b", "sink"),
        "t",
        b"two".to_vec(),
        RequestMeta::default(),
    )
    .expect("tell_queued");
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time")
            .expect("msg");
        got.push(m);
    }
    got.sort();
    assert_eq!(
        got[0],
        ("sink".into(), b"one".to_vec(), false, id("node-a"))
    );
    assert_eq!(
        got[1],
        ("sink".into(), b"two".to_vec(), false, id("node-a"))
    );
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn large_payload_round_trip() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    let b = bind(&files(dir.path(), "node-b"), "node-b", 2);
    mesh(&[&a, &b]);
    let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let r = a
        .ask(
            path("node-b", "mirror"),
            "t",
            big.clone(),
            secs(20),
            RequestMeta::default(),
        )
        .await
        .expect("big ask");
    assert_eq!(r.len(), big.len());
    assert!(r == big);

    // Above the limit (16 MiB here): refused by the receiver, stream closed, node fine.
    let huge = vec![7u8; 17 * 1024 * 1024];
    let e = a
        .ask(
            path("node-b", "mirror"),
            "t",
            huge,
            secs(20),
            RequestMeta::default(),
        )
        .await
        .expect_err("too large");
    assert!(matches!(e, RemoteError::BadFrame(_)), "{e}");
    let r = a
        .ask(
            path("node-b", "mirror"),
            "t",
            b"ok".to_vec(),
            secs(5),
            RequestMeta::default(),
        )
        .await
        .expect("still fine");
    assert_eq!(r, b"ok");
    a.shutdown();
    b.shutdown();
}

#[tokio::test]
async fn in_flight_requests_fail_fast_when_peer_closes() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    let b = bind(&files(dir.path(), "node-b"), "node-b", 2);
    mesh(&[&a, &b]);
    a.ping(&id("node-b"), secs(5)).await.expect("connected");
    let a2 = a.clone();
    let inflight = tokio::spawn(async move {
        let t0 = Instant::now();
        let r = a2
            .ask(
                path("node-b", "slow"),
                "t",
                vec![],
                secs(60),
                RequestMeta::default(),
            )
            .await;
        (r, t0.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.shutdown();
    let (r, took) = inflight.await.expect("join");
    assert!(
        matches!(r, Err(RemoteError::PeerUnreachable { .. })),
        "{r:?}"
    );
    assert!(took < Duration::from_secs(2), "took {took:?}");
    a.shutdown();
}

/// SIGKILL-like death: the peer's runtime vanishes without sending a close.
/// The in-flight request fails after the idle timeout (2 s), not the 60 s deadline.
#[test]
fn in_flight_requests_fail_when_peer_goes_silent() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let fb = files(dir.path(), "node-b");
    let peer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("rt");
    let b = peer_rt.block_on(async { bind(&fb, "node-b", 2) });
    let b_addr = b.local_addr().expect("addr");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
        a.add_peer(id("node-b"), b_addr);
        a.ping(&id("node-b"), secs(5)).await.expect("connected");
        let a2 = a.clone();
        let inflight = tokio::spawn(async move {
            let t0 = Instant::now();
            let r = a2
                .ask(
                    path("node-b", "slow"),
                    "t",
                    vec![],
                    secs(60),
                    RequestMeta::default(),
                )
                .await;
            (r, t0.elapsed())
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Kill the peer's runtime: no CLOSE frame is ever sent.
        peer_rt.shutdown_background();
        let (r, took) = inflight.await.expect("join");
        assert!(
            matches!(r, Err(RemoteError::PeerUnreachable { .. })),
            "{r:?}"
        );
        assert!(took < Duration::from_secs(5), "took {took:?}");
        // While it is down, asks fail fast (dial timeout, then backoff), far before their deadline.
        let t0 = Instant::now();
        let e = a
            .ask(
                path("node-b", "echo"),
                "t",
                vec![],
                secs(60),
                RequestMeta::default(),
            )
            .await
            .expect_err("down");
        assert!(matches!(e, RemoteError::PeerUnreachable { .. }), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(4));
        let t0 = Instant::now();
        let e = a
            .ask(
                path("node-b", "echo"),
                "t",
                vec![],
                secs(60),
                RequestMeta::default(),
            )
            .await
            .expect_err("backoff");
        assert!(e.to_string().contains("backoff"), "{e}");
        assert!(t0.elapsed() < Duration::from_millis(100));
        a.shutdown();
    });
}

#[tokio::test]
async fn restarted_peer_is_reconnected_and_old_life_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let fb = files(dir.path(), "node-b");
    let a = bind(&files(dir.path(), "node-a"), "node-a", 1);
    let b = bind(&fb, "node-b", 2);
    let addr = b.local_addr().expect("addr");
    mesh(&[&a, &b]);
    assert_eq!(a.ping(&id("node-b"), secs(5)).await.expect("ping"), 2);
    b.shutdown();
    drop(b);
    // Let the old endpoint release the port, then restart on the same address.
    let mut cfg = config();
    cfg.listen = addr;
    let t0 = Instant::now();
    let b2 = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "port never released"
        );
        match abi_transport::Transport::bind(
            id("node-b"),
            3,
            &fb,
            cfg.clone(),
            std::sync::Arc::new(handler),
        ) {
            Ok(t) => break t,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // Retries with backoff until the new life answers.
    let t0 = Instant::now();
    let inc = loop {
        match a.ping(&id("node-b"), secs(5)).await {
            Ok(inc) => break inc,
            Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("never reconnected: {e}"),
        }
    };
    assert_eq!(inc, 3);
    let old = ActorPath::new(id("node-b"), 2, "echo").expect("path");
    let e = a
        .ask(old, "t", vec![], secs(5), RequestMeta::default())
        .await
        .expect_err("old life");
    assert!(
        matches!(
            e,
            RemoteError::StaleIncarnation {
                wanted: 2,
                current: 3,
                ..
            }
        ),
        "{e}"
    );
    a.shutdown();
    b2.shutdown();
}
