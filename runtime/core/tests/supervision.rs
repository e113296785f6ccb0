//! Supervision behaviour with real ractor actors: strategies, restart types,
//! intensity escalation, backoff, ordered start and reverse-order shutdown,
//! and the messaging error kinds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use abi_protocol::supervision::{ChildState, GetTree, KillChild, RestartChild};
use abi_protocol::{ActorPath, NodeId, Request};
use abi_runtime::supervisor::RootExit;
use abi_runtime::{
    AskError, Backoff, Call, ChildSpec, Node, Restart, Started, Strategy, SupervisorSpec,
};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

/// Which life of the actor answered.
#[derive(Serialize, Deserialize)]
struct Gen;
impl Request for Gen {
    type Reply = u64;
    const TYPE: &'static str = "test.gen";
}

/// Panics in the handler.
#[derive(Serialize, Deserialize)]
struct Crash;
impl Request for Crash {
    type Reply = ();
    const TYPE: &'static str = "test.crash";
}

/// Stops the actor normally.
#[derive(Serialize, Deserialize)]
struct Quit;
impl Request for Quit {
    type Reply = ();
    const TYPE: &'static str = "test.quit";
}

/// Never replies (drops the call).
#[derive(Serialize, Deserialize)]
struct Ignore;
impl Request for Ignore {
    type Reply = ();
    const TYPE: &'static str = "test.ignore";
}

/// Sleeps without replying.
#[derive(Serialize, Deserialize)]
struct Slow;
impl Request for Slow {
    type Reply = ();
    const TYPE: &'static str = "test.slow";
}

enum Msg {
    Gen(Call<Gen>),
    Crash(Call<Crash>),
    Quit(Call<Quit>),
    Ignore(Call<Ignore>),
    Slow(Call<Slow>),
}
impl From<Call<Gen>> for Msg {
    fn from(c: Call<Gen>) -> Self {
        Msg::Gen(c)
    }
}
impl From<Call<Crash>> for Msg {
    fn from(c: Call<Crash>) -> Self {
        Msg::Crash(c)
    }
}
impl From<Call<Quit>> for Msg {
    fn from(c: Call<Quit>) -> Self {
        Msg::Quit(c)
    }
}
impl From<Call<Ignore>> for Msg {
    fn from(c: Call<Ignore>) -> Self {
        Msg::Ignore(c)
    }
}
impl From<Call<Slow>> for Msg {
    fn from(c: Call<Slow>) -> Self {
        Msg::Slow(c)
    }
}

/// Shared journal of starts and stops, to check ordering.
type Journal = Arc<Mutex<Vec<String>>>;

struct Probe {
    name: String,
    journal: Journal,
    stop_delay: Duration,
}

impl Actor for Probe {
    type Msg = Msg;
    type State = u64;
    type Arguments = u64;

    async fn pre_start(
        &self,
        _: ActorRef<Msg>,
        generation: u64,
    ) -> Result<u64, ActorProcessingErr> {
        self.journal.lock().push(format!("start {}", self.name));
        Ok(generation)
    }

