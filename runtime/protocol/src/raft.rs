//! The cluster metadata Raft group: the messages its actor (`<node>/raft`) understands.
//!
//! Clients (gateway, CLI, subsystems) propose [`MetaCommand`]s and read the replicated
//! [`ClusterMeta`]; the Raft protocol's own RPCs between group members are private to
//! `abi-raft`. Any member accepts a proposal: a follower forwards it to the leader.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Request;

/// Name of the Raft actor under a node's root.
pub const PATH: &str = crate::paths::RAFT;

/// How many times a proposal may be forwarded before it is refused (leader churn).
pub const MAX_FORWARDS: u8 = 3;

/// A change to the cluster metadata; applied in log order on every member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Sets a key of the free-form metadata map (operators, benchmarks, feature flags).
    Put {
        /// Key.
        key: String,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Removes a key of the free-form metadata map.
    Delete {
        /// Key.
        key: String,
    },
    /// Declares (or replaces the schema of) a collection.
    PutCollection(CollectionMeta),
    /// Removes a collection and its placement.
    DropCollection {
        /// Collection name.
        name: String,
    },
    /// Sets the nodes holding the replicas of one shard (first is the preferred one).
    PlaceShard {
        /// Collection name.
        collection: String,
        /// Shard number.
        shard: u32,
        /// Node ids, one per replica, all distinct.
        replicas: Vec<String>,
    },
    /// Declares where an inference pool runs.
    PutPool(PoolMeta),
    /// Adds a node to the nodes running an inference pool (a pool announces itself).
    JoinPool {
        /// Pool (model) name.
        name: String,
        /// `embedding` or `chat`.
        kind: String,
        /// Node running it.
        node: String,
    },
    /// Records a node's status as the leader saw it (alive, dead, left).
    SetNodeStatus {
        /// Node id.
        node: String,
        /// Status word.
        status: String,
    },
}

/// A collection as the cluster knows it: schema plus shard placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CollectionMeta {
    /// Name.
    pub name: String,
    /// Vector dimension.
    pub dim: u32,
    /// Distance name (`cosine`, `dot`, `euclid`).
    pub distance: String,
    /// Number of shards.
    pub shards: u32,
    /// Replicas per shard.
    pub replication: u32,
    /// Shard number -> node ids holding a replica.
    pub placement: BTreeMap<u32, Vec<String>>,
    /// The full definition, for replicated vector collections (every node serves them).
    pub config: Option<crate::vector::CollectionConfig>,
    /// Shards whose placement changed since creation: their groups exist already, so a
    /// newly placed replica waits to be added instead of founding the group.
    pub moved: BTreeSet<u32>,
}

/// Where an inference pool runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PoolMeta {
    /// Pool (model) name.
    pub name: String,
    /// `embedding` or `chat`.
    pub kind: String,
    /// Node ids running a replica of the pool.
    pub nodes: Vec<String>,
}

/// The replicated state: what every member applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterMeta {
    /// Collections by name.
    pub collections: BTreeMap<String, CollectionMeta>,
    /// Inference pools by name.
    pub pools: BTreeMap<String, PoolMeta>,
    /// Node id -> last recorded status.
    pub nodes: BTreeMap<String, String>,
    /// Free-form key/value metadata.
    pub kv: BTreeMap<String, Vec<u8>>,
}

impl ClusterMeta {
    /// Applies one command; returns the previous value for `Put`/`Delete`, if any.
    pub fn apply(&mut self, cmd: &MetaCommand) -> Option<Vec<u8>> {
        match cmd {
            MetaCommand::Put { key, value } => self.kv.insert(key.clone(), value.clone()),
            MetaCommand::Delete { key } => self.kv.remove(key),
            MetaCommand::PutCollection(c) => {
                // A schema update keeps the placement already decided.
                let placement = self
                    .collections
                    .get(&c.name)
                    .filter(|_| c.placement.is_empty())
                    .map(|old| old.placement.clone());
                let mut c = c.clone();
                if let Some(p) = placement {
                    c.placement = p;
                }
                self.collections.insert(c.name.clone(), c);
                None
            }
            MetaCommand::DropCollection { name } => {
                self.collections.remove(name);
                None
            }
            MetaCommand::PlaceShard {
                collection,
                shard,
                replicas,
            } => {
                if let Some(c) = self.collections.get_mut(collection) {
                    c.placement.insert(*shard, replicas.clone());
                    c.moved.insert(*shard);
                }
                None
            }
            MetaCommand::PutPool(p) => {
                self.pools.insert(p.name.clone(), p.clone());
                None
            }
            MetaCommand::JoinPool { name, kind, node } => {
                let p = self.pools.entry(name.clone()).or_insert_with(|| PoolMeta {
                    name: name.clone(),
                    kind: kind.clone(),
                    nodes: Vec::new(),
                });
                if !p.nodes.contains(node) {
                    p.nodes.push(node.clone());
                    p.nodes.sort();
                }
                None
            }
            MetaCommand::SetNodeStatus { node, status } => {
                self.nodes.insert(node.clone(), status.clone());
                None
            }
        }
    }
}

