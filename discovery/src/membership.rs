//! Membership and failure detection as a pure state machine.
//!
//! Inputs are events with the time they happened (a heartbeat answered, a
//! node discovered, a node deregistered, a clock tick); outputs are
//! [`MembershipEvent`]s. No sockets, no sleeps: tests inject time, and the
//! I/O shell ([`crate::cluster`]) feeds it real heartbeats.
//!
//! Timing: a member not heard from for `suspect_after` becomes `suspect`;
//! for `dead_after` (measured from the last time it was heard) it becomes
//! `dead`. A newer incarnation of a node is a new life: it (re)joins.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use abi_protocol::NodeId;
use serde::{Deserialize, Serialize};

use crate::MemberInfo;

/// Failure-detection timing, from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipConfig {
    /// How often heartbeats are sent (used by the I/O shell).
    pub heartbeat_interval: Duration,
    /// Silence after which a member is suspect.
    pub suspect_after: Duration,
    /// Silence after which a member is dead (>= `suspect_after`).
    pub dead_after: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_millis(500),
            suspect_after: Duration::from_millis(1500),
            dead_after: Duration::from_secs(4),
        }
    }
}

/// A member's state (the wire type, so the HTTP API and this table agree).
pub use abi_protocol::membership::NodeStatus as Status;

/// What changed, for subscribers (Raft group, placement, gateway routing, dashboard).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipEvent {
    /// A node (or a new life of it) joined.
    Joined(MemberInfo),
    /// A suspect node was heard from again.
    Recovered(NodeId),
    /// A node went silent for `suspect_after`.
    Suspect(NodeId),
    /// A node went silent for `dead_after`.
    Dead(NodeId),
    /// A node left deliberately.
    Left(NodeId),
}

/// One row of `GET /v1/cluster/nodes` (the wire type).
pub use abi_protocol::membership::NodeView;

#[derive(Debug, Clone)]
struct Member {
    info: MemberInfo,
    status: Status,
    last_heard: Instant,
}

/// The membership table of one node.
#[derive(Debug, Clone)]
pub struct Membership {
    me: MemberInfo,
    cfg: MembershipConfig,
    members: BTreeMap<NodeId, Member>,
}

impl Membership {
    /// A table that knows only this node.
    pub fn new(me: MemberInfo, cfg: MembershipConfig) -> Self {
        Self {
            me,
            cfg,
            members: BTreeMap::new(),
        }
    }

    /// This node's own record.
    pub fn me(&self) -> &MemberInfo {
        &self.me
    }

    /// The timing in use.
    pub fn config(&self) -> &MembershipConfig {
        &self.cfg
    }

    /// A heartbeat from `info.id` was answered (or received) at `now`.
    ///
    /// `info` carries the incarnation the peer reported; an older incarnation
    /// than known is a stale message and ignored.
    pub fn heard_from(&mut self, info: MemberInfo, now: Instant) -> Vec<MembershipEvent> {
        if info.id == self.me.id {
            return Vec::new();
        }
        match self.members.get_mut(&info.id) {
            None => {
                self.members.insert(
                    info.id.clone(),
                    Member {
                        info: info.clone(),
                        status: Status::Alive,
                        last_heard: now,
                    },
                );
                vec![MembershipEvent::Joined(info)]
            }
            Some(m) if info.incarnation < m.info.incarnation => Vec::new(),
            Some(m) if info.incarnation > m.info.incarnation => {
                // A new life: whatever the old one was doing is over.
                m.info = merge(&m.info, info);
                m.status = Status::Alive;
                m.last_heard = now;
                vec![MembershipEvent::Joined(m.info.clone())]
            }
            Some(m) => {
                m.last_heard = m.last_heard.max(now);
                let prev = m.status;
                m.info = merge(&m.info, info);
                match prev {
                    Status::Alive => Vec::new(),
                    Status::Suspect => {
                        m.status = Status::Alive;
                        vec![MembershipEvent::Recovered(m.info.id.clone())]
                    }
                    // Declared dead or gone but answering again (a healed
                    // partition): it rejoins, subscribers start over with it.
                    Status::Dead | Status::Left => {
                        m.status = Status::Alive;
                        vec![MembershipEvent::Joined(m.info.clone())]
                    }
                }
            }
        }
    }

