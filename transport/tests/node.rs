//! Two real runtime `Node`s talking through the transport: `node.ask` on a
//! remote path reaches a ractor actor on the other node (feature `runtime`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use abi_protocol::Request;
use abi_runtime::{AskError, Call, ChildSpec, Node, Started, Strategy, SupervisorSpec};
use abi_transport::Transport;
use abi_transport::remote::node_handler;
use common::*;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Ping(u32);
impl Request for Ping {
    type Reply = u32;
    const TYPE: &'static str = "test.ping";
}

#[derive(Debug, Serialize, Deserialize)]
struct Other;
impl Request for Other {
    type Reply = ();
    const TYPE: &'static str = "test.other";
}

struct Echo;
impl Actor for Echo {
    type Msg = Call<Ping>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        call: Call<Ping>,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let n = call.request().0;
        call.reply(n + 1);
        Ok(())
    }
}

fn start(dir: &std::path::Path, name: &str, inc: u64) -> (Node, Transport) {
    let node = Node::new(id(name), inc);
    let t = Transport::bind(
        id(name),
        inc,
        &files(dir, name),
        config(),
        node_handler(node.clone()),
    )
    .expect("bind");
    assert!(node.set_remote(Arc::new(t.clone())));
    (node, t)
}

#[tokio::test]
async fn node_ask_reaches_an_actor_on_another_node() {
    let dir = tempfile::tempdir().expect("tmp");
    ca(dir.path());
    let (n1, t1) = start(dir.path(), "n1", 1);
    let (n2, t2) = start(dir.path(), "n2", 2);
    mesh(&[&t1, &t2]);
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker(
        "echo",
        |ctx| async move {
            let r = ctx.spawn(Echo, ()).await?;
            Ok(Started::new(r).serves::<Ping>())
        },
    ));
    let root = n2.start_root(spec).await.expect("root");

    let echo = n2.path("echo").expect("path");
    let got = n1
        .ask(&echo, Ping(41), Duration::from_secs(5))
        .await
        .expect("remote ask");
    assert_eq!(got, 42);

    // Typed errors from the remote runtime arrive as themselves.
    let e = n1
        .ask(
            &n2.path("nobody").expect("path"),
            Ping(1),
            Duration::from_secs(5),
        )
        .await
        .expect_err("no such actor");
    assert_eq!(e, AskError::NoSuchActor("n2/nobody".into()));
    let e = n1
        .ask(&echo, Other, Duration::from_secs(5))
        .await
        .expect_err("unsupported");
    assert!(matches!(e, AskError::Unsupported { .. }), "{e}");

    // An unknown node is unreachable, not a hang.
    let e = n1
        .ask(&path("n9", "echo"), Ping(1), Duration::from_secs(5))
        .await
        .expect_err("unknown");
    assert!(matches!(e, AskError::PeerUnreachable { .. }), "{e}");

    // tell through the runtime is delivered: a following ask sees the actor still serving.
    n1.tell(&echo, Ping(0)).expect("tell");
    assert_eq!(
        n1.ask(&echo, Ping(1), Duration::from_secs(5))
            .await
            .expect("ask"),
        2
    );

    root.shutdown(Duration::from_secs(5)).await;
    t1.shutdown();
    t2.shutdown();
}