    async fn post_stop(&self, _: ActorRef<Msg>, _: &mut u64) -> Result<(), ActorProcessingErr> {
        if !self.stop_delay.is_zero() {
            tokio::time::sleep(self.stop_delay).await;
        }
        self.journal.lock().push(format!("stop {}", self.name));
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<Msg>,
        msg: Msg,
        generation: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Gen(c) => c.reply(*generation),
            Msg::Crash(c) => {
                drop(c);
                panic!("crash requested")
            }
            Msg::Quit(c) => {
                c.reply(());
                me.stop(None);
            }
            Msg::Ignore(c) => drop(c),
            Msg::Slow(c) => {
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(c);
            }
        }
        Ok(())
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

fn probe(name: &str, journal: &Journal) -> ChildSpec {
    probe_with_stop(name, journal, Duration::ZERO)
}

fn probe_with_stop(name: &str, journal: &Journal, stop_delay: Duration) -> ChildSpec {
    let name_owned = name.to_string();
    let journal = journal.clone();
    ChildSpec::worker(name, move |ctx| {
        let actor = Probe {
            name: name_owned.clone(),
            journal: journal.clone(),
            stop_delay,
        };
        async move {
            let r = ctx
                .spawn(actor, GENERATION.fetch_add(1, Ordering::SeqCst))
                .await?;
            Ok(Started::new(r)
                .serves::<Gen>()
                .serves::<Crash>()
                .serves::<Quit>()
                .serves::<Ignore>()
                .serves::<Slow>())
        }
    })
}

fn node() -> Node {
    Node::new(NodeId::new("t").expect("id"), 1)
}

const T: Duration = Duration::from_secs(2);

/// `Gen` delivered as a transport would (postcard payload through `deliver_raw`).
async fn gen_over_wire(node: &Node, to: &ActorPath) -> u64 {
    let bytes = node
        .deliver_raw(
            to,
            Gen::TYPE,
            &postcard::to_stdvec(&Gen).expect("enc"),
            Instant::now() + T,
            true,
        )
        .await
        .expect("deliver");
    postcard::from_bytes(&bytes).expect("dec")
}

async fn generation(node: &Node, name: &str) -> u64 {
    let path = node.path(name).expect("path");
    // Restarts are asynchronous: wait until the actor answers again.
    let deadline = Instant::now() + T;
    loop {
        match node.ask(&path, Gen, T).await {
            Ok(g) => return g,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{name} never answered: {e}"),
        }
    }
}

async fn generations(node: &Node, names: &[&str]) -> Vec<u64> {
    let mut v = Vec::new();
    for n in names {
        v.push(generation(node, n).await);
    }
    v
}

async fn crash(node: &Node, name: &str) {
    let path = node.path(name).expect("path");
    let err = node
        .ask(&path, Crash, T)
        .await
        .expect_err("crash never replies");
    assert_eq!(err, AskError::ActorStopped(path.to_string()));
}

async fn restarted_after_crash(strategy: Strategy) -> Vec<bool> {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(strategy)
        .child(probe("a", &j))
        .child(probe("b", &j))
        .child(probe("c", &j));
    let root = node.start_root(spec).await.expect("root");
    let before = generations(&node, &["a", "b", "c"]).await;
    crash(&node, "b").await;
    // Let the supervisor act, then compare lives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = generations(&node, &["a", "b", "c"]).await;
    root.shutdown(T).await;
    before.iter().zip(&after).map(|(x, y)| x != y).collect()
}

#[tokio::test]
async fn one_for_one_restarts_only_the_crashed_child() {
    assert_eq!(
        restarted_after_crash(Strategy::OneForOne).await,
        [false, true, false]
    );
}

#[tokio::test]
async fn one_for_all_restarts_every_child() {
    assert_eq!(
        restarted_after_crash(Strategy::OneForAll).await,
        [true, true, true]
    );
}

#[tokio::test]
async fn rest_for_one_restarts_the_child_and_later_siblings() {
    assert_eq!(
        restarted_after_crash(Strategy::RestForOne).await,
        [false, true, true]
    );
}

#[tokio::test]
async fn restart_counts_and_failure_reason_are_visible_in_the_tree() {
    let node = node();
    let j = Journal::default();
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(probe("a", &j)))
        .await
        .expect("root");
    crash(&node, "a").await;
    generation(&node, "a").await;
    let tree = node.ask(&node.root_path(), GetTree, T).await.expect("tree");
    let a = tree.find("t/a").expect("a in tree");
    assert_eq!(a.restarts, 1);
    assert_eq!(a.state, ChildState::Running);
    let failure = a.last_failure.as_ref().expect("failure recorded");
    assert!(
        failure.reason.contains("crash requested"),
        "{}",
        failure.reason
    );
    assert_eq!(tree.strategy.as_deref(), Some("one_for_one"));
    root.shutdown(T).await;
}

#[tokio::test]
async fn transient_child_exiting_normally_is_not_restarted_but_crash_is() {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("t1", &j).restart(Restart::Transient))
        .child(probe("t2", &j).restart(Restart::Transient));
    let root = node.start_root(spec).await.expect("root");
    node.ask(&node.path("t1").expect("p"), Quit, T)
        .await
        .expect("quit");
    crash(&node, "t2").await;
    generation(&node, "t2").await; // t2 comes back
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tree = root.supervisor().tree();
    let t1 = tree.find("t/t1").expect("t1");
    assert_eq!(t1.state, ChildState::Stopped);
    assert_eq!(t1.restarts, 0);
    assert_eq!(tree.find("t/t2").expect("t2").restarts, 1);
    let err = node
        .ask(&node.path("t1").expect("p"), Gen, T)
        .await
        .expect_err("t1 gone");
    assert_eq!(err, AskError::NoSuchActor("t/t1".into()));
    root.shutdown(T).await;
}

#[tokio::test]
async fn temporary_child_is_never_restarted() {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("tmp", &j).restart(Restart::Temporary));
    let root = node.start_root(spec).await.expect("root");
    crash(&node, "tmp").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let tree = root.supervisor().tree();
    let tmp = tree.find("t/tmp").expect("tmp");
    assert_eq!(tmp.state, ChildState::Failed);
    assert_eq!(tmp.restarts, 0);
    root.shutdown(T).await;
}

