//! The I/O shell around [`Membership`]: registers with discovery, dials
//! seeds, sends heartbeats over the transport, and publishes membership events.
//!
//! Heartbeats are the transport's own ping (no actor involved) carrying a
//! small gossip payload: the sender's record and the alive members it knows.
//! So a cluster formed from static seeds converges to a full mesh (C learns
//! about B through A), and the receiver of a ping also counts it as a heartbeat
//! from the sender.
//!
//! When a member is declared dead its connection is closed, so requests in
//! flight to it fail at once with "peer unreachable".
//!
//! The background task is owned by [`ClusterHandle`] (aborted on drop or
//! [`ClusterHandle::leave`]); the node's membership actor owns the handle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_transport::{PeerEvent, Transport};
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::{
    Discovery, DiscoveryError, DiscoveryEvent, MemberInfo, Membership, MembershipConfig,
    MembershipEvent, NodeView, Registration, Status,
};

/// Starts cluster membership for a node.
#[derive(Debug)]
pub struct Cluster;

/// A running membership service: subscribe to events, read the node table, leave.
pub struct ClusterHandle {
    table: Arc<Mutex<Membership>>,
    events: broadcast::Sender<MembershipEvent>,
    task: Option<tokio::task::JoinHandle<()>>,
    registration: Option<Registration>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").finish_non_exhaustive()
    }
}

/// What a heartbeat carries: the sender's record first, then alive members it knows.
type Gossip = Vec<MemberInfo>;

impl Cluster {
    /// Registers `me` with `discovery`, starts heartbeats and watching.
    ///
    /// Returns once registered; seeds that are down are retried every heartbeat.
    pub async fn start(
        transport: Transport,
        discovery: Arc<dyn Discovery>,
        me: MemberInfo,
        cfg: MembershipConfig,
    ) -> Result<ClusterHandle, DiscoveryError> {
        let (events, _) = broadcast::channel(1024);
        Self::start_with_events(transport, discovery, me, cfg, events).await
    }

    /// Like [`Cluster::start`], publishing into an existing channel (one that
    /// outlives restarts of the membership actor).
    pub async fn start_with_events(
        transport: Transport,
        discovery: Arc<dyn Discovery>,
        me: MemberInfo,
        cfg: MembershipConfig,
        events: broadcast::Sender<MembershipEvent>,
    ) -> Result<ClusterHandle, DiscoveryError> {
        // Peers dial what we announce: 0.0.0.0 would send them nowhere.
        if me.addr.ip().is_unspecified() || me.addr.port() == 0 {
            return Err(DiscoveryError::BadAddress {
                addr: me.addr.to_string(),
                reason: "announce a routable address (set an advertise address when listening on 0.0.0.0)".into(),
            });
        }
        let table = Arc::new(Mutex::new(Membership::new(me.clone(), cfg)));
        let registration = discovery.register(me.clone()).await?;
        let watch = discovery.watch().await?;
        let seeds = discovery.seeds().await?;

        // Inbound pings: count as heartbeats from the sender and merge its gossip.
        {
            let table = table.clone();
            let events = events.clone();
            let t = transport.clone();
            transport.set_ping_hook(Arc::new(move |from, payload| {
                let now = Instant::now();
                let mut tbl = table.lock();
                if let Ok(gossip) = postcard::from_bytes::<Gossip>(payload) {
                    let mut out = Vec::new();
                    for (i, m) in gossip.into_iter().enumerate() {
                        if i == 0 && &m.id == from {
                            out.extend(tbl.heard_from(m, now));
                        } else if m.id != t.node_id().clone() {
                            t.add_peer(m.id.clone(), m.addr);
                            out.extend(tbl.discovered(m, now));
                        }
                    }
                    publish(&events, &t, out);
                }
                postcard::to_stdvec(&gossip_of(&tbl, tbl.me())).unwrap_or_default()
            }));
        }

        let shell = Shell {
            transport,
            table: table.clone(),
            events: events.clone(),
            unresolved: Vec::new(),
        };
        let task = tokio::spawn(shell.run(seeds, watch));
        Ok(ClusterHandle {
            table,
            events,
            task: Some(task),
            registration: Some(registration),
        })
    }
}

fn gossip_of(tbl: &Membership, me: &MemberInfo) -> Gossip {
    let mut g = vec![me.clone()];
    for v in tbl.view().into_iter().skip(1) {
        if v.status != Status::Alive {
            continue;
        }
        if let Ok(addr) = v.addr.parse() {
            g.push(MemberInfo {
                id: v.id,
                addr,
                incarnation: v.incarnation,
                labels: v.labels,
            });
        }
    }
    g
}

fn publish(events: &broadcast::Sender<MembershipEvent>, t: &Transport, evs: Vec<MembershipEvent>) {
    for e in evs {
        match &e {
            MembershipEvent::Joined(m) => {
                info!(node = %m.id, incarnation = m.incarnation, addr = %m.addr, "member joined")
            }
            MembershipEvent::Suspect(id) => warn!(node = %id, "member suspect"),
            MembershipEvent::Recovered(id) => info!(node = %id, "member recovered"),
            MembershipEvent::Dead(id) => {
                warn!(node = %id, "member dead");
                // Fail its in-flight requests now rather than at their deadlines.
                t.disconnect(id, "declared dead by membership");
            }
            MembershipEvent::Left(id) => {
                info!(node = %id, "member left");
                t.disconnect(id, "left the cluster");
            }
        }
        // No subscriber is fine.
        let _ = events.send(e);
    }
}

