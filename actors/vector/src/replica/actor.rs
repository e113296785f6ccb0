//! The replica actor of one replicated shard, at `vector/<collection>/shard-<i>` on each
//! node holding a replica. It answers the same shard requests as an unreplicated shard,
//! so the manager's reads do not care which kind it talks to; writes go through the
//! group and are refused with [`VectorError::NotLeader`] away from the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use abi_protocol::Request;
use abi_protocol::health::{Check, Report};
use abi_protocol::vector::shard::{
    ShardCount, ShardDelete, ShardGet, ShardScroll, ShardSearch, ShardSnapshot, ShardUpsert,
};
use abi_protocol::vector::{VectorError, WriteAck};
use abi_raft::rpc::{
    AppendRpc, SnapshotRpc, VoteRpc, answer_append, answer_snapshot, answer_vote, view,
};
use abi_raft::{LogStore, Member, MemberId, Network, member_id};
use abi_runtime::{Call, Node, ReplyTo};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, SnapshotPolicy};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::group::{ShardGroup, ShardOp, ShardRaft};
use super::machine::ShardMachine;
use crate::metrics::ShardMetrics;
use crate::shard::{Shard, ShardConfig};
use crate::shard_actor::{join_err, snapshot_index, spawn_read};

/// How often the replica snapshots its index (bounds restart time) and retries a
/// membership change that failed.
const TICK: Duration = Duration::from_secs(2);
/// Index snapshot interval (in ticks) when there were writes.
const INDEX_SNAPSHOT_TICKS: u32 = 150;

/// Tells a replica the members its group should have (the placement, from the cluster
/// metadata); the leader changes the group's membership to match.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaPlacement {
    /// One member per replica.
    pub members: Vec<Member>,
}

impl Request for ReplicaPlacement {
    type Reply = ();
    const TYPE: &'static str = "vector.replica.placement";
}

/// Asks a replica how its group stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardGroupStatus;

/// A replica's view of its shard's group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// The answering node.
    pub node: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// Leader node, if known.
    pub leader: Option<String>,
    /// Current term.
    pub term: u64,
    /// Last applied log index.
    pub applied: u64,
    /// Voting replicas.
    pub voters: Vec<String>,
    /// Replicas still catching up.
    pub learners: Vec<String>,
    /// Points in this replica.
    pub points: u64,
}

impl Request for ShardGroupStatus {
    type Reply = ReplicaStatus;
    const TYPE: &'static str = "vector.replica.status";
}

/// Group timing (from `[raft]`).
#[derive(Debug, Clone, Copy)]
pub struct GroupTiming {
    /// Minimum election timeout (ms).
    pub election_ms: u64,
    /// Heartbeat (ms).
    pub heartbeat_ms: u64,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
}

/// What a replica needs to start.
#[derive(Clone)]
pub struct ReplicaArgs {
    /// The node (transport for the group's RPCs).
    pub node: Node,
    /// Shard directory (the shard, its Raft log and applied file).
    pub dir: PathBuf,
    /// Shard engine configuration.
    pub config: ShardConfig,
    /// Metric series.
    pub metrics: ShardMetrics,
    /// Actor name of the shard (`vector/<collection>/shard-<i>`), the same on every member.
    pub actor: String,
    /// This node as a member.
    pub me: Member,
    /// The placement when the replica starts.
    pub members: Vec<Member>,
    /// Whether this replica founds the group (first replica of a never-moved shard).
    pub found: bool,
    /// Replicas that must have a write before it is acknowledged (0: majority).
    pub write_consistency: u32,
    /// Group timing.
    pub timing: GroupTiming,
}

/// Messages of the replica actor.
pub enum ReplicaMsg {
    /// Upsert (leader only).
    Upsert(Call<ShardUpsert>),
    /// Delete (leader only).
    Delete(Call<ShardDelete>),
    /// Get by id.
    Get(Call<ShardGet>),
    /// k-NN.
    Search(Call<ShardSearch>),
    /// Count.
    Count(Call<ShardCount>),
    /// Scroll.
    Scroll(Call<ShardScroll>),
    /// Index snapshot now.
    Snapshot(Call<ShardSnapshot>),
    /// Readiness.
    Health(Call<Check>),
    /// AppendEntries.
    Append(Call<AppendRpc<ShardGroup>>),
    /// RequestVote.
    Vote(Call<VoteRpc<ShardGroup>>),
    /// InstallSnapshot.
    InstallSnapshot(Call<SnapshotRpc<ShardGroup>>),
    /// Desired members.
    Placement(Call<ReplicaPlacement>),
    /// Group status.
    Status(Call<ShardGroupStatus>),
    /// Timer.
    Tick,
}

