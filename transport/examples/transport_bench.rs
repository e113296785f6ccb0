//! Remote ask through abi-transport vs raw quinn, measured in the same run,
//! plus the local `ask` of the runtime for scale.
//!
//! Run: `cargo run --release -p abi-transport --features runtime --example transport_bench`
//! Optional args: `<latency requests> <throughput requests>` (defaults 3000 and 30000).
//!
//! Shapes (both sides get the same TLS 1.3 mutual-TLS configs, ring, loopback):
//! - round trip: one request at a time, 32-byte payload, a new bidi stream per request;
//! - throughput: 64 requests in flight over one connection.
//!
//! Our path adds framing, postcard envelopes, the connection manager and the
//! inbound handler; raw quinn writes the bytes and echoes them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::{NodeId, Request};
use abi_runtime::{Call, ChildSpec, Node, Started, Strategy, SupervisorSpec};
use abi_transport::certs::{self, TlsFiles};
use abi_transport::{Inbound, RemoteError, RequestMeta, Transport, TransportConfig, tls};
use futures::future::BoxFuture;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};

const IN_FLIGHT: usize = 64;
const PAYLOAD: usize = 32;

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid id")
}

fn mirror(m: Inbound) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
    Box::pin(async move { Ok(m.payload) })
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One request of a measured path.
type CallFn = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Runs `total` calls, `IN_FLIGHT` at a time; returns requests per second.
async fn throughput(total: usize, f: CallFn) -> f64 {
    let per = total / IN_FLIGHT;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let f = f.clone();
        set.spawn(async move {
            for _ in 0..per {
                f().await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    (per * IN_FLIGHT) as f64 / t0.elapsed().as_secs_f64()
}

/// Raw quinn: the same TLS configs, a stream per request, the server echoes.
async fn raw_quinn(files_a: &TlsFiles, files_b: &TlsFiles) -> (CallFn, Box<dyn FnOnce()>) {
    let server_tls = tls::server_config(files_b).expect("server tls");
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        QuicServerConfig::try_from(server_tls).expect("quic server"),
    ));
    let server =
        quinn::Endpoint::server(server_cfg, SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let addr = server.local_addr().expect("addr");
    let srv = server.clone();
    let accept = tokio::spawn(async move {
        while let Some(inc) = srv.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    tokio::spawn(async move {
                        if let Ok(buf) = recv.read_to_end(1 << 20).await {
                            let _ = send.write_all(&buf).await;
                            let _ = send.finish();
                        }
                    });
                }
            });
        }
    });
    let mut client =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client");
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(
        QuicClientConfig::try_from(tls::client_config(files_a).expect("client tls"))
            .expect("quic client"),
    )));
    let conn = client
        .connect(addr, "peer.node.abi")
        .expect("connect")
        .await
        .expect("handshake");
    let c = conn.clone();
    let call: CallFn = Arc::new(move || {
        let conn = c.clone();
        Box::pin(async move {
            let payload = vec![7u8; PAYLOAD];
            let (mut send, mut recv) = conn.open_bi().await.expect("open");
            send.write_all(&payload).await.expect("write");
            send.finish().expect("finish");
            let back = recv.read_to_end(1 << 20).await.expect("read");
            assert_eq!(back.len(), PAYLOAD);
        })
    });
    let stop = Box::new(move || {
        conn.close(0u32.into(), b"done");
        accept.abort();
        server.close(0u32.into(), b"done");
    });
    (call, stop)
}

/// abi-transport: envelope, connection manager, inbound handler that mirrors.
async fn ours(files_a: &TlsFiles, files_b: &TlsFiles) -> (CallFn, Box<dyn FnOnce()>) {
    let cfg = TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..TransportConfig::default()
    };
    let a =
        Transport::bind(id("bench-a"), 1, files_a, cfg.clone(), Arc::new(mirror)).expect("bind a");
    let b = Transport::bind(id("bench-b"), 2, files_b, cfg, Arc::new(mirror)).expect("bind b");
    a.add_peer(id("bench-b"), b.local_addr().expect("addr"));
    let to = abi_protocol::ActorPath::new(id("bench-b"), 0, "mirror").expect("path");
    let a2 = a.clone();
    let call: CallFn = Arc::new(move || {
        let (a, to) = (a2.clone(), to.clone());
        Box::pin(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            let back = a
                .ask(
                    to,
                    "bench.mirror",
                    vec![7u8; PAYLOAD],
                    deadline,
                    RequestMeta::default(),
                )
                .await
                .expect("ask");
            assert_eq!(back.len(), PAYLOAD);
        })
    });
    let stop = Box::new(move || {
        a.shutdown();
        b.shutdown();
    });
    (call, stop)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Latency and throughput of two paths, interleaved in rounds so that load
/// from other processes on the machine hits both alike.
async fn compare(a: &CallFn, b: &CallFn, n_lat: usize, n_thr: usize) -> [(Stats, f64); 2] {
    for f in [a, b] {
        for _ in 0..500 {
            f().await;
        }
    }
    let rounds = 6;
    let mut lat = [Vec::new(), Vec::new()];
    let mut thr = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, f) in [a, b].into_iter().enumerate() {
            for _ in 0..n_lat / rounds {
                let t0 = Instant::now();
                f().await;
                lat[i].push(t0.elapsed());
            }
            thr[i].push(throughput(n_thr / rounds, f.clone()).await);
        }
    }
    let [la, lb] = lat;
    let [ta, tb] = thr;
    [(stats(la), median(ta)), (stats(lb), median(tb))]
}

