//! Benchmark: `Node::ask` versus a bare ractor call on the same runtime, and
//! the restart latency of a crashed child (crash until it answers again),
//! next to a hand-written raw-ractor restart.
//!
//! Execute with: `cargo run --release -p abi-runtime --example bench_ask`
//! (2 worker threads, like the anchors in shared/data/ANCHORS.md).
//! `ABI_BENCH_ROUNDS=N` sets the rounds; `ABI_BENCH_ONLY=ask` (or `raw`) runs one
//! side alone, round after round, for a profiler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::{NodeId, Request};
use abi_runtime::{Backoff, Call, ChildSpec, Node, Started, Strategy, SupervisorSpec};
use parking_lot::Mutex;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Ping(u64);
impl Request for Ping {
    type Reply = u64;
    const TYPE: &'static str = "bench.ping";
}
#[derive(Serialize, Deserialize)]
struct Crash;
impl Request for Crash {
    type Reply = ();
    const TYPE: &'static str = "bench.crash";
}

enum Msg {
    Ping(Call<Ping>),
    Crash(Call<Crash>),
}
impl From<Call<Ping>> for Msg {
    fn from(c: Call<Ping>) -> Self {
        Msg::Ping(c)
    }
}
impl From<Call<Crash>> for Msg {
    fn from(c: Call<Crash>) -> Self {
        Msg::Crash(c)
    }
}

struct Worker;
impl Actor for Worker {
    type Msg = Msg;
    type State = u64;
    type Arguments = u64;
    async fn pre_start(&self, _: ActorRef<Msg>, g: u64) -> Result<u64, ActorProcessingErr> {
        Ok(g)
    }
    async fn handle(
        &self,
        _: ActorRef<Msg>,
        m: Msg,
        g: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match m {
            Msg::Ping(c) => {
                let x = c.request().0;
                c.reply(x ^ *g)
            }
            Msg::Crash(c) => {
                drop(c);
                return Err("crash".into());
            }
        }
        Ok(())
    }
}

/// The bare ractor equivalent.
enum RawMsg {
    Ping(u64, RpcReplyPort<u64>),
    Crash,
}
struct Raw;
impl Actor for Raw {
    type Msg = RawMsg;
    type State = u64;
    type Arguments = u64;
    async fn pre_start(&self, _: ActorRef<RawMsg>, g: u64) -> Result<u64, ActorProcessingErr> {
        Ok(g)
    }
    async fn handle(
        &self,
        _: ActorRef<RawMsg>,
        m: RawMsg,
        g: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match m {
            RawMsg::Ping(x, reply) => {
                let _ = reply.send(x ^ *g);
            }
            RawMsg::Crash => return Err("crash".into()),
        }
        Ok(())
    }
}

/// Minimal hand-written supervisor: respawn on failure, publish the new ref.
struct RawSup;
impl Actor for RawSup {
    type Msg = ();
    type State = (Arc<Mutex<Option<ActorRef<RawMsg>>>>, u64);
    type Arguments = Arc<Mutex<Option<ActorRef<RawMsg>>>>;
    async fn pre_start(
        &self,
        me: ActorRef<()>,
        slot: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (r, _) = Actor::spawn_linked(None, Raw, 1, me.get_cell()).await?;
        *slot.lock() = Some(r);
        Ok((slot, 1))
    }
    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<()>,
        e: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(..) = e {
            st.1 += 1;
            let (r, _) = Actor::spawn_linked(None, Raw, st.1, me.get_cell()).await?;
            *st.0.lock() = Some(r);
        }
        Ok(())
    }
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

struct Stats {
    per_sec: f64,
    p50: f64,
    p99: f64,
}

fn report(name: &str, s: &Stats) {
    println!(
        "{name:<34} {:>12.0} calls/s   p50 {:>6.2} us   p99 {:>7.2} us",
        s.per_sec, s.p50, s.p99
    );
}

