//! The manager's side of replicated collections: creating and dropping them through the
//! cluster metadata (Raft), reconciling this node's replicas with the placement, and, on
//! the metadata leader, placing new replicas when a node stays dead too long.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::health::Check;
use abi_protocol::membership::{ListNodes, NodeStatus, NodeView, PATH as MEMBERSHIP};
use abi_protocol::raft::{
    ClusterMeta, CollectionMeta, GetStatus, MetaCommand, PATH as RAFT, Propose, RaftFailure,
    ReadMeta,
};
use abi_protocol::vector::shard::{
    ShardCount, ShardDelete, ShardGet, ShardScroll, ShardSearch, ShardSnapshot, ShardUpsert,
};
use abi_protocol::vector::{CollectionConfig, VectorError};
use abi_raft::Member;
use abi_raft::rpc::{AppendRpc, SnapshotRpc, VoteRpc};
use abi_runtime::{AskError, ChildSpec, Node, Started, Strategy, SupervisorError, SupervisorSpec};

use crate::collection::{shard_config, shard_dir};
use crate::manager::ManagerState;
use crate::metrics::VectorMetrics;
use crate::replica::actor::GroupTiming;
use crate::replica::{ReplicaActor, ReplicaArgs, ReplicaPlacement, ShardGroup, ShardGroupStatus};
use crate::routing::Replicas;

/// How long a metadata ask may take.
const META_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dropped collection is ignored in a local metadata copy that may lag.
const DROP_GRACE: Duration = Duration::from_secs(30);

/// Replication settings (present when the node runs the `[raft]` group).
#[derive(Debug, Clone, Copy)]
pub struct ReplicationArgs {
    /// Timing of the shard groups.
    pub timing: GroupTiming,
    /// How long a node stays dead before its replicas are placed elsewhere.
    pub replace_after: Duration,
}

/// What the reconciler remembers between ticks.
#[derive(Debug, Default)]
pub struct ReplicationState {
    /// Node -> when it was first seen dead.
    dead_since: HashMap<String, Instant>,
    /// Recently dropped collections.
    dropped: HashMap<String, Instant>,
}

fn raft_err(e: RaftFailure) -> VectorError {
    match e {
        RaftFailure::Invalid(m) => VectorError::BadRequest(m),
        other => VectorError::Unavailable(format!("cluster metadata: {other}")),
    }
}

fn ask_err(what: &str, e: AskError) -> VectorError {
    match e {
        AskError::NoSuchActor(_) => VectorError::BadRequest(format!(
            "{what}: replicated collections need the cluster metadata group ([raft])"
        )),
        other => VectorError::Unavailable(format!("{what}: {other}")),
    }
}

async fn read_meta(node: &Node, linearizable: bool) -> Result<ClusterMeta, VectorError> {
    let path = node
        .path(RAFT)
        .map_err(|e| VectorError::BadRequest(e.to_string()))?;
    node.ask(&path, ReadMeta { linearizable }, META_TIMEOUT)
        .await
        .map_err(|e| ask_err("reading cluster metadata", e))?
        .map_err(raft_err)
}

async fn propose(node: &Node, cmd: MetaCommand) -> Result<(), VectorError> {
    let path = node
        .path(RAFT)
        .map_err(|e| VectorError::BadRequest(e.to_string()))?;
    node.ask(&path, Propose::new(cmd), META_TIMEOUT)
        .await
        .map_err(|e| ask_err("proposing to cluster metadata", e))?
        .map_err(raft_err)
        .map(|_| ())
}

async fn list_nodes(node: &Node) -> Result<Vec<NodeView>, VectorError> {
    let path = node
        .path(MEMBERSHIP)
        .map_err(|e| VectorError::BadRequest(e.to_string()))?;
    node.ask(&path, ListNodes, META_TIMEOUT)
        .await
        .map_err(|e| ask_err("listing cluster nodes", e))
}