#[derive(Debug, Serialize, Deserialize)]
struct Echo(Vec<u8>);
impl Request for Echo {
    type Reply = Vec<u8>;
    const TYPE: &'static str = "bench.echo";
}

struct EchoActor;
impl Actor for EchoActor {
    type Msg = Call<Echo>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        call: Call<Echo>,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let v = call.request().0.clone();
        call.reply(v);
        Ok(())
    }
}

/// Local ask, and remote ask through two runtime Nodes (actor on the far side).
async fn runtime_asks(files_a: &TlsFiles, files_b: &TlsFiles, n_lat: usize) -> (Stats, Stats) {
    let spec = || {
        SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker(
            "echo",
            |ctx| async move {
                let r = ctx.spawn(EchoActor, ()).await?;
                Ok(Started::new(r).serves::<Echo>())
            },
        ))
    };
    let na = Node::new(id("bench-a"), 1);
    let nb = Node::new(id("bench-b"), 2);
    let cfg = TransportConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..TransportConfig::default()
    };
    let ta = Transport::bind(
        id("bench-a"),
        1,
        files_a,
        cfg.clone(),
        abi_transport::remote::node_handler(na.clone()),
    )
    .expect("bind");
    let tb = Transport::bind(
        id("bench-b"),
        2,
        files_b,
        cfg,
        abi_transport::remote::node_handler(nb.clone()),
    )
    .expect("bind");
    na.set_remote(Arc::new(ta.clone()));
    nb.set_remote(Arc::new(tb.clone()));
    ta.add_peer(id("bench-b"), tb.local_addr().expect("addr"));
    let ra = na.start_root(spec()).await.expect("root a");
    let rb = nb.start_root(spec()).await.expect("root b");
    let local = na.path("echo").expect("path");
    let remote = nb.path("echo").expect("path");
    let mut out = Vec::new();
    for path in [&local, &remote] {
        for _ in 0..500 {
            na.ask(path, Echo(vec![7; PAYLOAD]), Duration::from_secs(10))
                .await
                .expect("ask");
        }
        let mut lat = Vec::with_capacity(n_lat);
        for _ in 0..n_lat {
            let t0 = Instant::now();
            na.ask(path, Echo(vec![7; PAYLOAD]), Duration::from_secs(10))
                .await
                .expect("ask");
            lat.push(t0.elapsed());
        }
        out.push(stats(lat));
    }
    ra.shutdown(Duration::from_secs(5)).await;
    rb.shutdown(Duration::from_secs(5)).await;
    ta.shutdown();
    tb.shutdown();
    let remote_stats = out.pop().expect("remote");
    let local_stats = out.pop().expect("local");
    (local_stats, remote_stats)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n_lat = args.first().copied().unwrap_or(3000);
    let n_thr = args.get(1).copied().unwrap_or(30000);
    let dir = std::env::temp_dir().join(format!("abi-transport-bench-{}", std::process::id()));
    certs::init_ca(&dir).expect("CA");
    for n in ["bench-a", "bench-b"] {
        certs::issue(&dir, &id(n), &dir.join(n)).expect("issue");
    }
    let fa = TlsFiles::load(&dir.join("bench-a")).expect("load");
    let fb = TlsFiles::load(&dir.join("bench-b")).expect("load");

    println!(
        "transport bench: {PAYLOAD}-byte payload, loopback, {} worker threads, {n_lat} sequential / {n_thr} at {IN_FLIGHT} in flight; raw and ours interleaved in 6 rounds, throughput = median round",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let (raw, stop_raw) = raw_quinn(&fa, &fb).await;
    let (our, stop_our) = ours(&fa, &fb).await;
    let [(raw_lat, raw_thr), (our_lat, our_thr)] = compare(&raw, &our, n_lat, n_thr).await;
    stop_raw();
    stop_our();
    let (local, remote) = runtime_asks(&fa, &fb, n_lat).await;
    println!("| path | p50 us | p99 us | req/s at {IN_FLIGHT} in flight |");
    println!("|---|---|---|---|");
    println!(
        "| raw quinn (stream per request, echo) | {:.1} | {:.1} | {:.0} |",
        us(raw_lat.p50),
        us(raw_lat.p99),
        raw_thr
    );
    println!(
        "| abi-transport ask (envelope, handler) | {:.1} | {:.1} | {:.0} |",
        us(our_lat.p50),
        us(our_lat.p99),
        our_thr
    );
    println!(
        "| runtime node.ask, remote actor | {:.1} | {:.1} | - |",
        us(remote.p50),
        us(remote.p99)
    );
    println!(
        "| runtime node.ask, local actor | {:.1} | {:.1} | - |",
        us(local.p50),
        us(local.p99)
    );
    println!(
        "ratios: p50 ours/raw = {:.2} (goal <= 1.5), throughput ours/raw = {:.2} (goal >= 0.7), remote/local ask p50 = {:.0}x",
        us(our_lat.p50) / us(raw_lat.p50),
        our_thr / raw_thr,
        us(remote.p50) / us(local.p50).max(0.001)
    );
    println!(
        "anchors (ANCHORS.md, quinn 0.11.12 loopback): new bidi stream per request p50 248-294 us; 64 in flight 49 k req/s"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
