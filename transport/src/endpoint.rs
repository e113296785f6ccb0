//! The QUIC endpoint of a node and its connection manager.
//!
//! One endpoint per node both listens and dials. Each peer gets one
//! connection, reused for every request in both directions (an inbound
//! connection from a peer also carries our requests to it). Each request is
//! one bidirectional QUIC stream (request frame, reply frame); a `tell` is one
//! unidirectional stream. A bad frame therefore closes only its own stream.
//!
//! When a connection dies, every request in flight on it fails at once with
//! [`RemoteError::PeerUnreachable`] (its stream read returns "connection
//! lost"); new requests redial with exponential backoff and fail fast while
//! the backoff lasts.
//!
//! Tasks: one driver task accepts connections and owns one task per
//! connection, which owns one task per inbound stream. [`Transport::shutdown`]
//! aborts the driver, which drops (and so aborts) everything below it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use abi_protocol::{ActorPath, NodeId};
use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use quinn::VarInt;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::certs::TlsFiles;
use crate::envelope::{Hello, PROTOCOL_VERSION, ReplyHeader, RequestHeader};
use crate::frame::{self, FrameError, codes};
use crate::{RemoteError, TransportError, tls};

/// Connection close codes (application level).
pub mod close_codes {
    /// Orderly shutdown of a node.
    pub const SHUTDOWN: u32 = 0x1;
    /// Handshake refused: protocol version mismatch.
    pub const VERSION: u32 = 0x2;
    /// Handshake refused: identity (certificate does not carry the claimed id, or unexpected id).
    pub const IDENTITY: u32 = 0x3;
    /// Handshake refused: malformed or missing hello.
    pub const HANDSHAKE: u32 = 0x4;
    /// Connection replaced (peer restarted, or duplicate) or peer declared dead.
    pub const GOING_AWAY: u32 = 0x5;
}

/// Reserved message type answered by the transport itself (heartbeats).
pub const PING_TYPE: &str = "abi.transport.ping";

/// Answers the payload of an inbound ping (membership gossip): called with
/// the sender's node id and payload, returns the payload of the reply.
pub type PingHook = Arc<dyn Fn(&NodeId, &[u8]) -> Vec<u8> + Send + Sync>;

/// Tunables of the endpoint; defaults suit a LAN cluster.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// UDP address to listen on (port 0 picks one).
    pub listen: SocketAddr,
    /// Largest payload accepted in one frame.
    pub max_payload: u64,
    /// QUIC keep-alive interval (keeps idle connections open and detects silence).
    pub keep_alive: Duration,
    /// A connection with no packets from the peer for this long is dead.
    pub idle_timeout: Duration,
    /// Limit for dialling plus handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay after a failed dial.
    pub backoff_min: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Concurrent streams a peer may open to us (per direction and kind).
    pub max_streams: u32,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7700)),
            max_payload: frame::DEFAULT_MAX_PAYLOAD,
            keep_alive: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            max_streams: 4096,
        }
    }
}

/// An envelope received from a peer, for the node to deliver to a local actor.
#[derive(Debug)]
pub struct Inbound {
    /// The peer node it came from (verified by mutual TLS).
    pub from_node: NodeId,
    /// The sending actor, if any.
    pub from: Option<ActorPath>,
    /// The local destination.
    pub to: ActorPath,
    /// Wire name of the message.
    pub type_name: String,
    /// postcard-encoded message.
    pub payload: Vec<u8>,
    /// When the caller stops waiting (local clock).
    pub deadline: Instant,
    /// The caller's W3C traceparent.
    pub traceparent: Option<String>,
    /// False for `tell`.
    pub want_reply: bool,
}

/// Delivers inbound envelopes to local actors (the node plugs in its `deliver_raw`).
pub trait InboundHandler: Send + Sync + 'static {
    /// Delivers `msg` and returns the postcard-encoded reply (ignored for tells).
    fn handle(&self, msg: Inbound) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>>;
}

impl<F> InboundHandler for F
where
    F: Fn(Inbound) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> + Send + Sync + 'static,
{
    fn handle(&self, msg: Inbound) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
        self(msg)
    }
}

/// Something that happened to a peer connection, for membership and dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A connection to `node` is up (dialled or accepted) and its identity verified.
    Connected {
        /// The peer.
        node: NodeId,
        /// Its incarnation.
        incarnation: u64,
        /// Its address as seen from here.
        addr: SocketAddr,
    },
    /// The connection to `node` closed.
    Disconnected {
        /// The peer.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

/// One live peer connection's numbers (see [`Transport::peer_stats`]).
#[derive(Debug, Clone)]
pub struct PeerStats {
    /// The peer.
    pub node: NodeId,
    /// QUIC's smoothed round-trip estimate.
    pub rtt: Duration,
    /// UDP payload bytes sent on this connection.
    pub bytes_sent: u64,
    /// UDP payload bytes received on this connection.
    pub bytes_received: u64,
}

/// Optional per-request metadata.
#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// The sending actor.
    pub from: Option<ActorPath>,
    /// W3C traceparent of the caller's span.
    pub traceparent: Option<String>,
}

