//! How abi nodes find each other and notice failures.
//!
//! - [`Discovery`]: one trait, three backends: [`static_seeds`] (seed addresses
//!   in TOML, the embedded default), [`etcd`] (registration under a lease with
//!   keep-alive, prefix watch) and [`consul`] (catalog registration, blocking-query watch).
//! - [`membership`]: the pure state machine of membership and failure
//!   detection (joined / suspect / dead / left), tested with injected time.
//! - [`actor`]: the membership actor (serves `membership::ListNodes`) and its `child_spec`.
//! - [`cluster`]: the I/O shell that feeds the state machine with heartbeats
//!   over the transport and discovery events, and publishes membership events.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use abi_protocol::NodeId;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

pub mod actor;
pub mod cluster;
pub mod consul;
pub mod etcd;
pub mod membership;
pub mod static_seeds;

pub use actor::{MembershipArgs, child_spec};
pub use cluster::{Cluster, ClusterHandle};
pub use membership::{Membership, MembershipConfig, MembershipEvent, NodeView, Status};

/// What a node announces about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Node id (matches its certificate).
    pub id: NodeId,
    /// QUIC address other nodes dial.
    pub addr: SocketAddr,
    /// Life of the node (new on every start).
    pub incarnation: u64,
    /// Operator labels from `[node] labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A place to look for a peer: an address, and its id when the backend knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// QUIC address.
    pub addr: SocketAddr,
    /// The full record, when the backend stores one (etcd, Consul); static seeds have none.
    pub member: Option<MemberInfo>,
}

/// A change reported by a discovery backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// A node registered or updated its record.
    Up(MemberInfo),
    /// A node's registration went away (deregistered or lease expired).
    Down(NodeId),
}

/// Why a discovery operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// A seed or backend address could not be parsed.
    #[error("bad address {addr:?}: {reason}")]
    BadAddress {
        /// The text.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The etcd cluster refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The Consul agent refused or could not be reached.
    #[error("consul: {0}")]
    Consul(String),
    /// A stored record was not a valid member record.
    #[error("bad member record under {key}: {reason}")]
    BadRecord {
        /// Where it was stored.
        key: String,
        /// Why it was refused.
        reason: String,
    },
}

/// A backend that tells nodes about each other.
pub trait Discovery: Send + Sync + 'static {
    /// Announces this node and keeps the announcement alive until the
    /// returned [`Registration`] is dropped or deregistered.
    fn register(&self, me: MemberInfo) -> BoxFuture<'_, Result<Registration, DiscoveryError>>;

    /// Where to look for peers now.
    fn seeds(&self) -> BoxFuture<'_, Result<Vec<Seed>, DiscoveryError>>;

    /// Changes from now on. Backends without change notification return a stream that ends.
    fn watch(
        &self,
    ) -> BoxFuture<
        '_,
        Result<BoxStream<'static, Result<DiscoveryEvent, DiscoveryError>>, DiscoveryError>,
    >;
}

type LeaveFn = Box<dyn FnOnce() -> BoxFuture<'static, Result<(), DiscoveryError>> + Send>;

/// A live registration: its keep-alive task runs until this is dropped
/// (the record then expires with its TTL) or [`Registration::deregister`]ed
/// (the record is removed at once).
pub struct Registration {
    keepalive: Option<tokio::task::JoinHandle<()>>,
    leave: Option<LeaveFn>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("keepalive", &self.keepalive.is_some())
            .finish()
    }
}

impl Registration {
    /// A registration with nothing to keep alive (static seeds).
    pub fn none() -> Self {
        Self {
            keepalive: None,
            leave: None,
        }
    }

    /// A registration kept alive by `keepalive`, removed by `leave`.
    pub fn new(keepalive: tokio::task::JoinHandle<()>, leave: LeaveFn) -> Self {
        Self {
            keepalive: Some(keepalive),
            leave: Some(leave),
        }
    }

    /// Stops the keep-alive and removes the record now (a graceful leave).
    pub async fn deregister(mut self) -> Result<(), DiscoveryError> {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        match self.leave.take() {
            Some(leave) => leave().await,
            None => Ok(()),
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}