async fn leads_meta(node: &Node) -> bool {
    let Ok(path) = node.path(RAFT) else {
        return false;
    };
    matches!(
        node.ask(&path, GetStatus, META_TIMEOUT).await,
        Ok(Ok(s)) if s.state == "leader"
    )
}

/// Shard `i` -> `replication` distinct nodes, consecutive from `i` in id order, so shards
/// spread their first replicas (the founders) over the nodes.
pub fn place(nodes: &[String], shards: u32, replication: u32) -> BTreeMap<u32, Vec<String>> {
    (0..shards)
        .map(|i| {
            let reps = (0..replication as usize)
                .map(|j| nodes[(i as usize + j) % nodes.len()].clone())
                .collect();
            (i, reps)
        })
        .collect()
}

/// Checks `write_consistency` against the replication factor.
pub fn check_consistency(cfg: &CollectionConfig) -> Result<(), VectorError> {
    let (w, r) = (cfg.write_consistency, cfg.replication);
    if w > r {
        return Err(VectorError::BadRequest(format!(
            "write_consistency_factor {w} exceeds replication_factor {r}"
        )));
    }
    if w != 0 && w < r / 2 + 1 {
        return Err(VectorError::BadRequest(format!(
            "write_consistency_factor {w} is below a majority of {r} replicas: a shard group \
             commits on a majority, so fewer acknowledgements could lose writes on failover"
        )));
    }
    Ok(())
}

/// The supervisor child of one replica.
fn replica_spec(
    root: &std::path::Path,
    cfg: &CollectionConfig,
    i: u32,
    me: Member,
    members: Vec<Member>,
    found: bool,
    timing: GroupTiming,
) -> ChildSpec {
    let dir = shard_dir(&root.join(&cfg.name), i);
    let config = shard_config(cfg);
    let collection = cfg.name.clone();
    let write_consistency = cfg.write_consistency;
    let actor = format!("{}/{collection}/shard-{i}", abi_protocol::paths::VECTOR);
    ChildSpec::worker(format!("shard-{i}"), move |ctx| {
        let args = ReplicaArgs {
            node: ctx.node.clone(),
            dir: dir.clone(),
            config: config.clone(),
            metrics: VectorMetrics::of(&ctx.node).shard(&collection, i),
            actor: actor.clone(),
            me: me.clone(),
            members: members.clone(),
            found,
            write_consistency,
            timing,
        };
        async move {
            let r = ctx.spawn(ReplicaActor, args).await?;
            Ok(Started::new(r)
                .serves::<ShardUpsert>()
                .serves::<ShardDelete>()
                .serves::<ShardGet>()
                .serves::<ShardSearch>()
                .serves::<ShardCount>()
                .serves::<ShardScroll>()
                .serves::<ShardSnapshot>()
                .serves::<Check>()
                .serves::<AppendRpc<ShardGroup>>()
                .serves::<VoteRpc<ShardGroup>>()
                .serves::<SnapshotRpc<ShardGroup>>()
                .serves::<ReplicaPlacement>()
                .serves::<ShardGroupStatus>())
        }
    })
    .shutdown(Duration::from_secs(60))
}

