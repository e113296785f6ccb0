//! A three-member group in one process: the members' `Node`s reach each other through
//! an in-process router standing in for the QUIC transport (the real transport is
//! covered by the multi-process tests in `abi-node`). Checks election, proposals from
//! any member, linearizable reads, persistence across a restart, snapshots and
//! membership changes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::raft::{
    ChangeMembership, GetStatus, MembershipChange, MetaCommand, Propose, RaftStatus, ReadMeta,
};
use abi_protocol::{ActorPath, NodeId};
use abi_raft::{LearnAddr, Member, RaftConfig};
use abi_runtime::{AskError, Node, Remote, RootHandle, Strategy, SupervisorSpec};
use futures::future::BoxFuture;
use parking_lot::Mutex;

/// Routes asks between in-process nodes; a missing entry is an unreachable node.
#[derive(Default, Clone)]
struct Router(Arc<Mutex<HashMap<NodeId, Node>>>);

impl Remote for Router {
    fn ask_raw(
        &self,
        to: ActorPath,
        type_name: &'static str,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> BoxFuture<'static, Result<Vec<u8>, AskError>> {
        let target = self.0.lock().get(&to.node).cloned();
        match target {
            Some(n) => n.deliver_raw(&to, type_name, &payload, deadline, true),
            None => Box::pin(async move {
                Err(AskError::PeerUnreachable {
                    node: to.node.to_string(),
                    reason: "not running".into(),
                })
            }),
        }
    }

    fn tell_raw(&self, to: ActorPath, _: &'static str, _: Vec<u8>) -> Result<(), AskError> {
        Err(AskError::PeerUnreachable {
            node: to.node.to_string(),
            reason: "tell unused".into(),
        })
    }
}

struct Member_ {
    node: Node,
    root: RootHandle,
}

fn member(name: &str) -> Member {
    Member {
        name: name.into(),
        addr: "127.0.0.1:1".into(),
    }
}

async fn start(
    router: &Router,
    dir: &std::path::Path,
    name: &str,
    bootstrap: &[&str],
    snapshot_every: u64,
) -> Member_ {
    let id = NodeId::new(name).expect("id");
    let node = Node::new(id.clone(), 1);
    node.set_remote(Arc::new(router.clone()));
    let learn: LearnAddr = Arc::new(|_, _| {});
    let cfg = RaftConfig {
        dir: dir.join(name),
        me: member(name),
        bootstrap: bootstrap.iter().map(|n| member(n)).collect(),
        election_timeout_ms: 300,
        heartbeat_ms: 50,
        snapshot_every,
        learn,
        statuses: None,
    };
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(abi_raft::child_spec(cfg)))
        .await
        .expect("start");
    router.0.lock().insert(id, node.clone());
    Member_ { node, root }
}

fn raft_path(name: &str) -> ActorPath {
    ActorPath::new(NodeId::new(name).expect("id"), 0, "raft").expect("path")
}

async fn status(node: &Node, name: &str) -> RaftStatus {
    node.ask(&raft_path(name), GetStatus, Duration::from_secs(2))
        .await
        .expect("ask")
        .expect("status")
}

async fn wait_leader(node: &Node, name: &str) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(node, name).await;
        if let Some(l) = s.leader {
            return l;
        }
        assert!(Instant::now() < until, "no leader: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn put(key: &str, value: &str) -> Propose {
    Propose::new(MetaCommand::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
    })
}

/// Proposes through `on`, retrying while the group has no leader (an election under way),
/// as a client of the group does.
async fn propose(node: &Node, on: &str, p: Propose) -> abi_protocol::raft::Applied {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let r = node
            .ask(&raft_path(on), p.clone(), Duration::from_secs(5))
            .await
            .expect("ask");
        match r {
            Err(abi_protocol::raft::RaftFailure::NoLeader) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r.expect("applied"),
        }
    }
}

