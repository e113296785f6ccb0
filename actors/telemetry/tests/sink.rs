//! The sink against real sockets: a receiver that is down (spans dropped and
//! counted, span creation never waits), and a minimal OTLP/HTTP receiver built
//! on the official `opentelemetry-proto` types (spans arrive, decoded, with the
//! parent chain of the W3C context they started from).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi_protocol::NodeId;
use abi_runtime::{Node, Strategy, SupervisorSpec};
use abi_telemetry::{Telemetry, TelemetryConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

async fn start(t: &Telemetry) -> (Node, abi_runtime::RootHandle) {
    let node = Node::new(NodeId::new("t1").expect("id"), 1);
    t.register_metrics(&node);
    let root = node
        .start_root(SupervisorSpec::new(Strategy::OneForOne).child(t.child_spec()))
        .await
        .expect("root starts");
    (node, root)
}

fn metric(node: &Node, line_prefix: &str) -> f64 {
    node.metrics()
        .encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

fn make_spans(t: &Telemetry, n: usize) -> Duration {
    let subscriber = tracing_subscriber::registry().with(t.layer());
    tracing::subscriber::with_default(subscriber, || {
        let started = Instant::now();
        for i in 0..n {
            let s = tracing::info_span!(target: abi_runtime::trace::TARGET, "test.span", i);
            let _e = s.enter();
        }
        started.elapsed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_down_drops_and_counts() {
    // Nothing listens on this port: every export fails fast.
    let mut cfg = TelemetryConfig::new(format!("http://127.0.0.1:{}/v1/traces", free_port()));
    cfg.queue_size = 16;
    cfg.flush_interval = Duration::from_millis(50);
    cfg.export_timeout = Duration::from_millis(500);
    let t = Telemetry::new(cfg).expect("config");
    let (node, root) = start(&t).await;

    // 1000 spans into a 16-slot queue: most overflow at once; making them
    // must not wait for the exporter (generous bound for a loaded CI box).
    let took = make_spans(&t, 1000);
    assert!(
        took < Duration::from_secs(2),
        "span creation blocked: {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let full = metric(
            &node,
            "abi_telemetry_spans_dropped_total{reason=\"queue_full\"}",
        );
        let failed = metric(
            &node,
            "abi_telemetry_spans_dropped_total{reason=\"export_failed\"}",
        );
        if full + failed == 1000.0 {
            assert!(full >= 900.0, "queue_full {full}");
            assert!(failed >= 1.0, "export_failed {failed}");
            assert_eq!(metric(&node, "abi_telemetry_spans_exported_total"), 0.0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "counted {full} + {failed} of 1000"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_make_the_queue_overflow() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    // Each export takes 300 ms to be answered; 20 spans are made every 50 ms into a
    // 64-span queue, so an export in flight sees 120 spans made: the flusher has to
    // keep taking them meanwhile.
    let server = tokio::spawn(receiver(listener, got.clone(), Duration::from_millis(300)));
    let mut cfg = TelemetryConfig::new(format!("http://127.0.0.1:{port}/v1/traces"));
    cfg.queue_size = 64;
    cfg.flush_interval = Duration::from_millis(50);
    let t = Telemetry::new(cfg).expect("config");
    let (node, root) = start(&t).await;
    for _ in 0..20 {
        make_spans(&t, 20);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reqs = exported(&node, &got, 400).await;
    let spans: usize = reqs
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(spans, 400);
    let full = metric(
        &node,
        "abi_telemetry_spans_dropped_total{reason=\"queue_full\"}",
    );
    assert_eq!(full, 0.0, "spans dropped at the door");
    root.shutdown(Duration::from_secs(5)).await;
    server.abort();
}

/// Accepts OTLP/HTTP posts and keeps the decoded requests, answering each after `delay`.
async fn receiver(
    listener: TcpListener,
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    delay: Duration,
) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let got = got.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                let n = match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() < end + 4 + len {
                    continue;
                }
                let body = buf[end + 4..end + 4 + len].to_vec();
                buf.drain(..end + 4 + len);
                tokio::time::sleep(delay).await;
                match ExportTraceServiceRequest::decode(body.as_slice()) {
                    Ok(req) => {
                        got.lock().expect("lock").push(req);
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                    Err(_) => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                }
            }
        });
    }
}

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

/// A receiver on a free port, and a config that exports to it every 50 ms.
async fn receiving() -> (TelemetryConfig, Received, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let server = tokio::spawn(receiver(listener, got.clone(), Duration::ZERO));
    let mut cfg = TelemetryConfig::new(format!("http://127.0.0.1:{port}/v1/traces"));
    cfg.flush_interval = Duration::from_millis(50);
    (cfg, got, server)
}

/// The export requests received once `node` counts at least `n` spans exported.
async fn exported(node: &Node, got: &Received, n: usize) -> Vec<ExportTraceServiceRequest> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(node, "abi_telemetry_spans_exported_total") < n as f64 {
        assert!(Instant::now() < deadline, "spans not exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got.lock().expect("lock").clone()
}

fn spans_of(
    reqs: &[ExportTraceServiceRequest],
) -> Vec<&opentelemetry_proto::tonic::trace::v1::Span> {
    reqs.iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_with_their_parent_chain() {
    let (mut cfg, got, server) = receiving().await;
    cfg.service_name = "sink-test".into();
    let t = Telemetry::new(cfg).expect("config");
    // Only the first installation in a process wins; this test binary has one.
    t.install_propagation();
    let (node, root) = start(&t).await;

    let subscriber = tracing_subscriber::registry().with(t.layer());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let seen_tp = tracing::subscriber::with_default(subscriber, || {
        let outer = tracing::info_span!(target: abi_runtime::trace::TARGET, "outer");
        abi_runtime::trace::set_parent(&outer, &format!("00-{trace_id}-00f067aa0ba902b7-01"));
        let _o = outer.enter();
        let inner = tracing::info_span!(target: abi_runtime::trace::TARGET, "inner");
        let _i = inner.enter();
        abi_runtime::trace::current_traceparent()
    });
    let tp = seen_tp.expect("a traceparent for the current span");
    assert!(
        tp.starts_with(&format!("00-{trace_id}-")) && tp.ends_with("-01"),
        "{tp}"
    );

    let reqs = exported(&node, &got, 2).await;
    let spans = spans_of(&reqs);
    let find = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
    };
    let (outer, inner) = (find("outer"), find("inner"));
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&outer.trace_id), trace_id);
    assert_eq!(hex(&inner.trace_id), trace_id);
    assert_eq!(hex(&outer.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(inner.parent_span_id, outer.span_id);
    let service = reqs[0].resource_spans[0]
        .resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .and_then(|a| a.value.as_ref())
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    assert!(service.contains("sink-test"), "{service}");
    root.shutdown(Duration::from_secs(5)).await;
    server.abort();
}

#[test]
fn message_spans_only_inside_a_traced_request() {
    use tracing_subscriber::Layer as _;
    let t = Telemetry::new(TelemetryConfig::new("http://127.0.0.1:9/v1/traces")).expect("config");
    t.install_propagation();
    // The node's composition (runtime/node/src/logging.rs): the log layer has
    // the trace target turned off, the exporter's layer sees only it.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(tracing_subscriber::EnvFilter::new("info,abi::trace=off"));
    let subscriber = tracing_subscriber::registry()
        .with(Some(t.layer()))
        .with(fmt);
    tracing::subscriber::with_default(subscriber, || {
        assert!(abi_runtime::trace::message_span(&"n/x", "t", false).is_none());
        let outer = tracing::info_span!(target: abi_runtime::trace::TARGET, "http.request");
        let _o = outer.enter();
        // A log span of another crate in between (the gateway's request-id span).
        let log = tracing::info_span!("http", request_id = 7);
        let _l = log.enter();
        let inner = abi_runtime::trace::message_span(&"n/x", "t", false);
        assert!(
            inner.is_some(),
            "current: {:?}",
            tracing::Span::current().metadata()
        );
    });
}

#[tokio::test]
async fn messages_inside_an_entry_span_are_its_children() {
    use abi_runtime::trace::{SpanIds, in_entry, message_span, parse_traceparent};
    let t = Telemetry::new(TelemetryConfig::new("http://127.0.0.1:9/v1/traces")).expect("config");
    t.install_propagation();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(t.layer()));
    assert!(
        message_span(&"n/x", "t", false).is_none(),
        "outside any trace"
    );
    let ids = SpanIds::root();
    let tp = in_entry(ids, async {
        let span = message_span(&"n/x", "t", false).expect("a span inside the entry span");
        let _e = span.enter();
        abi_runtime::trace::current_traceparent()
    })
    .await
    .expect("the message span's traceparent");
    let (trace_id, span_id, sampled) = parse_traceparent(&tp).expect("valid");
    assert_eq!(trace_id, ids.trace_id, "{tp}");
    assert_ne!(span_id, ids.span_id, "its own span id");
    assert!(sampled);
}

#[tokio::test]
async fn direct_work_below_an_entry_span_is_exported_as_its_internal_children() {
    use abi_runtime::trace::{ChildSpan, SpanIds, child_span, current_entry, in_entry};
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let (cfg, got, server) = receiving().await;
    let t = Telemetry::new(cfg).expect("config");
    t.install_propagation();
    let (node, root) = start(&t).await;
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(t.layer()));

    assert!(
        child_span(&"n/read", "t.read").is_none(),
        "outside any trace"
    );
    // A remote caller's span: the entry span continues its trace.
    let entry = SpanIds::child(0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7);
    let (read_ids, scan_ids) = in_entry(entry, async {
        let read = match child_span(&"n/read", "t.read") {
            Some(ChildSpan::Light(s)) => s,
            other => panic!("a light span below an entry span, got {other:?}"),
        };
        let read_ids = read.ids();
        // Work inside the read (a shard scan) is the read's child.
        let scan_ids = ChildSpan::Light(read)
            .instrument(async move {
                assert_eq!(current_entry().map(|e| e.span_id), Some(read_ids.span_id));
                let scan = child_span(&"n/scan", "t.scan").expect("traced");
                let ids = match &scan {
                    ChildSpan::Light(s) => s.ids(),
                    other => panic!("{other:?}"),
                };
                scan.run(|| ids)
            })
            .await;
        (read_ids, scan_ids)
    })
    .await;
    assert_eq!(read_ids.trace_id, entry.trace_id);
    assert_eq!(read_ids.parent_span_id, entry.span_id);
    assert_eq!(scan_ids.parent_span_id, read_ids.span_id);

    let reqs = exported(&node, &got, 2).await;
    let spans = spans_of(&reqs);
    let path_of = |s: &opentelemetry_proto::tonic::trace::v1::Span| {
        s.attributes
            .iter()
            .find(|a| a.key == "actor.path")
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
    };
    for (ids, path) in [(read_ids, "n/read"), (scan_ids, "n/scan")] {
        let span = spans
            .iter()
            .find(|s| s.span_id == ids.span_id.to_be_bytes())
            .unwrap_or_else(|| panic!("no span {path} in {spans:?}"));
        assert_eq!(span.name, "actor.handle");
        assert_eq!(span.kind, SpanKind::Internal as i32, "{span:?}");
        assert_eq!(span.trace_id, ids.trace_id.to_be_bytes());
        assert_eq!(span.parent_span_id, ids.parent_span_id.to_be_bytes());
        assert!(path_of(span).contains(path), "{span:?}");
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }
    root.shutdown(Duration::from_secs(5)).await;
    server.abort();
}