#[tokio::test]
async fn intensity_exceeded_escalates_to_the_parent() {
    let node = node();
    let j = Journal::default();
    let inner = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(2, Duration::from_secs(10))
        .child(probe("w", &j));
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(5, Duration::from_secs(10))
        .child(ChildSpec::supervisor("inner", inner));
    let root = node.start_root(spec).await.expect("root");
    // Two restarts are tolerated by `inner`; the third crash escalates.
    for _ in 0..3 {
        generation(&node, "inner/w").await;
        crash(&node, "inner/w").await;
    }
    // The parent restarted `inner`, which started `w` afresh.
    generation(&node, "inner/w").await;
    let tree = root.supervisor().tree();
    let inner = tree.find("t/inner").expect("inner");
    assert_eq!(inner.restarts, 1, "{tree:#?}");
    assert!(
        inner
            .last_failure
            .as_ref()
            .expect("escalation recorded")
            .reason
            .contains("restart intensity exceeded")
    );
    assert_eq!(
        inner.find("t/inner/w").expect("w").restarts,
        0,
        "fresh supervisor"
    );
    assert!(
        node.events()
            .snapshot()
            .iter()
            .any(|e| e.kind == abi_runtime::events::EventKind::Escalated)
    );
    root.shutdown(T).await;
}

#[tokio::test]
async fn root_escalation_ends_the_root_with_a_reason() {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(1, Duration::from_secs(10))
        .child(probe("w", &j));
    let root = node.start_root(spec).await.expect("root");
    crash(&node, "w").await;
    generation(&node, "w").await;
    crash(&node, "w").await;
    match tokio::time::timeout(T, root.wait())
        .await
        .expect("root ends")
    {
        RootExit::Failed(reason) => {
            assert!(reason.contains("restart intensity exceeded"), "{reason}")
        }
        RootExit::Stopped => panic!("root should have failed"),
    }
}

#[tokio::test]
async fn children_start_in_order_and_stop_in_reverse() {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("a", &j))
        .child(ChildSpec::supervisor(
            "s",
            SupervisorSpec::new(Strategy::OneForOne)
                .child(probe("s1", &j))
                .child(probe("s2", &j)),
        ))
        .child(probe("c", &j));
    let root = node.start_root(spec).await.expect("root");
    assert_eq!(root.shutdown(T).await, RootExit::Stopped);
    let journal = j.lock().clone();
    assert_eq!(
        journal,
        [
            "start a", "start s1", "start s2", "start c", "stop c", "stop s2", "stop s1", "stop a"
        ]
    );
}

#[tokio::test]
async fn a_child_that_overstays_its_shutdown_timeout_is_killed() {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .child(probe("quick", &j))
        .child(
            probe_with_stop("stuck", &j, Duration::from_secs(30))
                .shutdown(Duration::from_millis(100)),
        );
    let root = node.start_root(spec).await.expect("root");
    let t0 = Instant::now();
    assert_eq!(
        root.shutdown(Duration::from_secs(10)).await,
        RootExit::Stopped
    );
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
    let journal = j.lock().clone();
    assert!(
        !journal.contains(&"stop stuck".to_string()),
        "killed, not finished: {journal:?}"
    );
    assert!(journal.contains(&"stop quick".to_string()));
}

#[tokio::test]
async fn quick_repeated_failures_back_off() {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne)
        .intensity(100, Duration::from_secs(10))
        .backoff(Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(1),
            jitter: 0.0,
            reset_after: Duration::from_secs(30),
        })
        .child(probe("w", &j));
    let root = node.start_root(spec).await.expect("root");
    crash(&node, "w").await; // first: immediate
    let t0 = Instant::now();
    generation(&node, "w").await;
    assert!(
        t0.elapsed() < Duration::from_millis(150),
        "{:?}",
        t0.elapsed()
    );
    crash(&node, "w").await; // second in a row: 200 ms
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        root.supervisor().tree().find("t/w").expect("w").state,
        ChildState::Restarting
    );
    generation(&node, "w").await;
    let waited = t1.elapsed();
    assert!(waited >= Duration::from_millis(190), "{waited:?}");
    root.shutdown(T).await;
}

#[tokio::test]
async fn operator_restart_and_kill_go_through_the_supervisor() {
    let node = node();
    let j = Journal::default();
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(probe("a", &j)))
        .await
        .expect("root");
    let g0 = generation(&node, "a").await;
    node.ask(&node.root_path(), RestartChild { name: "a".into() }, T)
        .await
        .expect("ask")
        .expect("restart");
    let g1 = generation(&node, "a").await;
    assert_ne!(g0, g1);
    node.ask(&node.root_path(), KillChild { name: "a".into() }, T)
        .await
        .expect("ask")
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let g2 = generation(&node, "a").await;
    assert_ne!(g1, g2);
    let a = root.supervisor().tree().find("t/a").expect("a").clone();
    assert_eq!(a.restarts, 2);
    assert_eq!(a.last_failure.expect("kill is a failure").reason, "killed");
    let missing = node
        .ask(&node.root_path(), RestartChild { name: "zzz".into() }, T)
        .await
        .expect("ask");
    assert!(missing.is_err());
    root.shutdown(T).await;
}