struct Shell {
    transport: Transport,
    table: Arc<Mutex<Membership>>,
    events: broadcast::Sender<MembershipEvent>,
    /// Seed addresses whose node id is not known yet (static seeds).
    unresolved: Vec<SocketAddr>,
}

impl Shell {
    async fn run(
        mut self,
        seeds: Vec<crate::Seed>,
        mut watch: BoxStream<'static, Result<DiscoveryEvent, DiscoveryError>>,
    ) {
        let now = Instant::now();
        let mut evs = Vec::new();
        {
            let mut tbl = self.table.lock();
            let me = tbl.me().clone();
            for s in seeds {
                match s.member {
                    Some(m) if m.id == me.id => {}
                    Some(m) => {
                        self.transport.add_peer(m.id.clone(), m.addr);
                        evs.extend(tbl.discovered(m, now));
                    }
                    None if s.addr == me.addr => {}
                    None => self.unresolved.push(s.addr),
                }
            }
        }
        publish(&self.events, &self.transport, evs);

        let mut peers = self.transport.subscribe();
        let interval = self.table.lock().config().heartbeat_interval;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watching = true;
        loop {
            tokio::select! {
                _ = ticker.tick() => self.round(interval).await,
                ev = watch.next(), if watching => match ev {
                    Some(Ok(ev)) => self.on_discovery(ev),
                    Some(Err(e)) => warn!(error = %e, "discovery watch error"),
                    None => watching = false,
                },
                ev = peers.recv() => match ev {
                    Ok(PeerEvent::Connected { node, incarnation, addr }) => {
                        // A verified connection is proof of life (and tells us
                        // about nodes that used us as their seed).
                        let info = MemberInfo { id: node, addr, incarnation, labels: BTreeMap::new() };
                        let evs = self.table.lock().heard_from(info, Instant::now());
                        publish(&self.events, &self.transport, evs);
                    }
                    Ok(PeerEvent::Disconnected { node, reason }) => {
                        debug!(%node, %reason, "connection closed; heartbeats decide");
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }

    fn on_discovery(&mut self, ev: DiscoveryEvent) {
        let now = Instant::now();
        let evs = {
            let mut tbl = self.table.lock();
            match ev {
                DiscoveryEvent::Up(m) => {
                    if m.id == *self.transport.node_id() {
                        return;
                    }
                    self.transport.add_peer(m.id.clone(), m.addr);
                    tbl.discovered(m, now)
                }
                DiscoveryEvent::Down(id) => tbl.left(&id),
            }
        };
        publish(&self.events, &self.transport, evs);
    }

    /// One heartbeat round: resolve unknown seeds, ping every member, advance the clock.
    async fn round(&mut self, interval: Duration) {
        let deadline = Instant::now() + interval.max(Duration::from_millis(200));
        // Seeds: learn their ids by dialling them (verified by their certificates).
        let mut still = Vec::new();
        for addr in std::mem::take(&mut self.unresolved) {
            match tokio::time::timeout_at(deadline.into(), self.transport.connect_addr(addr)).await
            {
                Ok(Ok((id, inc))) => {
                    debug!(%addr, node = %id, "seed resolved");
                    let info = MemberInfo {
                        id,
                        addr,
                        incarnation: inc,
                        labels: BTreeMap::new(),
                    };
                    let evs = self.table.lock().heard_from(info, Instant::now());
                    publish(&self.events, &self.transport, evs);
                }
                Ok(Err(e)) => {
                    debug!(%addr, error = %e, "seed not reachable yet");
                    still.push(addr);
                }
                Err(_) => still.push(addr),
            }
        }
        self.unresolved = still;

        let (targets, gossip) = {
            let tbl = self.table.lock();
            (tbl.heartbeat_targets(), gossip_of(&tbl, tbl.me()))
        };
        let payload = postcard::to_stdvec(&gossip).unwrap_or_default();
        let pings = targets.into_iter().map(|m| {
            let t = self.transport.clone();
            let payload = payload.clone();
            async move {
                let r = t.ping_with(&m.id, payload, deadline).await;
                (m, r)
            }
        });
        let results = futures::future::join_all(pings).await;
        let now = Instant::now();
        let mut evs = Vec::new();
        {
            let mut tbl = self.table.lock();
            for (m, r) in results {
                match r {
                    Ok((incarnation, answer)) => {
                        let info = MemberInfo {
                            incarnation,
                            labels: BTreeMap::new(),
                            ..m
                        };
                        evs.extend(tbl.heard_from(info, now));
                        if let Ok(gossip) = postcard::from_bytes::<Gossip>(&answer) {
                            for g in gossip.into_iter().skip(1) {
                                if g.id != *self.transport.node_id() {
                                    self.transport.add_peer(g.id.clone(), g.addr);
                                    evs.extend(tbl.discovered(g, now));
                                }
                            }
                        }
                    }
                    Err(e) => debug!(node = %m.id, error = %e, "heartbeat failed"),
                }
            }
            evs.extend(tbl.tick(now));
        }
        publish(&self.events, &self.transport, evs);
    }
}

impl ClusterHandle {
    /// Membership events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.events.subscribe()
    }

    /// The node table (`GET /v1/cluster/nodes`), this node first.
    pub fn nodes(&self) -> Vec<NodeView> {
        self.table.lock().view()
    }

    /// Status of one node.
    pub fn status(&self, id: &abi_protocol::NodeId) -> Option<Status> {
        self.table.lock().status(id)
    }

    /// Leaves gracefully: stops heartbeats and removes this node's registration.
    pub async fn leave(mut self) -> Result<(), DiscoveryError> {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        match self.registration.take() {
            Some(r) => r.deregister().await,
            None => Ok(()),
        }
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