/// Why the group could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RaftFailure {
    /// This node is not part of a Raft group (no `[raft]` section).
    #[error("raft is not enabled on this node")]
    Disabled,
    /// No leader is known right now (election in progress or no quorum).
    #[error("no raft leader is known (election in progress or no quorum)")]
    NoLeader,
    /// The leader could not be reached (forwarding failed).
    #[error("the raft leader {leader} could not be reached: {reason}")]
    LeaderUnreachable {
        /// Leader node id.
        leader: String,
        /// Transport error.
        reason: String,
    },
    /// The request was forwarded too many times (leadership kept moving).
    #[error("proposal forwarded {0} times without reaching a stable leader")]
    TooManyForwards(u8),
    /// The request is not valid (unknown node, removing the last voter...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The Raft core failed (storage error, shut down).
    #[error("raft error: {0}")]
    Internal(String),
}

/// What a committed proposal returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Log index the command was committed at.
    pub index: u64,
    /// The node that led the group when it committed.
    pub leader: String,
    /// Previous value (`Put`/`Delete` only).
    pub previous: Option<Vec<u8>>,
}

/// Proposes a metadata change; answered once a majority has it durable and it is applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Propose {
    /// The change.
    pub command: MetaCommand,
    /// How many times this proposal was forwarded already.
    pub forwards: u8,
}

impl Propose {
    /// A proposal made on this node.
    pub fn new(command: MetaCommand) -> Self {
        Self {
            command,
            forwards: 0,
        }
    }
}

impl Request for Propose {
    type Reply = Result<Applied, RaftFailure>;
    const TYPE: &'static str = "raft.propose";
}

/// Reads the replicated metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadMeta {
    /// Confirm leadership with a quorum first (and forward to the leader) so the read
    /// reflects every write acknowledged before it; otherwise the local applied state.
    pub linearizable: bool,
}

impl Request for ReadMeta {
    type Reply = Result<ClusterMeta, RaftFailure>;
    const TYPE: &'static str = "raft.read";
}

/// This member's view of the group (`GET /v1/cluster/raft`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RaftStatus {
    /// The answering node.
    pub node: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// Current leader, if known.
    pub leader: Option<String>,
    /// Current term.
    pub term: u64,
    /// Highest log index known committed (applied here).
    pub commit_index: Option<u64>,
    /// Highest log index in this member's log.
    pub last_log_index: Option<u64>,
    /// Index of the last snapshot.
    pub snapshot_index: Option<u64>,
    /// Highest purged (compacted) log index.
    pub purged_index: Option<u64>,
    /// Voting members.
    pub voters: Vec<String>,
    /// Non-voting members (receive the log).
    pub learners: Vec<String>,
    /// Member id -> QUIC address.
    pub addrs: BTreeMap<String, String>,
    /// Milliseconds since the leader last heard from a quorum (leader only).
    pub millis_since_quorum_ack: Option<u64>,
}

/// Asks for [`RaftStatus`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetStatus;

impl Request for GetStatus {
    type Reply = Result<RaftStatus, RaftFailure>;
    const TYPE: &'static str = "raft.status";
}

/// A membership change (admin API, `abi-node cluster`); run by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a node as a learner (it receives the log but does not vote) and waits
    /// until it has caught up.
    AddLearner {
        /// Node id.
        node: String,
        /// Its QUIC address.
        addr: String,
    },
    /// Turns learners into voters.
    Promote {
        /// Node ids (must be learners already).
        nodes: Vec<String>,
    },
    /// Removes members (voters or learners) from the group.
    Remove {
        /// Node ids.
        nodes: Vec<String>,
    },
}

/// Runs a [`MembershipChange`], forwarded to the leader like a proposal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeMembership {
    /// The change.
    pub change: MembershipChange,
    /// How many times this request was forwarded already.
    pub forwards: u8,
}

impl Request for ChangeMembership {
    type Reply = Result<RaftStatus, RaftFailure>;
    const TYPE: &'static str = "raft.change_membership";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_update_keeps_placement() {
        let mut m = ClusterMeta::default();
        let c = CollectionMeta {
            name: "docs".into(),
            dim: 4,
            distance: "cosine".into(),
            shards: 1,
            replication: 2,
            ..Default::default()
        };
        m.apply(&MetaCommand::PutCollection(c.clone()));
        m.apply(&MetaCommand::PlaceShard {
            collection: "docs".into(),
            shard: 0,
            replicas: vec!["a".into(), "b".into()],
        });
        m.apply(&MetaCommand::PutCollection(CollectionMeta { dim: 4, ..c }));
        assert_eq!(m.collections["docs"].placement[&0], vec!["a", "b"]);
    }

    #[test]
    fn pools_record_each_node_once() {
        let mut m = ClusterMeta::default();
        let join = |node: &str| MetaCommand::JoinPool {
            name: "minilm".into(),
            kind: "embedding".into(),
            node: node.into(),
        };
        m.apply(&join("b"));
        m.apply(&join("a"));
        m.apply(&join("b"));
        assert_eq!(m.pools["minilm"].nodes, vec!["a", "b"]);
    }

    #[test]
    fn put_returns_previous() {
        let mut m = ClusterMeta::default();
        let put = |v: &[u8]| MetaCommand::Put {
            key: "k".into(),
            value: v.to_vec(),
        };
        assert_eq!(m.apply(&put(b"1")), None);
        assert_eq!(m.apply(&put(b"2")), Some(b"1".to_vec()));
        assert_eq!(
            m.apply(&MetaCommand::Delete { key: "k".into() }),
            Some(b"2".to_vec())
        );
    }
}