    /// Discovery reported `info` (registered in etcd, Consul, or a seed that answered).
    ///
    /// A node we never heard from starts alive with the clock running, so one
    /// that is registered but unreachable is declared dead in due time.
    pub fn discovered(&mut self, info: MemberInfo, now: Instant) -> Vec<MembershipEvent> {
        match self.members.get_mut(&info.id) {
            Some(m) if info.incarnation <= m.info.incarnation => {
                // Addresses and labels may change without a restart.
                if info.incarnation == m.info.incarnation {
                    m.info = merge(&m.info, info);
                }
                Vec::new()
            }
            _ => self.heard_from(info, now),
        }
    }

    /// `id` left deliberately (deregistered from discovery).
    pub fn left(&mut self, id: &NodeId) -> Vec<MembershipEvent> {
        match self.members.get_mut(id) {
            Some(m) if m.status != Status::Left => {
                m.status = Status::Left;
                vec![MembershipEvent::Left(id.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// Advances the clock: members silent for too long become suspect, then dead.
    pub fn tick(&mut self, now: Instant) -> Vec<MembershipEvent> {
        let mut out = Vec::new();
        for m in self.members.values_mut() {
            let silent = now.saturating_duration_since(m.last_heard);
            match m.status {
                Status::Alive | Status::Suspect if silent >= self.cfg.dead_after => {
                    m.status = Status::Dead;
                    out.push(MembershipEvent::Dead(m.info.id.clone()));
                }
                Status::Alive if silent >= self.cfg.suspect_after => {
                    m.status = Status::Suspect;
                    out.push(MembershipEvent::Suspect(m.info.id.clone()));
                }
                _ => {}
            }
        }
        out
    }

    /// Status of `id`, if known (`Alive` for this node itself).
    pub fn status(&self, id: &NodeId) -> Option<Status> {
        if *id == self.me.id {
            return Some(Status::Alive);
        }
        self.members.get(id).map(|m| m.status)
    }

    /// Members to send heartbeats to: everyone not known to have left.
    pub fn heartbeat_targets(&self) -> Vec<MemberInfo> {
        self.members
            .values()
            .filter(|m| m.status != Status::Left)
            .map(|m| m.info.clone())
            .collect()
    }

    /// The table for `GET /v1/cluster/nodes`, this node first.
    pub fn view(&self) -> Vec<NodeView> {
        let row = |info: &MemberInfo, status| NodeView {
            id: info.id.clone(),
            addr: info.addr.to_string(),
            status,
            incarnation: info.incarnation,
            labels: info.labels.clone(),
        };
        std::iter::once(row(&self.me, Status::Alive))
            .chain(self.members.values().map(|m| row(&m.info, m.status)))
            .collect()
    }
}

/// Keeps known labels when a heartbeat carries none (heartbeats are small;
/// labels come from discovery).
fn merge(old: &MemberInfo, new: MemberInfo) -> MemberInfo {
    MemberInfo {
        labels: if new.labels.is_empty() {
            old.labels.clone()
        } else {
            new.labels
        },
        ..new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, inc: u64) -> MemberInfo {
        MemberInfo {
            id: NodeId::new(id).expect("id"),
            addr: "127.0.0.1:7700".parse().expect("addr"),
            incarnation: inc,
            labels: BTreeMap::new(),
        }
    }

    fn table() -> (Membership, Instant) {
        let cfg = MembershipConfig {
            heartbeat_interval: Duration::from_millis(100),
            suspect_after: Duration::from_millis(300),
            dead_after: Duration::from_millis(1000),
        };
        (Membership::new(info("me", 1), cfg), Instant::now())
    }

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    fn id(s: &str) -> NodeId {
        NodeId::new(s).expect("id")
    }

    #[test]
    fn join_suspect_recover_dead() {
        let (mut m, t0) = table();
        assert_eq!(
            m.heard_from(info("b", 1), t0),
            vec![MembershipEvent::Joined(info("b", 1))]
        );
        assert!(m.heard_from(info("b", 1), ms(t0, 100)).is_empty());
        assert!(m.tick(ms(t0, 399)).is_empty());
        assert_eq!(m.tick(ms(t0, 400)), vec![MembershipEvent::Suspect(id("b"))]);
        assert!(m.tick(ms(t0, 500)).is_empty(), "suspect reported once");
        assert_eq!(
            m.heard_from(info("b", 1), ms(t0, 600)),
            vec![MembershipEvent::Recovered(id("b"))]
        );
        assert_eq!(m.tick(ms(t0, 900)), vec![MembershipEvent::Suspect(id("b"))]);
        assert!(m.tick(ms(t0, 1599)).is_empty());
        assert_eq!(m.tick(ms(t0, 1600)), vec![MembershipEvent::Dead(id("b"))]);
        assert!(m.tick(ms(t0, 5000)).is_empty(), "dead reported once");
        assert_eq!(m.status(&id("b")), Some(Status::Dead));
    }

    #[test]
    fn straight_to_dead_when_ticks_are_sparse() {
        let (mut m, t0) = table();
        m.heard_from(info("b", 1), t0);
        assert_eq!(m.tick(ms(t0, 2000)), vec![MembershipEvent::Dead(id("b"))]);
    }

    #[test]
    fn restarted_node_rejoins_and_stale_life_is_ignored() {
        let (mut m, t0) = table();
        m.heard_from(info("b", 1), t0);
        m.tick(ms(t0, 1500));
        assert_eq!(m.status(&id("b")), Some(Status::Dead));
        assert_eq!(
            m.heard_from(info("b", 2), ms(t0, 1600)),
            vec![MembershipEvent::Joined(info("b", 2))]
        );
        assert_eq!(m.status(&id("b")), Some(Status::Alive));
        // A late heartbeat from the old life changes nothing.
        assert!(m.heard_from(info("b", 1), ms(t0, 1700)).is_empty());
        assert!(m.tick(ms(t0, 1700)).is_empty());
        assert_eq!(m.view()[1].incarnation, 2);
    }

    #[test]
    fn left_discovered_and_self() {
        let (mut m, t0) = table();
        assert!(
            m.heard_from(info("me", 1), t0).is_empty(),
            "never a member of itself"
        );
        assert_eq!(
            m.discovered(info("c", 4), t0),
            vec![MembershipEvent::Joined(info("c", 4))]
        );
        assert!(m.discovered(info("c", 4), ms(t0, 10)).is_empty());
        // Discovery does not count as a heartbeat: a registered but silent node dies.
        assert_eq!(m.tick(ms(t0, 1000)), vec![MembershipEvent::Dead(id("c"))]);
        assert_eq!(m.left(&id("c")), vec![MembershipEvent::Left(id("c"))]);
        assert!(m.left(&id("c")).is_empty());
        assert!(m.heartbeat_targets().is_empty());
        assert!(
            m.tick(ms(t0, 9000)).is_empty(),
            "left nodes are not declared dead"
        );
        let v = m.view();
        assert_eq!(v[0].id, id("me"));
        assert_eq!(v[1].status, Status::Left);
    }

    #[test]
    fn view_serialises_as_the_api_shape() {
        let (mut m, t0) = table();
        let mut b = info("b", 3);
        b.labels.insert("gpu".into(), "true".into());
        m.discovered(b, t0);
        // A heartbeat without labels keeps the discovered ones.
        m.heard_from(info("b", 3), ms(t0, 1));
        let json = serde_json::to_value(m.view()).expect("json");
        assert_eq!(
            json[1],
            serde_json::json!({"id": "b", "addr": "127.0.0.1:7700", "status": "alive",
                               "incarnation": 3, "labels": {"gpu": "true"}})
        );
    }
}