const N: usize = 200_000;
/// Rounds of the interleaved comparison (`ABI_BENCH_ROUNDS`, default 9): the median
/// of many short rounds is steadier than one long run on a shared machine.
fn rounds() -> usize {
    std::env::var("ABI_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9)
}

/// `N` sequential calls of `call`, timed one by one.
async fn timed<F: std::future::Future<Output = u64>>(mut call: impl FnMut(u64) -> F) -> Stats {
    let mut lat = Vec::with_capacity(N);
    let t0 = Instant::now();
    for i in 0..N as u64 {
        let t = Instant::now();
        std::hint::black_box(call(i).await);
        lat.push(t.elapsed());
    }
    let el = t0.elapsed();
    Stats {
        per_sec: N as f64 / el.as_secs_f64(),
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
    }
}

async fn bench_raw(r: &ActorRef<RawMsg>) -> Stats {
    timed(|i| async move { ractor::call!(r, RawMsg::Ping, i).expect("raw call") }).await
}

async fn bench_raw_t(r: &ActorRef<RawMsg>) -> Stats {
    timed(|i| async move {
        ractor::call_t!(r, RawMsg::Ping, 5000, i).expect("raw call with timeout")
    })
    .await
}

async fn bench_ask(node: &Node, path: &abi_protocol::ActorPath) -> Stats {
    timed(|i| async move {
        node.ask(path, Ping(i), Duration::from_secs(5))
            .await
            .expect("ask")
    })
    .await
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each figure's median over the rounds.
fn median_stats(rounds: &[Stats]) -> Stats {
    Stats {
        per_sec: median(rounds.iter().map(|s| s.per_sec).collect()),
        p50: median(rounds.iter().map(|s| s.p50).collect()),
        p99: median(rounds.iter().map(|s| s.p99).collect()),
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Measured from a worker thread (as a caller actor would be), not from block_on's thread.
    rt.block_on(async { tokio::spawn(run()).await.expect("bench task") });
}

async fn run() {
    {
        let node = Node::new(NodeId::new("bench").expect("id"), 1);
        let spec = SupervisorSpec::new(Strategy::OneForOne)
            .intensity(1_000_000, Duration::from_secs(1))
            // Every crash here counts as the first after a stable period, so it
            // is restarted at once (as in OTP); backoff applies to streaks.
            .backoff(Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(1),
                jitter: 0.2,
                reset_after: Duration::ZERO,
            })
            .child(ChildSpec::worker("w", |ctx| async move {
                let r = ctx.spawn(Worker, rand_gen()).await?;
                Ok(Started::new(r).serves::<Ping>().serves::<Crash>())
            }));
        let root = node.start_root(spec).await.expect("root");
        let path = node.path("w").expect("path");
        let slot = Arc::new(Mutex::new(None));
        let (_sup, _) = Actor::spawn(None, RawSup, slot.clone())
            .await
            .expect("raw sup");
        let raw = slot.lock().clone().expect("raw child");

        // `ABI_BENCH_ONLY=ask|raw`: run one side alone (for a profiler), then stop.
        if let Ok(only) = std::env::var("ABI_BENCH_ONLY") {
            for _ in 0..rounds() {
                let s = match only.as_str() {
                    "raw" => bench_raw(&raw).await,
                    _ => bench_ask(&node, &path).await,
                };
                report(&only, &s);
            }
            root.shutdown(Duration::from_secs(5)).await;
            return;
        }
        // Warm up, then alternate rounds so drift hits both equally.
        bench_raw(&raw).await;
        bench_ask(&node, &path).await;
        let rounds = rounds();
        let (mut by_raw, mut by_ask, mut by_raw_t) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            by_raw.push(bench_raw(&raw).await);
            by_ask.push(bench_ask(&node, &path).await);
            by_raw_t.push(bench_raw_t(&raw).await);
        }
        let r = median_stats(&by_raw);
        let a = median_stats(&by_ask);
        let t = median_stats(&by_raw_t);
        println!("round trip, {N} sequential calls, median of {rounds} rounds, 2 worker threads");
        report("bare ractor call! (RpcReplyPort)", &r);
        report("abi Node::ask (path, deadline)", &a);
        // ractor's own call with a deadline (a tokio timer per call): what `ask`'s
        // deadline would cost without the node's reaper.
        report("bare ractor call_t! (5 s timeout)", &t);
        println!(
            "ask / call_t!: throughput {:.3}x, p50 {:.3}x, p99 {:.3}x",
            a.per_sec / t.per_sec,
            a.p50 / t.p50,
            a.p99 / t.p99
        );
        println!(
            "ask / bare: throughput {:.3}x, p50 {:.3}x, p99 {:.3}x   (overhead {:+.1}% calls/s)",
            a.per_sec / r.per_sec,
            a.p50 / r.p50,
            a.p99 / r.p99,
            (a.per_sec / r.per_sec - 1.0) * 100.0
        );

        // Restart latency: crash, then ask until the new life answers.
        let mut ours = Vec::new();
        for _ in 0..2_000 {
            let before = node
                .ask(&path, Ping(0), Duration::from_secs(1))
                .await
                .expect("alive");
            let t0 = Instant::now();
            node.tell(&path, Crash).expect("crash");
            loop {
                if let Ok(g) = node.ask(&path, Ping(0), Duration::from_secs(1)).await
                    && g != before
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
            ours.push(t0.elapsed());
        }
        let mut theirs = Vec::new();
        for _ in 0..2_000 {
            let old = slot.lock().clone().expect("raw");
            let t0 = Instant::now();
            let _ = old.send_message(RawMsg::Crash);
            loop {
                let cur = slot.lock().clone();
                if let Some(c) = cur
                    && c.get_id() != old.get_id()
                    && ractor::call!(c, RawMsg::Ping, 0).is_ok()
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
            theirs.push(t0.elapsed());
        }
        let (o50, o99) = (pct(&mut ours, 0.5), pct(&mut ours, 0.99));
        let (t50, t99) = (pct(&mut theirs, 0.5), pct(&mut theirs, 0.99));
        println!("crashed child -> answering again, 2000 crashes");
        println!(
            "{:<34} p50 {o50:>6.1} us   p99 {o99:>7.1} us",
            "abi supervisor (restart + registry)"
        );
        println!(
            "{:<34} p50 {t50:>6.1} us   p99 {t99:>7.1} us",
            "raw ractor respawn on ActorFailed"
        );
        println!("anchors: Erlang/OTP 69 us, raw ractor 7.8 us (ANCHORS.md); goal <= 20 us");
        let tree = root.supervisor().tree();
        println!("restarts recorded: {}", tree.children[0].restarts);
        root.shutdown(Duration::from_secs(5)).await;
    }
}

fn rand_gen() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static G: AtomicU64 = AtomicU64::new(1);
    G.fetch_add(1, Ordering::Relaxed)
}
