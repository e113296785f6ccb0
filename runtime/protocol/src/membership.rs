//! Cluster membership as seen by one node (`GET /v1/cluster/nodes`).
//!
//! Served by the membership actor (`abi-discovery`) at [`PATH`] under each node's root.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{NodeId, Request};

/// Name of the membership actor under a node's root.
pub const PATH: &str = "membership";

/// A member's state as seen by the answering node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Heard from recently.
    Alive,
    /// Silent for longer than the suspect timeout.
    Suspect,
    /// Silent for longer than the dead timeout.
    Dead,
    /// Left the cluster deliberately.
    Left,
}

/// One node of the cluster: the row of `GET /v1/cluster/nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node id.
    pub id: NodeId,
    /// QUIC address.
    pub addr: String,
    /// Current status.
    pub status: NodeStatus,
    /// Current incarnation.
    pub incarnation: u64,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
}

/// Asks the membership actor for its node table (this node first).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListNodes;

impl Request for ListNodes {
    type Reply = Vec<NodeView>;
    const TYPE: &'static str = "membership.list_nodes";
}
