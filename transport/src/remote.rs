//! Glue to `abi-runtime` (feature `runtime`): [`Transport`] implements the
//! runtime's `Remote` trait, and [`node_handler`] delivers inbound envelopes
//! to a `Node`. Errors map both ways without loss for every runtime variant,
//! so a remote `NoSuchActor` or `Unsupported` reaches the caller as itself.

use std::sync::Arc;
use std::time::Instant;

use abi_protocol::ActorPath;
use abi_runtime::{AskError, Node, Remote};
use futures::future::BoxFuture;
use tracing::Instrument;

use crate::{Inbound, InboundHandler, RemoteError, RequestMeta, Transport};

impl From<AskError> for RemoteError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Timeout { path, timeout_ms } => RemoteError::Timeout { path, timeout_ms },
            AskError::NoSuchActor(p) => RemoteError::NoSuchActor(p),
            AskError::ActorStopped(p) => RemoteError::ActorStopped(p),
            AskError::PeerUnreachable { node, reason } => {
                RemoteError::PeerUnreachable { node, reason }
            }
            AskError::StaleIncarnation {
                path,
                wanted,
                current,
            } => RemoteError::StaleIncarnation {
                path,
                wanted,
                current,
            },
            AskError::Unsupported { path, type_name } => {
                RemoteError::Unsupported { path, type_name }
            }
            AskError::Codec(m) => RemoteError::Codec(m),
        }
    }
}

/// What a caller of `node.ask` sees for a transport error on the way to `to`.
///
/// Transport-only failures (refused handshake, version mismatch, unknown
/// address, shutdown) all mean "that node cannot be reached" to a caller.
pub fn to_ask_error(e: RemoteError, to: &ActorPath) -> AskError {
    let unreachable = |reason: String| AskError::PeerUnreachable {
        node: to.node.to_string(),
        reason,
    };
    match e {
        RemoteError::Timeout { path, timeout_ms } => AskError::Timeout { path, timeout_ms },
        RemoteError::NoSuchActor(p) => AskError::NoSuchActor(p),
        RemoteError::ActorStopped(p) => AskError::ActorStopped(p),
        RemoteError::Unsupported { path, type_name } => AskError::Unsupported { path, type_name },
        RemoteError::Codec(m) => AskError::Codec(m),
        RemoteError::PeerUnreachable { node, reason } => AskError::PeerUnreachable { node, reason },
        RemoteError::StaleIncarnation {
            path,
            wanted,
            current,
        } => AskError::StaleIncarnation {
            path,
            wanted,
            current,
        },
        e
        @ (RemoteError::TooLarge { .. } | RemoteError::BadFrame(_) | RemoteError::Delivery(_)) => {
            AskError::Codec(e.to_string())
        }
        e @ (RemoteError::UnknownPeer(_)
        | RemoteError::VersionMismatch { .. }
        | RemoteError::Refused(_)
        | RemoteError::Shutdown) => unreachable(e.to_string()),
    }
}

impl Remote for Transport {
    fn ask_raw(
        &self,
        to: ActorPath,
        type_name: &'static str,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> BoxFuture<'static, Result<Vec<u8>, AskError>> {
        let t = self.clone();
        // Read synchronously: the caller's span is current now, not inside the future.
        let meta = RequestMeta {
            from: None,
            traceparent: abi_runtime::trace::current_traceparent(),
        };
        Box::pin(async move {
            t.ask(to.clone(), type_name, payload, deadline, meta)
                .await
                .map_err(|e| to_ask_error(e, &to))
        })
    }

    fn tell_raw(
        &self,
        to: ActorPath,
        type_name: &'static str,
        payload: Vec<u8>,
    ) -> Result<(), AskError> {
        let meta = RequestMeta {
            from: None,
            traceparent: abi_runtime::trace::current_traceparent(),
        };
        self.tell_queued(to.clone(), type_name, payload, meta)
            .map_err(|e| to_ask_error(e, &to))
    }
}

/// The inbound handler that hands every received envelope to `node.deliver_raw`.
///
/// Wiring: `let t = Transport::bind(id, inc, &files, cfg, node_handler(node.clone()))?;
/// node.set_remote(Arc::new(t.clone()));`
pub fn node_handler(node: Node) -> Arc<dyn InboundHandler> {
    Arc::new(
        move |m: Inbound| -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
            let Some(span) =
                abi_runtime::trace::inbound_span(&m.to, &m.type_name, m.traceparent.as_deref())
            else {
                let fut =
                    node.deliver_raw(&m.to, &m.type_name, &m.payload, m.deadline, m.want_reply);
                return Box::pin(async move { fut.await.map_err(RemoteError::from) });
            };
            // The handler span continues the sender's trace; delivering inside
            // it makes the actor's `handle` run in it (ractor propagates it).
            let fut = span.in_scope(|| {
                node.deliver_raw(&m.to, &m.type_name, &m.payload, m.deadline, m.want_reply)
            });
            Box::pin(async move { fut.await.map_err(RemoteError::from) }.instrument(span))
        },
    )
}

/// Exposes the transport's live connections in `node`'s registry (once per
/// process): `abi_transport_connections`, `abi_transport_{sent,received}_bytes_total{peer}`,
/// `abi_transport_rtt_seconds{peer}`. Read at scrape time from quinn's
/// connection stats, so nothing is counted on the message path.
pub fn register_metrics(transport: &Transport, node: &Node) {
    let collector = TransportCollector(transport.clone());
    node.metrics().get_or_init(move |reg| {
        reg.register_collector(Box::new(collector));
        TransportMetricsRegistered
    });
}

#[derive(Debug, Clone, Copy)]
struct TransportMetricsRegistered;

#[derive(Debug)]
struct TransportCollector(Transport);

impl prometheus_client::collector::Collector for TransportCollector {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::registry::Unit;

        let peers = self.0.peer_stats();
        ConstGauge::new(peers.len() as i64).encode(enc.encode_descriptor(
            "abi_transport_connections",
            "Live QUIC connections to other nodes",
            None,
            MetricType::Gauge,
        )?)?;
        let label = |p: &crate::PeerStats| [("peer", p.node.to_string())];
        let mut sent = enc.encode_descriptor(
            "abi_transport_sent",
            "UDP payload bytes sent to a peer on its current connection",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for p in &peers {
            ConstCounter::new(p.bytes_sent).encode(sent.encode_family(&label(p))?)?;
        }
        let mut received = enc.encode_descriptor(
            "abi_transport_received",
            "UDP payload bytes received from a peer on its current connection",
            Some(&Unit::Bytes),
            MetricType::Counter,
        )?;
        for p in &peers {
            ConstCounter::new(p.bytes_received).encode(received.encode_family(&label(p))?)?;
        }
        let mut rtt = enc.encode_descriptor(
            "abi_transport_rtt",
            "QUIC's smoothed round-trip time to a peer",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for p in &peers {
            ConstGauge::new(p.rtt.as_secs_f64()).encode(rtt.encode_family(&label(p))?)?;
        }
        Ok(())
    }
}