/// Waits until every shard's group has a leader (or the deadline passes).
pub async fn wait_leaders(
    node: &Node,
    name: &str,
    placement: &BTreeMap<u32, Vec<String>>,
    deadline: Instant,
) -> Result<(), VectorError> {
    for (i, reps) in placement {
        'shard: loop {
            for n in reps {
                let Ok(id) = abi_protocol::NodeId::new(n.clone()) else {
                    continue;
                };
                let Ok(path) = abi_protocol::ActorPath::new(
                    id,
                    0,
                    &format!("{}/{name}/shard-{i}", abi_protocol::paths::VECTOR),
                ) else {
                    continue;
                };
                if let Ok(s) = node
                    .ask(&path, ShardGroupStatus, Duration::from_millis(500))
                    .await
                    && s.leader.is_some()
                    && s.voters.len() == reps.len()
                {
                    break 'shard;
                }
            }
            if Instant::now() >= deadline {
                return Err(VectorError::Timeout(format!(
                    "shard {i} of {name} has no leader yet"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

impl ManagerState {
    /// Declares a replicated collection in the cluster metadata; returns its placement.
    pub(crate) async fn create_replicated(
        &mut self,
        cfg: &CollectionConfig,
    ) -> Result<BTreeMap<u32, Vec<String>>, VectorError> {
        let node = self.args.node.clone();
        check_consistency(cfg)?;
        let meta = read_meta(&node, true).await?;
        if meta.collections.contains_key(&cfg.name) {
            return Err(VectorError::AlreadyExists(cfg.name.clone()));
        }
        let mut alive: Vec<String> = list_nodes(&node)
            .await?
            .into_iter()
            .filter(|n| n.status == NodeStatus::Alive)
            .map(|n| n.id.to_string())
            .collect();
        alive.sort();
        if alive.len() < cfg.replication as usize {
            return Err(VectorError::BadRequest(format!(
                "replication_factor {} needs as many live nodes; {} are alive",
                cfg.replication,
                alive.len()
            )));
        }
        let placement = place(&alive, cfg.shards, cfg.replication);
        propose(
            &node,
            MetaCommand::PutCollection(CollectionMeta {
                name: cfg.name.clone(),
                dim: cfg.dim,
                distance: format!("{:?}", cfg.distance).to_lowercase(),
                shards: cfg.shards,
                replication: cfg.replication,
                placement: placement.clone(),
                config: Some(cfg.clone()),
                moved: Default::default(),
            }),
        )
        .await?;
        self.replication.dropped.remove(&cfg.name);
        Ok(placement)
    }

    /// Removes a replicated collection from the cluster metadata and this node.
    pub(crate) async fn drop_replicated(&mut self, name: &str) -> Result<bool, VectorError> {
        propose(
            &self.args.node,
            MetaCommand::DropCollection {
                name: name.to_string(),
            },
        )
        .await?;
        self.replication
            .dropped
            .insert(name.to_string(), Instant::now());
        self.forget_replicated(name).await;
        Ok(true)
    }

    /// Stops this node's replicas of a collection and removes their data.
    async fn forget_replicated(&mut self, name: &str) {
        self.replicated.remove(name);
        self.collections.remove(name);
        if let Some(sup) = self.args.node.supervisor(&self.args.parent) {
            match sup.terminate_child(name).await {
                Ok(()) | Err(SupervisorError::NoSuchChild(_)) => {}
                Err(e) => tracing::warn!(collection = name, error = %e, "stopping replicas"),
            }
        }
        let dir = self.args.root.join(name);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        tracing::info!(collection = name, "replicated collection dropped here");
    }

    /// Brings this node's replicas in line with the cluster metadata.
    pub(crate) async fn reconcile(&mut self) {
        let Some(rep) = self.args.replication else {
            return;
        };
        let node = self.args.node.clone();
        // Through the leader: a member that just restarted (or one outside the group
        // asking a member) may hold a stale copy, and acting on it would start or delete
        // replicas the cluster no longer places that way.
        let meta = match read_meta(&node, true).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "cluster metadata not readable yet");
                return;
            }
        };
        let nodes = list_nodes(&node).await.unwrap_or_default();
        let addrs: HashMap<String, String> = nodes
            .iter()
            .map(|n| (n.id.to_string(), n.addr.clone()))
            .collect();
        let me = node.id().to_string();
        self.replication
            .dropped
            .retain(|name, at| at.elapsed() < DROP_GRACE && meta.collections.contains_key(name));

        for (name, cm) in &meta.collections {
            let Some(cfg) = &cm.config else { continue };
            if self.replication.dropped.contains_key(name) {
                continue;
            }
            if self.collections.contains_key(name) && !self.replicated.contains_key(name) {
                tracing::warn!(collection = %name, "a local collection shadows the replicated one");
                continue;
            }
            if self
                .replicated
                .get(name)
                .is_none_or(|r| r.placement != cm.placement)
            {
                self.replicated
                    .insert(name.clone(), Arc::new(Replicas::new(cm.placement.clone())));
            }
            self.collections.insert(name.clone(), cfg.clone());
            if let Err(e) = self.reconcile_replicas(cfg, cm, &me, &addrs, rep).await {
                tracing::warn!(collection = %name, error = %e, "reconciling replicas");
            }
        }
        let gone: Vec<String> = self
            .replicated
            .keys()
            .filter(|n| meta.collections.get(*n).is_none_or(|c| c.config.is_none()))
            .cloned()
            .collect();
        for name in gone {
            self.forget_replicated(&name).await;
        }
        if leads_meta(&node).await {
            self.replace_dead(&meta, &nodes, rep.replace_after).await;
        }
    }

    /// Starts the replicas placed here, stops the ones placed elsewhere, and tells each
    /// local replica its group's members.
    async fn reconcile_replicas(
        &mut self,
        cfg: &CollectionConfig,
        cm: &CollectionMeta,
        me: &str,
        addrs: &HashMap<String, String>,
        rep: ReplicationArgs,
    ) -> Result<(), VectorError> {
        let node = self.args.node.clone();
        let mine: Vec<u32> = cm
            .placement
            .iter()
            .filter(|(_, ns)| ns.iter().any(|n| n == me))
            .map(|(i, _)| *i)
            .collect();
        let sup_path = node
            .path(&format!("{}/{}", abi_protocol::paths::VECTOR, cfg.name))
            .map_err(|e| VectorError::BadRequest(e.to_string()))?;
        let sup = match node.supervisor(&sup_path) {
            Some(s) => s,
            None if mine.is_empty() => return Ok(()),
            None => {
                let parent = node.supervisor(&self.args.parent).ok_or_else(|| {
                    VectorError::Unavailable("vector supervisor is not running".into())
                })?;
                parent
                    .start_child(ChildSpec::supervisor(
                        cfg.name.clone(),
                        SupervisorSpec::new(Strategy::OneForOne),
                    ))
                    .await
                    .map_err(|e| VectorError::Unavailable(e.to_string()))?;
                node.supervisor(&sup_path).ok_or_else(|| {
                    VectorError::Unavailable(format!("supervisor of {} did not start", cfg.name))
                })?
            }
        };
        let member = |n: &String| Member {
            name: n.clone(),
            addr: addrs.get(n).cloned().unwrap_or_default(),
        };
        let children: HashSet<String> = sup.child_names().into_iter().collect();
        for i in &mine {
            let child = format!("shard-{i}");
            let members: Vec<Member> = cm.placement[i].iter().map(member).collect();
            if !children.contains(&child) {
                let found =
                    !cm.moved.contains(i) && cm.placement[i].first().is_some_and(|f| f == me);
                tracing::info!(collection = %cfg.name, shard = i, found, "starting replica");
                let spec = replica_spec(
                    &self.args.root,
                    cfg,
                    *i,
                    member(&me.to_string()),
                    members.clone(),
                    found,
                    rep.timing,
                );
                sup.start_child(spec)
                    .await
                    .map_err(|e| VectorError::Unavailable(e.to_string()))?;
            }
            let path = node
                .path(&format!(
                    "{}/{}/{child}",
                    abi_protocol::paths::VECTOR,
                    cfg.name
                ))
                .map_err(|e| VectorError::BadRequest(e.to_string()))?;
            if let Err(e) = node
                .ask(&path, ReplicaPlacement { members }, META_TIMEOUT)
                .await
            {
                tracing::debug!(error = %e, "replica not ready for its placement");
            }
        }
        for child in children {
            let placed = child
                .strip_prefix("shard-")
                .and_then(|i| i.parse::<u32>().ok())
                .is_some_and(|i| mine.contains(&i));
            if !placed {
                tracing::info!(collection = %cfg.name, %child, "replica placed elsewhere; removing it");
                match sup.terminate_child(&child).await {
                    Ok(()) | Err(SupervisorError::NoSuchChild(_)) => {}
                    Err(e) => return Err(VectorError::Unavailable(e.to_string())),
                }
                let dir = self.args.root.join(&cfg.name).join(&child);
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            }
        }
        Ok(())
    }

    /// On the metadata leader: a replica on a node dead for longer than `after` moves
    /// to the live node holding the fewest replicas (the group's leader then adds it).
    async fn replace_dead(&mut self, meta: &ClusterMeta, nodes: &[NodeView], after: Duration) {
        let now = Instant::now();
        for n in nodes {
            let id = n.id.to_string();
            if matches!(n.status, NodeStatus::Dead | NodeStatus::Left) {
                self.replication.dead_since.entry(id).or_insert(now);
            } else {
                self.replication.dead_since.remove(&id);
            }
        }
        let expired: HashSet<&String> = self
            .replication
            .dead_since
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= after)
            .map(|(n, _)| n)
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut alive: Vec<String> = nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Alive)
            .map(|n| n.id.to_string())
            .collect();
        alive.sort();
        let mut load: HashMap<&str, usize> = alive.iter().map(|n| (n.as_str(), 0)).collect();
        for cm in meta.collections.values() {
            for n in cm.placement.values().flatten() {
                if let Some(l) = load.get_mut(n.as_str()) {
                    *l += 1;
                }
            }
        }
        let mut moves = Vec::new();
        for (name, cm) in &meta.collections {
            if cm.config.is_none() {
                continue;
            }
            for (i, reps) in &cm.placement {
                let Some(pos) = reps.iter().position(|n| expired.contains(n)) else {
                    continue;
                };
                let spare = alive
                    .iter()
                    .filter(|n| !reps.contains(n))
                    .min_by_key(|n| (load.get(n.as_str()).copied().unwrap_or(0), n.as_str()));
                let Some(spare) = spare else {
                    tracing::debug!(collection = %name, shard = i, "no spare node for a dead replica");
                    continue;
                };
                *load.entry(spare.as_str()).or_default() += 1;
                let mut next = reps.clone();
                tracing::info!(collection = %name, shard = i, from = %next[pos], to = %spare, "placing a replica of a dead node elsewhere");
                next[pos] = spare.clone();
                moves.push(MetaCommand::PlaceShard {
                    collection: name.clone(),
                    shard: *i,
                    replicas: next,
                });
            }
        }
        for m in moves {
            if let Err(e) = propose(&self.args.node, m).await {
                tracing::warn!(error = %e, "re-placing a replica failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_distinct_replicas() {
        let nodes: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let p = place(&nodes, 4, 3);
        for (i, reps) in &p {
            let distinct: HashSet<_> = reps.iter().collect();
            assert_eq!(distinct.len(), 3, "shard {i}: {reps:?}");
        }
        let founders: HashSet<_> = p.values().map(|r| r[0].clone()).collect();
        assert_eq!(founders.len(), 4);
    }

    #[test]
    fn write_consistency_below_majority_is_refused() {
        let mut cfg = CollectionConfig {
            name: "c".into(),
            dim: 2,
            distance: abi_protocol::vector::Distance::Cosine,
            shards: 1,
            replication: 3,
            write_consistency: 1,
            hnsw: Default::default(),
            fsync: abi_protocol::vector::FsyncPolicy::Always,
            embed_with: None,
        };
        assert!(check_consistency(&cfg).is_err());
        cfg.write_consistency = 2;
        assert!(check_consistency(&cfg).is_ok());
        cfg.write_consistency = 4;
        assert!(check_consistency(&cfg).is_err());
        cfg.write_consistency = 0;
        assert!(check_consistency(&cfg).is_ok());
    }
}