macro_rules! from_call {
    ($($req:ty => $var:ident),* $(,)?) => {$(
        impl From<Call<$req>> for ReplicaMsg {
            fn from(c: Call<$req>) -> Self {
                ReplicaMsg::$var(c)
            }
        }
    )*};
}
from_call!(ShardUpsert => Upsert, ShardDelete => Delete, ShardGet => Get, ShardSearch => Search,
    ShardCount => Count, ShardScroll => Scroll, ShardSnapshot => Snapshot, Check => Health,
    AppendRpc<ShardGroup> => Append, VoteRpc<ShardGroup> => Vote,
    SnapshotRpc<ShardGroup> => InstallSnapshot, ReplicaPlacement => Placement,
    ShardGroupStatus => Status);

/// The replica actor.
#[derive(Debug)]
pub struct ReplicaActor;

/// Shared by the replica's tasks.
#[derive(Clone)]
struct Ctx {
    raft: ShardRaft,
    shard: Arc<Shard>,
    me: Member,
    write_consistency: u32,
    desired: Arc<parking_lot::Mutex<Vec<Member>>>,
    converging: Arc<AtomicBool>,
}

/// Replica state.
pub struct ReplicaState {
    ctx: Ctx,
    tasks: JoinSet<()>,
    timer: Option<tokio::task::JoinHandle<()>>,
    dirty: bool,
    ticks: u32,
    metrics: ShardMetrics,
}

fn raft_err(e: impl std::fmt::Display) -> VectorError {
    VectorError::Unavailable(format!("shard group: {e}"))
}

impl Ctx {
    fn my_id(&self) -> MemberId {
        member_id(&self.me.name)
    }