#[derive(Clone)]
struct Live {
    conn: quinn::Connection,
    incarnation: u64,
}

impl Live {
    fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

struct Peer {
    addr: Option<SocketAddr>,
    live: Option<Live>,
    dial_lock: Arc<tokio::sync::Mutex<()>>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// A tell queued by the synchronous [`crate::Remote::tell_raw`].
struct TellJob {
    to: ActorPath,
    type_name: String,
    payload: Vec<u8>,
    meta: RequestMeta,
}

struct Inner {
    me: NodeId,
    incarnation: u64,
    cfg: TransportConfig,
    endpoint: quinn::Endpoint,
    client_cfg: quinn::ClientConfig,
    handler: Arc<dyn InboundHandler>,
    peers: Mutex<HashMap<NodeId, Peer>>,
    served: mpsc::UnboundedSender<(Live, NodeId)>,
    tells: mpsc::UnboundedSender<TellJob>,
    events: broadcast::Sender<PeerEvent>,
    corr: AtomicU64,
    ping_hook: Mutex<Option<PingHook>>,
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// The node's QUIC endpoint and connection manager (cheap to clone).
///
/// Owns background tasks: call [`Transport::shutdown`] when the node stops
/// (the owning actor does it in `post_stop`).
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node", &self.inner.me)
            .field("incarnation", &self.inner.incarnation)
            .finish()
    }
}

fn quic_transport(cfg: &TransportConfig) -> Result<Arc<quinn::TransportConfig>, TransportError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(cfg.keep_alive));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(cfg.idle_timeout)
            .map_err(|e| TransportError::Config(format!("idle_timeout: {e}")))?,
    ));
    t.max_concurrent_bidi_streams(VarInt::from_u32(cfg.max_streams));
    t.max_concurrent_uni_streams(VarInt::from_u32(cfg.max_streams));
    Ok(Arc::new(t))
}

fn unreachable(node: &NodeId, reason: impl std::fmt::Display) -> RemoteError {
    RemoteError::PeerUnreachable {
        node: node.to_string(),
        reason: reason.to_string(),
    }
}

/// Maps a connection error seen while dialling/handshaking to what the caller sees.
fn handshake_error(node: &str, e: &quinn::ConnectionError) -> RemoteError {
    if let quinn::ConnectionError::ApplicationClosed(close) = e {
        let reason = String::from_utf8_lossy(&close.reason).into_owned();
        return RemoteError::Refused(reason);
    }
    if let quinn::ConnectionError::TransportError(_) | quinn::ConnectionError::ConnectionClosed(_) =
        e
    {
        // TLS failures (unknown CA, bad certificate) arrive as transport errors.
        return RemoteError::Refused(e.to_string());
    }
    RemoteError::PeerUnreachable {
        node: node.to_string(),
        reason: e.to_string(),
    }
}

/// Classifies a failed stream read/write on `conn`.
fn stream_error(node: &NodeId, conn: &quinn::Connection, e: &dyn std::fmt::Display) -> RemoteError {
    match conn.close_reason() {
        Some(reason) => unreachable(node, format!("connection lost: {reason}")),
        None => RemoteError::BadFrame(format!("stream failed: {e}")),
    }
}

fn decode_hello(head: &[u8]) -> Result<Hello, (u32, String)> {
    // The version is the first field: read it alone so that a peer with another
    // layout still gets "version mismatch" rather than "malformed".
    let (version, _) = postcard::take_from_bytes::<u16>(head)
        .map_err(|e| (close_codes::HANDSHAKE, format!("malformed hello: {e}")))?;
    if version != PROTOCOL_VERSION {
        return Err((
            close_codes::VERSION,
            RemoteError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: version,
            }
            .to_string(),
        ));
    }
    postcard::from_bytes(head)
        .map_err(|e| (close_codes::HANDSHAKE, format!("malformed hello: {e}")))
}