async fn read(node: &Node, on: &str) -> abi_protocol::raft::ClusterMeta {
    node.ask(
        &raft_path(on),
        ReadMeta { linearizable: true },
        Duration::from_secs(5),
    )
    .await
    .expect("ask")
    .expect("read")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_elects_replicates_survives_restart_and_changes_membership() {
    let dir = tempfile::tempdir().expect("tmp");
    let router = Router::default();
    let voters = ["a", "b", "c"];
    let mut members = Vec::new();
    for n in voters {
        members.push(start(&router, dir.path(), n, &voters, 20).await);
    }
    let leader = wait_leader(&members[0].node, "a").await;
    let follower = voters
        .iter()
        .find(|n| **n != leader)
        .copied()
        .expect("follower");

    // A proposal made on a follower is forwarded to the leader.
    let applied = propose(&members[0].node, follower, put("k0", "v0")).await;
    assert_eq!(applied.leader, leader);
    for i in 1..50 {
        let on = voters[i % 3];
        propose(
            &members[0].node,
            on,
            put(&format!("k{i}"), &format!("v{i}")),
        )
        .await;
    }
    // Every member reads every acknowledged write (linearizable reads go to the leader).
    for n in voters {
        let meta = read(&members[0].node, n).await;
        assert_eq!(meta.kv.len(), 50, "on {n}");
        assert_eq!(meta.kv["k49"], b"v49");
    }
    // 50 entries with snapshot_every = 20: snapshots were built and the log compacted.
    let s = status(&members[0].node, &leader).await;
    assert!(s.snapshot_index.is_some(), "{s:?}");
    assert!(s.purged_index.is_some(), "{s:?}");

    // Stop the leader: the others elect a new one and keep accepting writes.
    let li = voters.iter().position(|n| *n == leader).expect("idx");
    let old = members.remove(li);
    router
        .0
        .lock()
        .remove(&NodeId::new(leader.clone()).expect("id"));
    let _ = old.root.shutdown(Duration::from_secs(2)).await;
    let alive: Vec<&str> = voters.iter().copied().filter(|n| *n != leader).collect();
    let t = Instant::now();
    let applied = propose(&members[0].node, alive[0], put("after", "failover")).await;
    assert_ne!(applied.leader, leader);
    eprintln!("writes resumed {:?} after the leader stopped", t.elapsed());

    // The old leader restarts from its data dir and catches up (log tail or snapshot).
    let back = start(&router, dir.path(), &leader, &voters, 20).await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let m = back
            .node
            .ask(
                &raft_path(&leader),
                ReadMeta {
                    linearizable: false,
                },
                Duration::from_secs(2),
            )
            .await
            .expect("ask")
            .expect("read");
        if m.kv.get("after").map(Vec::as_slice) == Some(b"failover".as_slice()) {
            assert_eq!(m.kv.len(), 51);
            break;
        }
        assert!(Instant::now() < until, "restarted member did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    members.push(back);

    // Membership: add d as learner, promote it, remove an old voter.
    let d = start(&router, dir.path(), "d", &[], 20).await;
    let any = &members[0].node;
    let change = |c| ChangeMembership {
        change: c,
        forwards: 0,
    };
    let s = any
        .ask(
            &raft_path(alive[0]),
            change(MembershipChange::AddLearner {
                node: "d".into(),
                addr: "127.0.0.1:1".into(),
            }),
            Duration::from_secs(10),
        )
        .await
        .expect("ask")
        .expect("add learner");
    assert!(s.learners.contains(&"d".to_string()), "{s:?}");
    let s = any
        .ask(
            &raft_path(alive[1]),
            change(MembershipChange::Promote {
                nodes: vec!["d".into()],
            }),
            Duration::from_secs(10),
        )
        .await
        .expect("ask")
        .expect("promote");
    assert!(s.voters.contains(&"d".to_string()), "{s:?}");
    let removed = alive[0];
    let s = any
        .ask(
            &raft_path(alive[1]),
            change(MembershipChange::Remove {
                nodes: vec![removed.into()],
            }),
            Duration::from_secs(10),
        )
        .await
        .expect("ask")
        .expect("remove");
    assert!(!s.voters.contains(&removed.to_string()), "{s:?}");
    assert_eq!(s.voters.len(), 3, "{s:?}");
    // Unknown members are refused with a clear error.
    let err = any
        .ask(
            &raft_path(alive[1]),
            change(MembershipChange::Promote {
                nodes: vec!["nope".into()],
            }),
            Duration::from_secs(10),
        )
        .await
        .expect("ask")
        .expect_err("unknown node");
    assert!(err.to_string().contains("nope"), "{err}");
    // The group still serves writes, and the new voter has all the data.
    propose(any, "d", put("last", "x")).await;
    let m = read(&d.node, "d").await;
    assert_eq!(m.kv.len(), 52);
}