    /// Whether this replica votes (a learner still catching up must not serve reads) and
    /// its group core runs.
    fn serves_reads(&self) -> bool {
        let rx = self.raft.metrics();
        let m = rx.borrow();
        m.running_state.is_ok()
            && m.membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.my_id())
    }

    fn status(&self) -> ReplicaStatus {
        let v = view(&self.raft.metrics().borrow());
        ReplicaStatus {
            node: self.me.name.clone(),
            state: v.state.into(),
            leader: v.leader,
            term: v.term,
            applied: v.applied.unwrap_or(0),
            voters: v.voters,
            learners: v.learners,
            points: self.shard.len() as u64,
        }
    }

    /// Proposes `op`; acknowledged once committed (and on `write_consistency` replicas).
    async fn write(&self, op: ShardOp, deadline: Instant) -> Result<WriteAck, VectorError> {
        let ttl = deadline.saturating_duration_since(Instant::now());
        let resp = match tokio::time::timeout(ttl, self.raft.client_write(op)).await {
            Err(_) => {
                return Err(VectorError::Timeout(
                    "the shard group did not commit the write in time".into(),
                ));
            }
            Ok(Ok(r)) => r,
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                return Err(VectorError::NotLeader(f.leader_node.map(|n| n.name)));
            }
            Ok(Err(e)) => return Err(raft_err(e)),
        };
        resp.data?;
        let index = resp.log_id.index;
        self.wait_replicas(index, deadline).await?;
        Ok(WriteAck { seq: index })
    }

    /// Waits until `write_consistency` replicas have the entry at `index` when that is
    /// more than the majority a commit already guarantees.
    async fn wait_replicas(&self, index: u64, deadline: Instant) -> Result<(), VectorError> {
        let voters = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            m.membership().voter_ids().count()
        };
        let want = self.write_consistency as usize;
        if want <= voters / 2 + 1 {
            return Ok(());
        }
        let want = want.min(voters);
        let me = self.my_id();
        let ttl = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(ttl))
            .metrics(
                |m| {
                    let others = m.replication.as_ref().map_or(0, |r| {
                        r.iter()
                            .filter(|(id, l)| **id != me && l.is_some_and(|l| l.index >= index))
                            .count()
                    });
                    others + 1 >= want
                },
                "write_consistency replicas have the write",
            )
            .await
            .map(|_| ())
            .map_err(|e| {
                VectorError::Timeout(format!(
                    "the write is committed but not yet on {want} replicas: {e}"
                ))
            })
    }

    /// When leading, changes the group's members to the desired ones: new replicas join
    /// as learners and catch up before they vote; replicas placed elsewhere leave.
    async fn converge(self) {
        if self.converging.swap(true, Ordering::AcqRel) {
            return;
        }
        let r = self.converge_once().await;
        self.converging.store(false, Ordering::Release);
        if let Err(e) = r {
            tracing::warn!(error = %e, "shard group membership change failed; retrying");
        }
    }

    async fn converge_once(&self) -> Result<(), String> {
        let desired: BTreeMap<MemberId, Member> = self
            .desired
            .lock()
            .iter()
            .map(|m| (member_id(&m.name), m.clone()))
            .collect();
        if desired.is_empty() {
            return Ok(());
        }
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.my_id()) {
            return Ok(());
        }
        let mem = m.membership_config.membership();
        let voters: BTreeSet<MemberId> = mem.voter_ids().collect();
        let want: BTreeSet<MemberId> = desired.keys().copied().collect();
        let nodes: BTreeSet<MemberId> = mem.nodes().map(|(id, _)| *id).collect();
        if voters == want && nodes == want {
            return Ok(());
        }
        for (id, member) in &desired {
            if !nodes.contains(id) {
                tracing::info!(replica = %member.name, "adding shard replica as learner");
                self.raft
                    .add_learner(*id, member.clone(), true)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        tracing::info!(voters = ?desired.values().map(|m| &m.name).collect::<Vec<_>>(), "shard group voters change");
        self.raft
            .change_membership(ChangeMembers::ReplaceAllVoters(want), false)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn openraft_config(t: &GroupTiming) -> Result<openraft::Config, String> {
    let election = t.election_ms.max(t.heartbeat_ms * 3);
    openraft::Config {
        cluster_name: "abi-shard".into(),
        heartbeat_interval: t.heartbeat_ms.max(10),
        election_timeout_min: election,
        election_timeout_max: election * 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_every.max(1)),
        max_in_snapshot_log_to_keep: t.snapshot_every.clamp(1, 10_000),
        // Installing a snapshot re-indexes every point of the shard: far longer than
        // openraft's 200 ms default allows.
        install_snapshot_timeout: 60_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| e.to_string())
}

impl Actor for ReplicaActor {
    type Msg = ReplicaMsg;
    type State = ReplicaState;
    type Arguments = ReplicaArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReplicaMsg>,
        a: ReplicaArgs,
    ) -> Result<ReplicaState, ActorProcessingErr> {
        let (dir, config) = (a.dir.clone(), a.config.clone());
        let shard =
            Arc::new(tokio::task::spawn_blocking(move || Shard::open(&dir, config)).await??);
        let log_path = a.dir.join("raft-log.redb");
        let log =
            tokio::task::spawn_blocking(move || LogStore::<ShardGroup>::open(&log_path)).await??;
        let sm = ShardMachine::open(shard.clone(), &a.dir)?;
        let noop: abi_raft::LearnAddr = Arc::new(|_, _| {});
        let network = Network::<ShardGroup>::new(a.node.clone(), noop, a.actor.clone());
        let config = Arc::new(openraft_config(&a.timing)?);
        let raft = ShardRaft::new(member_id(&a.me.name), config, network, log, sm).await?;
        if a.found && !raft.is_initialized().await? {
            let members: BTreeMap<MemberId, Member> = a
                .members
                .iter()
                .map(|m| (member_id(&m.name), m.clone()))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(shard = %a.actor, "shard group founded"),
                Err(e) => tracing::debug!(error = %e, "shard group initialise skipped"),
            }
        }
        let timer = myself.send_interval(TICK, || ReplicaMsg::Tick);
        Ok(ReplicaState {
            ctx: Ctx {
                raft,
                shard,
                me: a.me,
                write_consistency: a.write_consistency,
                desired: Arc::new(parking_lot::Mutex::new(a.members)),
                converging: Arc::new(AtomicBool::new(false)),
            },
            tasks: JoinSet::new(),
            timer: Some(timer),
            dirty: false,
            ticks: 0,
            metrics: a.metrics,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReplicaMsg>,
        msg: ReplicaMsg,
        st: &mut ReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        while let Some(done) = st.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                return Err(format!("replica task panicked: {e}").into());
            }
        }
        let ctx = st.ctx.clone();
        match msg {
            ReplicaMsg::Upsert(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                st.metrics.upserts.inc_by(req.points.len() as u64);
                st.dirty = true;
                st.tasks.spawn(async move {
                    reply.send(ctx.write(ShardOp::Upsert(req.points), deadline).await);
                });
            }
            ReplicaMsg::Delete(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                st.dirty = true;
                st.tasks.spawn(async move {
                    reply.send(ctx.write(ShardOp::Delete(req.ids), deadline).await);
                });
            }
            ReplicaMsg::Get(call) => {
                let (req, reply) = call.into_parts();
                let lin = req.linearizable;
                st.serve_read(
                    lin,
                    move |s| Ok(s.get(&req.ids, req.with_payload, req.with_vector)),
                    reply,
                );
            }
            ReplicaMsg::Search(call) => {
                let (req, reply) = call.into_parts();
                st.metrics.searches.inc_by(req.queries.len() as u64);
                let lin = req.linearizable;
                st.serve_read(
                    lin,
                    move |s| req.queries.iter().map(|q| s.search(q)).collect(),
                    reply,
                );
            }
            ReplicaMsg::Count(call) => {
                let (req, reply) = call.into_parts();
                let lin = req.linearizable;
                st.serve_read(lin, move |s| s.count(req.filter.as_ref()), reply);
            }
            ReplicaMsg::Scroll(call) => {
                let (req, reply) = call.into_parts();
                let lin = req.linearizable;
                st.serve_read(
                    lin,
                    move |s| {
                        s.scroll(
                            req.offset,
                            req.limit as usize,
                            req.filter.as_ref(),
                            req.with_payload,
                            req.with_vector,
                        )
                    },
                    reply,
                );
            }
            ReplicaMsg::Snapshot(call) => {
                call.reply(snapshot_index(&ctx.shard).await);
            }
            ReplicaMsg::Health(call) => {
                let s = ctx.status();
                call.reply(Report {
                    ready: s.leader.is_some(),
                    detail: match &s.leader {
                        Some(l) => format!("{} in term {}, leader {l}", s.state, s.term),
                        None => format!("{} in term {}, no leader", s.state, s.term),
                    },
                });
            }
            ReplicaMsg::Append(call) => answer_append(&mut st.tasks, &ctx.raft, call),
            ReplicaMsg::Vote(call) => answer_vote(&mut st.tasks, &ctx.raft, call),
            ReplicaMsg::InstallSnapshot(call) => answer_snapshot(&mut st.tasks, &ctx.raft, call),
            ReplicaMsg::Placement(call) => {
                let (req, reply) = call.into_parts();
                *ctx.desired.lock() = req.members;
                reply.send(());
                st.tasks.spawn(ctx.converge());
            }
            ReplicaMsg::Status(call) => call.reply(ctx.status()),
            ReplicaMsg::Tick => {
                // A group core that stopped on a fatal error (storage) does not come back
                // by itself: fail, and the supervisor restarts the replica from disk.
                if let Err(e) = &ctx.raft.metrics().borrow().running_state {
                    return Err(format!("shard group stopped: {e}").into());
                }
                st.tasks.spawn(ctx.clone().converge());
                st.ticks += 1;
                if st.dirty && st.ticks.is_multiple_of(INDEX_SNAPSHOT_TICKS) {
                    match snapshot_index(&ctx.shard).await {
                        Ok(_) => st.dirty = false,
                        Err(e) => tracing::error!(error = %e, "replica index snapshot failed"),
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ReplicaMsg>,
        st: &mut ReplicaState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.timer.take() {
            t.abort();
        }
        st.tasks.abort_all();
        while st.tasks.join_next().await.is_some() {}
        if let Err(e) = st.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "shard group did not shut down cleanly");
        }
        Ok(())
    }
}

impl ReplicaState {
    /// Answers a read from the local shard: on any voting replica, or, when
    /// `linearizable`, only on the leader once a quorum confirmed it and it applied every
    /// entry committed before the read.
    fn serve_read<T: Send + 'static>(
        &mut self,
        linearizable: bool,
        f: impl FnOnce(&Shard) -> Result<T, VectorError> + Send + 'static,
        reply: ReplyTo<Result<T, VectorError>>,
    ) {
        let ctx = self.ctx.clone();
        if !linearizable {
            if ctx.serves_reads() {
                spawn_read(&ctx.shard, f, move |r| reply.send(r));
            } else {
                // A learner is still being filled.
                reply.send(Err(VectorError::Unavailable(format!(
                    "replica on {} is not a voting member yet",
                    ctx.me.name
                ))));
            }
            return;
        }
        self.tasks.spawn(async move {
            let r = match ctx.raft.ensure_linearizable().await {
                Ok(_) => {
                    let shard = ctx.shard.clone();
                    tokio::task::spawn_blocking(move || f(&shard))
                        .await
                        .map_err(join_err)
                        .and_then(|r| r)
                }
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(to))) => {
                    Err(VectorError::NotLeader(to.leader_node.map(|n| n.name)))
                }
                Err(e) => Err(raft_err(e)),
            };
            reply.send(r);
        });
    }
}