impl Transport {
    /// Binds the endpoint on `cfg.listen` and starts accepting peers.
    ///
    /// `handler` receives every envelope addressed to this node.
    pub fn bind(
        me: NodeId,
        incarnation: u64,
        tls_files: &TlsFiles,
        cfg: TransportConfig,
        handler: Arc<dyn InboundHandler>,
    ) -> Result<Self, TransportError> {
        // Our own certificate must carry our id: catch a wrong --tls-dir at start.
        let own = tls_files
            .chain
            .first()
            .ok_or(TransportError::Tls(tls::TlsError::NoPeerCert))?;
        tls::verify_chain(&tls_files.ca, own)?;
        tls::verify_peer_id(own, &me)?;

        let transport = quic_transport(&cfg)?;
        let server_tls = tls::server_config(tls_files)?;
        let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
            QuicServerConfig::try_from(server_tls)
                .map_err(|e| TransportError::Config(e.to_string()))?,
        ));
        server_cfg.transport_config(transport.clone());
        let client_tls = tls::client_config(tls_files)?;
        let mut client_cfg = quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(client_tls)
                .map_err(|e| TransportError::Config(e.to_string()))?,
        ));
        client_cfg.transport_config(transport);
        let endpoint = quinn::Endpoint::server(server_cfg, cfg.listen).map_err(|source| {
            TransportError::Bind {
                addr: cfg.listen,
                source,
            }
        })?;
        let (served_tx, served_rx) = mpsc::unbounded_channel();
        let (tells_tx, tells_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(Inner {
            me,
            incarnation,
            cfg,
            endpoint,
            client_cfg,
            handler,
            peers: Mutex::new(HashMap::new()),
            served: served_tx,
            tells: tells_tx,
            events,
            corr: AtomicU64::new(1),
            ping_hook: Mutex::new(None),
            driver: Mutex::new(None),
        });
        let driver = tokio::spawn(drive(inner.clone(), served_rx, tells_rx));
        *inner.driver.lock() = Some(driver);
        Ok(Self { inner })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.me
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// The address the endpoint is bound to (the real port when `listen` had port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Subscribes to peer connection events.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.inner.events.subscribe()
    }

    /// Records (or updates) the address of a known peer, e.g. from discovery.
    pub fn add_peer(&self, node: NodeId, addr: SocketAddr) {
        let mut peers = self.inner.peers.lock();
        let p = peers
            .entry(node)
            .or_insert_with(|| self.inner.new_peer(None));
        if p.addr != Some(addr) {
            p.addr = Some(addr);
            // A new address deserves an immediate attempt.
            p.retry_at = None;
        }
    }

    /// Peers with a live connection, with their incarnations.
    pub fn connected(&self) -> Vec<(NodeId, u64)> {
        let peers = self.inner.peers.lock();
        let mut v: Vec<_> = peers
            .iter()
            .filter_map(|(n, p)| {
                p.live
                    .as_ref()
                    .filter(|l| l.is_open())
                    .map(|l| (n.clone(), l.incarnation))
            })
            .collect();
        v.sort();
        v
    }

    /// Live numbers of every open peer connection, for metrics. Byte counts
    /// are the connection's own: they restart at zero when a connection is
    /// replaced (Prometheus' `rate()` treats that as a counter reset).
    pub fn peer_stats(&self) -> Vec<PeerStats> {
        let peers = self.inner.peers.lock();
        let mut v: Vec<PeerStats> = peers
            .iter()
            .filter_map(|(n, p)| {
                let l = p.live.as_ref().filter(|l| l.is_open())?;
                let s = l.conn.stats();
                Some(PeerStats {
                    node: n.clone(),
                    rtt: l.conn.rtt(),
                    bytes_sent: s.udp_tx.bytes,
                    bytes_received: s.udp_rx.bytes,
                })
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    /// Dials an address whose node id is not known yet (a static seed) and
    /// returns the peer's verified id and incarnation; the connection is kept.
    pub async fn connect_addr(&self, addr: SocketAddr) -> Result<(NodeId, u64), RemoteError> {
        let (live, hello) = self.inner.dial(addr, None).await?;
        let node = hello.node.clone();
        self.inner.adopt(node.clone(), Some(addr), live.clone());
        Ok((node, live.incarnation))
    }

    /// Closes the connection to `node` (e.g. membership declared it dead):
    /// its in-flight requests fail at once with `PeerUnreachable`.
    pub fn disconnect(&self, node: &NodeId, reason: &str) {
        let live = self
            .inner
            .peers
            .lock()
            .get_mut(node)
            .and_then(|p| p.live.take());
        if let Some(l) = live {
            l.conn
                .close(VarInt::from_u32(close_codes::GOING_AWAY), reason.as_bytes());
        }
    }

    /// Sends `payload` (a postcard-encoded message of type `type_name`) to the
    /// actor at `to` on another node and waits for its reply until `deadline`.
    pub async fn ask(
        &self,
        to: ActorPath,
        type_name: &str,
        payload: Vec<u8>,
        deadline: Instant,
        meta: RequestMeta,
    ) -> Result<Vec<u8>, RemoteError> {
        let inner = self.inner.clone();
        let timeout = RemoteError::Timeout {
            path: to.to_string(),
            timeout_ms: ms_until(deadline),
        };
        let fut = async move {
            let live = inner.connection(&to.node).await?;
            inner.check_incarnation(&to, &live)?;
            let (mut send, mut recv) = live
                .conn
                .open_bi()
                .await
                .map_err(|e| unreachable(&to.node, format!("connection lost: {e}")))?;
            let corr_id = inner.corr.fetch_add(1, Ordering::Relaxed);
            let header = inner.header(&to, type_name, corr_id, deadline, meta, true);
            let mut chunks = frame::encode(&header, Bytes::from(payload))
                .map_err(|e| RemoteError::BadFrame(e.to_string()))?;
            send.write_all_chunks(&mut chunks)
                .await
                .map_err(|e| write_error(&to.node, &live.conn, e))?;
            // The peer may already have reset the stream; finishing then fails harmlessly.
            let _ = send.finish();
            let (reply, body): (ReplyHeader, Vec<u8>) =
                frame::read_stream_frame(&mut recv, inner.cfg.max_payload)
                    .await
                    .map_err(|e| read_error(&to.node, &live.conn, &e))?;
            if reply.corr_id != corr_id {
                return Err(RemoteError::BadFrame(format!(
                    "reply for request {} on the stream of request {corr_id}",
                    reply.corr_id
                )));
            }
            reply.status.map(|()| body)
        };
        match tokio::time::timeout_at(deadline.into(), fut).await {
            Ok(r) => r,
            Err(_) => Err(timeout),
        }
    }

    /// Sends a one-way message to the actor at `to`. Returns once the frame is
    /// handed to QUIC; delivery is not confirmed.
    pub async fn tell(
        &self,
        to: ActorPath,
        type_name: &str,
        payload: Vec<u8>,
        meta: RequestMeta,
    ) -> Result<(), RemoteError> {
        let deadline = Instant::now() + self.inner.cfg.connect_timeout * 2;
        let inner = self.inner.clone();
        let timeout = RemoteError::Timeout {
            path: to.to_string(),
            timeout_ms: ms_until(deadline),
        };
        let fut = async move {
            let live = inner.connection(&to.node).await?;
            inner.check_incarnation(&to, &live)?;
            let mut send = live
                .conn
                .open_uni()
                .await
                .map_err(|e| unreachable(&to.node, format!("connection lost: {e}")))?;
            let corr_id = inner.corr.fetch_add(1, Ordering::Relaxed);
            let header = inner.header(&to, type_name, corr_id, deadline, meta, false);
            let mut chunks = frame::encode(&header, Bytes::from(payload))
                .map_err(|e| RemoteError::BadFrame(e.to_string()))?;
            send.write_all_chunks(&mut chunks)
                .await
                .map_err(|e| write_error(&to.node, &live.conn, e))?;
            let _ = send.finish();
            Ok(())
        };
        match tokio::time::timeout_at(deadline.into(), fut).await {
            Ok(r) => r,
            Err(_) => Err(timeout),
        }
    }

    /// Round trip to the peer's transport itself (no actor involved): the
    /// heartbeat used by membership. Returns the peer's incarnation.
    pub async fn ping(&self, node: &NodeId, deadline: Instant) -> Result<u64, RemoteError> {
        Ok(self.ping_with(node, Vec::new(), deadline).await?.0)
    }

    /// A ping carrying `payload` to the peer's [`PingHook`]; returns the peer's
    /// incarnation and the hook's answer (empty if it has none).
    pub async fn ping_with(
        &self,
        node: &NodeId,
        payload: Vec<u8>,
        deadline: Instant,
    ) -> Result<(u64, Vec<u8>), RemoteError> {
        let to = ActorPath::root(node.clone(), 0);
        let body = self
            .ask(to, PING_TYPE, payload, deadline, RequestMeta::default())
            .await?;
        postcard::from_bytes(&body).map_err(|e| RemoteError::BadFrame(e.to_string()))
    }

    /// Installs the hook that answers inbound pings' payloads (membership gossip).
    pub fn set_ping_hook(&self, hook: PingHook) {
        *self.inner.ping_hook.lock() = Some(hook);
    }

    /// Closes every connection, stops accepting, and aborts all transport tasks.
    pub fn shutdown(&self) {
        self.inner.endpoint.close(
            VarInt::from_u32(close_codes::SHUTDOWN),
            b"node shutting down",
        );
        if let Some(d) = self.inner.driver.lock().take() {
            d.abort();
        }
        self.inner.peers.lock().clear();
        // The hook may hold a clone of this transport: break the cycle so the
        // endpoint (and its UDP port) is released once the last handle goes.
        *self.inner.ping_hook.lock() = None;
    }

    /// Queues a one-way message without waiting (the synchronous `tell_raw`
    /// contract); the driver task sends it. Fails only if shut down.
    pub fn tell_queued(
        &self,
        to: ActorPath,
        type_name: &str,
        payload: Vec<u8>,
        meta: RequestMeta,
    ) -> Result<(), RemoteError> {
        self.inner
            .tells
            .send(TellJob {
                to,
                type_name: type_name.to_string(),
                payload,
                meta,
            })
            .map_err(|_| RemoteError::Shutdown)
    }

    /// Raw access for tests and the benchmark: the underlying QUIC connection to `node`.
    #[doc(hidden)]
    pub async fn raw_connection(&self, node: &NodeId) -> Result<quinn::Connection, RemoteError> {
        Ok(self.inner.connection(node).await?.conn)
    }
}

fn write_error(node: &NodeId, conn: &quinn::Connection, e: quinn::WriteError) -> RemoteError {
    match e {
        quinn::WriteError::Stopped(code) => stopped_code(code),
        other => stream_error(node, conn, &other),
    }
}

fn read_error(node: &NodeId, conn: &quinn::Connection, e: &FrameError) -> RemoteError {
    match e {
        FrameError::Io(io) => {
            // quinn reports a reset stream as an io error wrapping ReadError::Reset.
            if let Some(quinn::ReadError::Reset(code)) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<quinn::ReadError>())
            {
                return stopped_code(*code);
            }
            stream_error(node, conn, io)
        }
        FrameError::Eof => stream_error(node, conn, &"stream closed without a reply"),
        other => other.to_remote(),
    }
}

fn stopped_code(code: VarInt) -> RemoteError {
    match u32::try_from(code.into_inner()) {
        Ok(codes::TOO_LARGE) => RemoteError::BadFrame("peer refused the frame as too large".into()),
        Ok(codes::MALFORMED) => RemoteError::BadFrame("peer could not decode the frame".into()),
        _ => RemoteError::BadFrame(format!("peer closed the stream (code {code})")),
    }
}

impl Inner {
    fn new_peer(&self, addr: Option<SocketAddr>) -> Peer {
        Peer {
            addr,
            live: None,
            dial_lock: Arc::new(tokio::sync::Mutex::new(())),
            backoff: Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max),
            retry_at: None,
            last_error: None,
        }
    }

    fn header(
        &self,
        to: &ActorPath,
        type_name: &str,
        corr_id: u64,
        deadline: Instant,
        meta: RequestMeta,
        want_reply: bool,
    ) -> RequestHeader {
        let left = deadline.saturating_duration_since(Instant::now());
        RequestHeader {
            version: PROTOCOL_VERSION,
            from: meta.from,
            to: to.clone(),
            type_name: type_name.to_string(),
            corr_id,
            deadline_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1),
            traceparent: meta.traceparent,
            want_reply,
        }
    }

    fn check_incarnation(&self, to: &ActorPath, live: &Live) -> Result<(), RemoteError> {
        if to.incarnation != 0 && to.incarnation != live.incarnation {
            return Err(RemoteError::StaleIncarnation {
                path: to.to_string(),
                wanted: to.incarnation,
                current: live.incarnation,
            });
        }
        Ok(())
    }

    fn live(&self, node: &NodeId) -> Option<Live> {
        self.peers
            .lock()
            .get(node)
            .and_then(|p| p.live.clone())
            .filter(Live::is_open)
    }

    /// The live connection to `node`, dialling it (once, with backoff) if needed.
    async fn connection(self: &Arc<Self>, node: &NodeId) -> Result<Live, RemoteError> {
        if let Some(l) = self.live(node) {
            return Ok(l);
        }
        let lock = {
            let peers = self.peers.lock();
            let p = peers
                .get(node)
                .ok_or_else(|| RemoteError::UnknownPeer(node.to_string()))?;
            p.dial_lock.clone()
        };
        let _dialling = lock.lock().await;
        // Someone else may have connected (or the peer dialled us) meanwhile.
        if let Some(l) = self.live(node) {
            return Ok(l);
        }
        let addr = {
            let peers = self.peers.lock();
            let p = peers
                .get(node)
                .ok_or_else(|| RemoteError::UnknownPeer(node.to_string()))?;
            if let Some(at) = p.retry_at {
                let now = Instant::now();
                if now < at {
                    return Err(unreachable(
                        node,
                        format!(
                            "reconnect backoff, next attempt in {} ms; last error: {}",
                            (at - now).as_millis(),
                            p.last_error.as_deref().unwrap_or("-")
                        ),
                    ));
                }
            }
            p.addr
                .ok_or_else(|| RemoteError::UnknownPeer(node.to_string()))?
        };
        match self.dial(addr, Some(node)).await {
            Ok((live, _hello)) => {
                self.adopt(node.clone(), Some(addr), live.clone());
                Ok(live)
            }
            Err(e) => {
                let mut peers = self.peers.lock();
                if let Some(p) = peers.get_mut(node) {
                    let wait = p.backoff.fail(rand::random::<f64>());
                    p.retry_at = Some(Instant::now() + wait);
                    p.last_error = Some(e.to_string());
                }
                debug!(peer = %node, %addr, error = %e, "dial failed");
                Err(match e {
                    RemoteError::PeerUnreachable { .. } => e,
                    other => unreachable(node, other),
                })
            }
        }
    }

    /// Dials `addr`, runs the hello exchange and verifies the peer's identity.
    async fn dial(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<&NodeId>,
    ) -> Result<(Live, Hello), RemoteError> {
        let label = expected
            .map(|n| n.to_string())
            .unwrap_or_else(|| addr.to_string());
        let fut = async {
            // The name is not checked by TLS (see tls.rs); identity is checked below.
            let connecting = self
                .endpoint
                .connect_with(self.client_cfg.clone(), addr, "peer.node.abi")
                .map_err(|e| RemoteError::PeerUnreachable {
                    node: label.clone(),
                    reason: e.to_string(),
                })?;
            let conn = connecting.await.map_err(|e| handshake_error(&label, &e))?;
            let (mut send, mut recv) = conn
                .open_bi()
                .await
                .map_err(|e| handshake_error(&label, &e))?;
            let hello = Hello {
                version: PROTOCOL_VERSION,
                node: self.me.clone(),
                incarnation: self.incarnation,
            };
            let mut chunks = frame::encode(&hello, Bytes::new())
                .map_err(|e| RemoteError::BadFrame(e.to_string()))?;
            let written = send.write_all_chunks(&mut chunks).await;
            let _ = send.finish();
            if let Err(e) = written {
                return Err(match conn.close_reason() {
                    Some(r) => handshake_error(&label, &r),
                    None => RemoteError::Refused(e.to_string()),
                });
            }
            let head = match frame::read_raw_header(&mut recv, 0).await {
                Ok((head, _)) => head,
                Err(e) => {
                    // A refusal arrives as a connection close with a reason.
                    let closed =
                        tokio::time::timeout(Duration::from_millis(500), conn.closed()).await;
                    return Err(match closed {
                        Ok(reason) => handshake_error(&label, &reason),
                        Err(_) => RemoteError::Refused(format!("bad hello reply: {e}")),
                    });
                }
            };
            let theirs = match decode_hello(&head) {
                Ok(h) => h,
                Err((code, reason)) => {
                    conn.close(VarInt::from_u32(code), reason.as_bytes());
                    return Err(if code == close_codes::VERSION {
                        version_error(&head)
                    } else {
                        RemoteError::Refused(reason)
                    });
                }
            };
            if let Err(reason) = self.check_identity(&conn, &theirs, expected) {
                conn.close(VarInt::from_u32(close_codes::IDENTITY), reason.as_bytes());
                return Err(RemoteError::Refused(reason));
            }
            Ok((
                Live {
                    conn,
                    incarnation: theirs.incarnation,
                },
                theirs,
            ))
        };
        match tokio::time::timeout(self.cfg.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(RemoteError::PeerUnreachable {
                node: label,
                reason: format!("connect timed out after {:?}", self.cfg.connect_timeout),
            }),
        }
    }

    /// The peer's certificate must carry the id it claims, and that id must be
    /// the expected one (when dialling a known node) and not our own.
    fn check_identity(
        &self,
        conn: &quinn::Connection,
        hello: &Hello,
        expected: Option<&NodeId>,
    ) -> Result<(), String> {
        let cert = tls::peer_cert(conn).map_err(|e| e.to_string())?;
        tls::verify_peer_id(&cert, &hello.node).map_err(|e| e.to_string())?;
        if let Some(exp) = expected
            && exp != &hello.node
        {
            return Err(format!(
                "expected node {exp} at {}, found node {}",
                conn.remote_address(),
                hello.node
            ));
        }
        if hello.node == self.me {
            return Err(format!("peer claims our own node id {}", self.me));
        }
        Ok(())
    }

    /// Makes `live` the connection for `node` and has the driver serve its streams.
    fn adopt(self: &Arc<Self>, node: NodeId, addr: Option<SocketAddr>, live: Live) {
        let replaced = {
            let mut peers = self.peers.lock();
            let p = peers
                .entry(node.clone())
                .or_insert_with(|| self.new_peer(addr));
            if p.addr.is_none() {
                p.addr = addr;
            }
            p.backoff.reset();
            p.retry_at = None;
            p.last_error = None;
            match &p.live {
                // Keep an existing open connection to the same life of the peer
                // (both sides dialled at once); a restarted peer replaces it.
                Some(old) if old.is_open() && old.incarnation == live.incarnation => None,
                _ => p.live.replace(live.clone()),
            }
        };
        if let Some(old) = replaced
            && old.is_open()
        {
            old.conn.close(
                VarInt::from_u32(close_codes::GOING_AWAY),
                b"replaced by a connection to a newer incarnation",
            );
        }
        let _ = self.events.send(PeerEvent::Connected {
            node: node.clone(),
            incarnation: live.incarnation,
            addr: live.conn.remote_address(),
        });
        // If the driver is gone we are shutting down; the connection then just closes.
        let _ = self.served.send((live, node));
    }

    /// Server side of the hello exchange on an accepted connection.
    async fn accept(self: Arc<Self>, incoming: quinn::Incoming) -> Result<(Live, NodeId), String> {
        let remote = incoming.remote_address();
        let fut = async {
            let conn = incoming
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let (mut send, mut recv) = conn
                .accept_bi()
                .await
                .map_err(|e| format!("no hello stream: {e}"))?;
            let head = match frame::read_raw_header(&mut recv, 0).await {
                Ok((h, _)) => h,
                Err(e) => {
                    let reason = format!("bad hello: {e}");
                    conn.close(VarInt::from_u32(close_codes::HANDSHAKE), reason.as_bytes());
                    return Err(reason);
                }
            };
            let hello = match decode_hello(&head) {
                Ok(h) => h,
                Err((code, reason)) => {
                    conn.close(VarInt::from_u32(code), reason.as_bytes());
                    return Err(reason);
                }
            };
            if let Err(reason) = self.check_identity(&conn, &hello, None) {
                conn.close(VarInt::from_u32(close_codes::IDENTITY), reason.as_bytes());
                return Err(reason);
            }
            let ours = Hello {
                version: PROTOCOL_VERSION,
                node: self.me.clone(),
                incarnation: self.incarnation,
            };
            let mut chunks = frame::encode(&ours, Bytes::new()).map_err(|e| e.to_string())?;
            send.write_all_chunks(&mut chunks)
                .await
                .map_err(|e| format!("hello reply: {e}"))?;
            let _ = send.finish();
            Ok((
                Live {
                    conn,
                    incarnation: hello.incarnation,
                },
                hello.node,
            ))
        };
        match tokio::time::timeout(self.cfg.connect_timeout, fut).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => {
                warn!(%remote, reason = %e, "refused inbound connection");
                Err(e)
            }
            Err(_) => {
                warn!(%remote, "inbound handshake timed out");
                Err("handshake timed out".into())
            }
        }
    }

    /// Serves the streams a peer opens on `live` until the connection closes.
    async fn serve(self: Arc<Self>, live: Live, node: NodeId) {
        let conn = live.conn.clone();
        // One-way streams get their own task, so that each accepted request
        // stream wakes only the loop that accepts it (the connection state is
        // a lock shared by every stream). Dropping `_uni` aborts that task.
        let uni = tokio::spawn(self.clone().serve_uni(conn.clone(), node.clone()));
        let _uni = AbortOnDrop(uni);
        let mut streams = JoinSet::new();
        let reason = loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    streams.spawn(self.clone().serve_request(node.clone(), Some(send), recv));
                    // Reap finished ones without a wake-up per completion.
                    while streams.try_join_next().is_some() {}
                }
                Err(e) => break e,
            }
        };
        let was_current = {
            let mut peers = self.peers.lock();
            match peers.get_mut(&node) {
                Some(p)
                    if p.live
                        .as_ref()
                        .is_some_and(|l| l.conn.stable_id() == conn.stable_id()) =>
                {
                    p.live = None;
                    true
                }
                _ => false,
            }
        };
        if was_current {
            info!(peer = %node, %reason, "peer connection closed");
            let _ = self.events.send(PeerEvent::Disconnected {
                node,
                reason: reason.to_string(),
            });
        }
    }

    /// Serves the one-way (tell) streams of a connection until it closes.
    async fn serve_uni(self: Arc<Self>, conn: quinn::Connection, node: NodeId) {
        let mut streams = JoinSet::new();
        while let Ok(recv) = conn.accept_uni().await {
            streams.spawn(self.clone().serve_request(node.clone(), None, recv));
            while streams.try_join_next().is_some() {}
        }
    }

    /// Reads one request frame, delivers it, and writes the reply (bidi streams).
    async fn serve_request(
        self: Arc<Self>,
        peer: NodeId,
        mut send: Option<quinn::SendStream>,
        mut recv: quinn::RecvStream,
    ) {
        let (header, payload): (RequestHeader, Vec<u8>) =
            match frame::read_stream_frame(&mut recv, self.cfg.max_payload).await {
                Ok(x) => x,
                Err(e) => {
                    // Close only this stream; the connection and the node carry on.
                    warn!(%peer, error = %e, "refusing frame");
                    let code = VarInt::from_u32(e.code());
                    let _ = recv.stop(code);
                    if let Some(s) = send.as_mut() {
                        let _ = s.reset(code);
                    }
                    return;
                }
            };
        let corr_id = header.corr_id;
        let result = self.deliver(peer, header, payload).await;
        let Some(mut send) = send else {
            if let Err(e) = result {
                debug!(error = %e, "tell not delivered");
            }
            return;
        };
        let (status, body) = match result {
            Ok(body) => (Ok(()), body),
            Err(e) => (Err(e), Vec::new()),
        };
        let reply = ReplyHeader { corr_id, status };
        match frame::encode(&reply, Bytes::from(body)) {
            Ok(mut chunks) => {
                if let Err(e) = send.write_all_chunks(&mut chunks).await {
                    debug!(error = %e, "reply not sent");
                }
                let _ = send.finish();
            }
            Err(e) => {
                warn!(error = %e, "reply not encodable");
                let _ = send.reset(VarInt::from_u32(codes::MALFORMED));
            }
        }
    }

    async fn deliver(
        &self,
        peer: NodeId,
        h: RequestHeader,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, RemoteError> {
        if h.version != PROTOCOL_VERSION {
            return Err(RemoteError::VersionMismatch {
                ours: PROTOCOL_VERSION,
                theirs: h.version,
            });
        }
        if h.to.node != self.me {
            return Err(RemoteError::NoSuchActor(format!(
                "{} (this is node {})",
                h.to, self.me
            )));
        }
        if h.to.incarnation != 0 && h.to.incarnation != self.incarnation {
            return Err(RemoteError::StaleIncarnation {
                path: h.to.to_string(),
                wanted: h.to.incarnation,
                current: self.incarnation,
            });
        }
        if h.type_name == PING_TYPE && h.to.name.is_empty() {
            let hook = self.ping_hook.lock().clone();
            let answer = hook.map(|f| f(&peer, &payload)).unwrap_or_default();
            return postcard::to_stdvec(&(self.incarnation, answer))
                .map_err(|e| RemoteError::BadFrame(e.to_string()));
        }
        let deadline = Instant::now() + Duration::from_millis(h.deadline_ms);
        let timeout = RemoteError::Timeout {
            path: h.to.to_string(),
            timeout_ms: h.deadline_ms,
        };
        let msg = Inbound {
            from_node: peer,
            from: h.from,
            to: h.to,
            type_name: h.type_name,
            payload,
            deadline,
            traceparent: h.traceparent,
            want_reply: h.want_reply,
        };
        let mut fut = self.handler.handle(msg);
        // Most handlers hand the message to a mailbox and are ready at once:
        // skip arming a timer for those.
        if let Some(r) = futures::FutureExt::now_or_never(&mut fut) {
            return r;
        }
        match tokio::time::timeout_at(deadline.into(), fut).await {
            Ok(r) => r,
            Err(_) => Err(timeout),
        }
    }
}