#[tokio::test]
async fn dynamic_children_can_be_added_and_removed() {
    let node = node();
    let j = Journal::default();
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::supervisor(
        "dyn",
        SupervisorSpec::new(Strategy::OneForOne),
    ));
    let root = node.start_root(spec).await.expect("root");
    let sup = node
        .supervisor(&node.path("dyn").expect("p"))
        .expect("registered");
    sup.start_child(probe("x", &j)).await.expect("start x");
    assert!(
        sup.start_child(probe("x", &j)).await.is_err(),
        "duplicate refused"
    );
    generation(&node, "dyn/x").await;
    sup.terminate_child("x").await.expect("terminate");
    let err = node
        .ask(&node.path("dyn/x").expect("p"), Gen, T)
        .await
        .expect_err("gone");
    assert!(matches!(err, AskError::NoSuchActor(_)));
    assert!(sup.child_names().is_empty());
    root.shutdown(T).await;
}

#[tokio::test]
async fn ask_errors_are_distinct() {
    let node = node();
    let j = Journal::default();
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(probe("a", &j)))
        .await
        .expect("root");
    let a = node.path("a").expect("p");
    assert_eq!(
        node.ask(&node.path("nope").expect("p"), Gen, T).await,
        Err(AskError::NoSuchActor("t/nope".into()))
    );
    assert_eq!(
        node.ask(&a, Ignore, T).await,
        Err(AskError::ActorStopped("t/a".into()))
    );
    assert_eq!(
        node.ask(&a, Slow, Duration::from_millis(50)).await,
        Err(AskError::Timeout {
            path: "t/a".into(),
            timeout_ms: 50
        })
    );
    let stale = ActorPath::new(node.id().clone(), 99, "a").expect("p");
    assert!(matches!(
        node.ask(&stale, Gen, T).await,
        Err(AskError::StaleIncarnation { .. })
    ));
    let remote = ActorPath::new(NodeId::new("other").expect("id"), 0, "a").expect("p");
    assert!(matches!(
        node.ask(&remote, Gen, T).await,
        Err(AskError::PeerUnreachable { .. })
    ));
    // The root serves supervision requests only.
    assert!(matches!(
        node.ask(&node.root_path(), Gen, T).await,
        Err(AskError::Unsupported { .. })
    ));
    // Wire delivery decodes and answers like a local ask.
    assert_eq!(gen_over_wire(&node, &a).await, generation(&node, "a").await);
    root.shutdown(T).await;
}

#[tokio::test]
async fn direct_reads_run_in_the_callers_task_and_declines_reach_the_actor() {
    use std::sync::atomic::AtomicBool;
    let node = node();
    let j = Journal::default();
    let direct = Arc::new(AtomicBool::new(false));
    let flag = direct.clone();
    let actor = Probe {
        name: "d".into(),
        journal: j.clone(),
        stop_delay: Duration::ZERO,
    };
    let spec = ChildSpec::worker("d", move |ctx| {
        let flag = flag.clone();
        let actor = Probe {
            name: actor.name.clone(),
            journal: actor.journal.clone(),
            stop_delay: Duration::ZERO,
        };
        async move {
            let r = ctx.spawn(actor, 7).await?;
            let gen_read: abi_runtime::DirectRead<Gen> = Arc::new(move |req: Gen| {
                if flag.load(Ordering::SeqCst) {
                    Ok(Box::pin(async { 4242 }))
                } else {
                    Err(req)
                }
            });
            let slow_read: abi_runtime::DirectRead<Slow> =
                Arc::new(|_: Slow| Ok(Box::pin(tokio::time::sleep(Duration::from_millis(300)))));
            Ok(Started::new(r)
                .serves::<Gen>()
                .serves::<Slow>()
                .reads_directly(gen_read)
                .reads_directly(slow_read))
        }
    });
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(spec))
        .await
        .expect("root");
    let d = node.path("d").expect("p");
    // Declined: the actor answers (its generation).
    assert_eq!(node.ask(&d, Gen, T).await, Ok(7));
    // Taken: answered in the caller's task.
    direct.store(true, Ordering::SeqCst);
    assert_eq!(node.ask(&d, Gen, T).await, Ok(4242));
    // A direct read keeps the ask's deadline.
    assert_eq!(
        node.ask(&d, Slow, Duration::from_millis(50)).await,
        Err(AskError::Timeout {
            path: "t/d".into(),
            timeout_ms: 50
        })
    );
    // Over the wire (as a remote caller would) the actor always answers.
    assert_eq!(gen_over_wire(&node, &d).await, 7);
    root.shutdown(T).await;
}