fn ms_until(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

fn version_error(head: &[u8]) -> RemoteError {
    match postcard::take_from_bytes::<u16>(head) {
        Ok((theirs, _)) => RemoteError::VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        },
        Err(e) => RemoteError::BadFrame(e.to_string()),
    }
}

/// Aborts a task when dropped (the task belongs to whoever holds this).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The driver: accepts connections and owns every connection task.
async fn drive(
    inner: Arc<Inner>,
    mut served: mpsc::UnboundedReceiver<(Live, NodeId)>,
    mut tells: mpsc::UnboundedReceiver<TellJob>,
) {
    let mut conns: JoinSet<()> = JoinSet::new();
    let mut handshakes: JoinSet<Result<(Live, NodeId), String>> = JoinSet::new();
    loop {
        tokio::select! {
            incoming = inner.endpoint.accept() => match incoming {
                Some(incoming) => {
                    handshakes.spawn(inner.clone().accept(incoming));
                }
                None => break,
            },
            Some(done) = handshakes.join_next(), if !handshakes.is_empty() => {
                if let Ok(Ok((live, node))) = done {
                    // One UDP socket dials and listens, so the source address of
                    // an inbound connection is the peer's listen address.
                    let addr = live.conn.remote_address();
                    // adopt() hands the connection back through `served`.
                    inner.adopt(node, Some(addr), live);
                }
            }
            Some((live, node)) = served.recv() => {
                conns.spawn(inner.clone().serve(live, node));
            }
            Some(job) = tells.recv() => {
                let t = Transport { inner: inner.clone() };
                conns.spawn(async move {
                    if let Err(e) = t.tell(job.to, &job.type_name, job.payload, job.meta).await {
                        debug!(error = %e, "queued tell failed");
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
