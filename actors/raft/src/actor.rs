//! The Raft actor at `<node>/raft`: owns the openraft handle, answers the group's RPCs
//! from other members, and serves proposals, reads, status and membership changes.
//!
//! Every request runs in a task owned by the actor (a `JoinSet` in its state, aborted
//! when it stops): a proposal waits for a quorum, which needs the actor to keep taking
//! the AppendEntries its peers send meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::health::{Check, Report};
use abi_protocol::raft::{
    Applied, ChangeMembership, ClusterMeta, GetStatus, MAX_FORWARDS, MembershipChange, Propose,
    RaftFailure, RaftStatus, ReadMeta,
};
use abi_protocol::{ActorPath, NodeId, Request};
use abi_runtime::{AskError, Call, ChildSpec, Node, Started};
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError,
};
use openraft::{ChangeMembers, ServerState, SnapshotPolicy};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;

use crate::batch::Batcher;
use crate::log_store::LogStore;
use crate::metrics::{Outcome, RaftMetrics};
use crate::network::{LearnAddr, Network};
use crate::rpc::{
    AppendRpc, SnapshotRpc, VoteRpc, answer_append, answer_snapshot, answer_vote, view,
};
use crate::state_machine::{MetaView, StateMachine};
use crate::types::{Member, MemberId, Raft, TypeConfig, member_id};

/// Wait between tries of a membership change while the previous one is still committing.
const CHANGE_RETRY: Duration = Duration::from_millis(20);

/// Pause before retrying a forward to a leader that could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How the group is set up on this node (cloned on every restart).
#[derive(Clone)]
pub struct RaftConfig {
    /// Where the log (`log.redb`) and the snapshot live.
    pub dir: PathBuf,
    /// This node as a member.
    pub me: Member,
    /// The initial voters (from TOML); used once, when the group has no log yet.
    /// Empty for a node that joins later as a learner.
    pub bootstrap: Vec<Member>,
    /// Minimum election timeout; the maximum is twice it.
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every: u64,
    /// Tells the transport a member's address.
    pub learn: LearnAddr,
    /// Node status changes seen by this node's membership (`(node, status)`); the
    /// leader records them in the metadata. `None` without a cluster transport.
    pub statuses: Option<StatusFeed>,
}

/// Subscribes to node status changes (called on every start of the actor).
pub type StatusFeed =
    Arc<dyn Fn() -> futures::stream::BoxStream<'static, (String, String)> + Send + Sync>;

impl std::fmt::Debug for RaftConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftConfig")
            .field("dir", &self.dir)
            .field("me", &self.me)
            .field("bootstrap", &self.bootstrap)
            .finish_non_exhaustive()
    }
}

/// Messages of the Raft actor.
#[derive(Debug)]
pub enum RaftMsg {
    /// AppendEntries from the leader.
    Append(Call<AppendRpc>),
    /// RequestVote from a candidate.
    Vote(Call<VoteRpc>),
    /// Snapshot chunk from the leader.
    Snapshot(Call<SnapshotRpc>),
    /// A metadata change.
    Propose(Call<Propose>),
    /// A metadata read.
    Read(Call<ReadMeta>),
    /// Group status.
    Status(Call<GetStatus>),
    /// Membership change.
    Change(Call<ChangeMembership>),
    /// Readiness probe.
    Check(Call<Check>),
}

macro_rules! from_call {
    ($($req:ty => $var:ident),* $(,)?) => {$(
        impl From<Call<$req>> for RaftMsg {
            fn from(c: Call<$req>) -> Self {
                RaftMsg::$var(c)
            }
        }
    )*};
}

from_call!(
    AppendRpc => Append,
    VoteRpc => Vote,
    SnapshotRpc => Snapshot,
    Propose => Propose,
    ReadMeta => Read,
    GetStatus => Status,
    ChangeMembership => Change,
    Check => Check,
);

/// Shared by the request tasks.
#[derive(Clone)]
struct Ctx {
    batcher: Batcher,
    metrics: RaftMetrics,
    raft: Raft,
    node: Node,
    me: Member,
    view: MetaView,
    learn: LearnAddr,
    /// The initial voters: where a node outside the group sends what it cannot answer.
    bootstrap: Vec<Member>,
}

/// The actor's state.
pub struct RaftState {
    ctx: Ctx,
    tasks: JoinSet<()>,
}

/// The Raft actor.
#[derive(Debug)]
pub struct RaftActor;

/// Errors starting the group.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The log database could not be opened.
    #[error("opening raft log {path}: {source}")]
    Log {
        /// Database file.
        path: PathBuf,
        /// Cause.
        source: redb::Error,
    },
    /// Storage or configuration refused by openraft.
    #[error("raft: {0}")]
    Raft(String),
}

fn openraft_config(c: &RaftConfig) -> Result<openraft::Config, StartError> {
    let cfg = openraft::Config {
        cluster_name: "abi".into(),
        heartbeat_interval: c.heartbeat_ms.max(10),
        election_timeout_min: c.election_timeout_ms.max(c.heartbeat_ms * 3),
        election_timeout_max: c.election_timeout_ms.max(c.heartbeat_ms * 3) * 2,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(c.snapshot_every.max(1)),
        // A member that fell less than this far behind catches up from the log tail;
        // further behind, it gets the snapshot.
        max_in_snapshot_log_to_keep: c.snapshot_every.clamp(1, 10_000),
        ..Default::default()
    };
    cfg.validate().map_err(|e| StartError::Raft(e.to_string()))
}

impl Actor for RaftActor {
    type Msg = RaftMsg;
    type State = RaftState;
    type Arguments = (Node, RaftConfig);

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        (node, c): (Node, RaftConfig),
    ) -> Result<Self::State, ActorProcessingErr> {
        std::fs::create_dir_all(&c.dir)?;
        let path = c.dir.join("log.redb");
        let log = LogStore::<TypeConfig>::open(&path).map_err(|source| StartError::Log {
            path: path.clone(),
            source,
        })?;
        let sm = StateMachine::open(&c.dir).map_err(|e| StartError::Raft(e.to_string()))?;
        let view = sm.view();
        let config = Arc::new(openraft_config(&c)?);
        let network =
            Network::<TypeConfig>::new(node.clone(), c.learn.clone(), abi_protocol::raft::PATH);
        let raft = Raft::new(member_id(&c.me.name), config, network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        for m in &c.bootstrap {
            if let Ok(id) = NodeId::new(m.name.clone()) {
                (c.learn)(&id, &m.addr);
            }
        }
        if c.bootstrap.iter().any(|m| m.name == c.me.name)
            && !raft
                .is_initialized()
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?
        {
            // Every initial voter proposes the same membership; the identical first
            // entries make that safe, and the ones that lose the race are told so.
            let members: BTreeMap<MemberId, Member> = c
                .bootstrap
                .iter()
                .map(|m| (member_id(&m.name), m.clone()))
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(voters = c.bootstrap.len(), "raft group initialised"),
                Err(e) => tracing::debug!(error = %e, "raft initialise skipped"),
            }
        }
        let metrics = node.metrics().get_or_init(RaftMetrics::register);
        let mut tasks = JoinSet::new();
        tasks.spawn(watch_metrics(
            raft.clone(),
            metrics.clone(),
            node.clone(),
            c.me.name.clone(),
        ));
        let batcher = Batcher::start(raft.clone(), &mut tasks);
        if let Some(feed) = &c.statuses {
            tasks.spawn(record_statuses(
                raft.clone(),
                batcher.clone(),
                member_id(&c.me.name),
                feed(),
            ));
        }
        Ok(RaftState {
            ctx: Ctx {
                batcher,
                metrics,
                raft,
                node,
                me: c.me,
                view,
                learn: c.learn,
                bootstrap: c.bootstrap,
            },
            tasks,
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        msg: RaftMsg,
        state: &mut RaftState,
    ) -> Result<(), ActorProcessingErr> {
        while let Some(done) = state.tasks.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                return Err(format!("raft request task panicked: {e}").into());
            }
        }
        let ctx = state.ctx.clone();
        match msg {
            RaftMsg::Append(call) => answer_append(&mut state.tasks, &ctx.raft, call),
            RaftMsg::Vote(call) => answer_vote(&mut state.tasks, &ctx.raft, call),
            RaftMsg::Snapshot(call) => answer_snapshot(&mut state.tasks, &ctx.raft, call),
            RaftMsg::Propose(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                state.tasks.spawn(async move {
                    let t = Instant::now();
                    let r = ctx.propose(req, deadline).await;
                    ctx.metrics
                        .proposal_seconds
                        .observe(t.elapsed().as_secs_f64());
                    let outcome = match &r {
                        Ok(_) => "ok",
                        Err(RaftFailure::NoLeader) => "no_leader",
                        Err(RaftFailure::LeaderUnreachable { .. }) => "leader_unreachable",
                        Err(RaftFailure::TooManyForwards(_)) => "too_many_forwards",
                        Err(RaftFailure::Invalid(_)) => "invalid",
                        Err(RaftFailure::Disabled | RaftFailure::Internal(_)) => "error",
                    };
                    ctx.metrics
                        .proposals
                        .get_or_create(&Outcome {
                            outcome: outcome.into(),
                        })
                        .inc();
                    reply.send(r);
                });
            }
            RaftMsg::Read(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                state
                    .tasks
                    .spawn(async move { reply.send(ctx.read(req, deadline).await) });
            }
            RaftMsg::Change(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                state
                    .tasks
                    .spawn(async move { reply.send(ctx.change(req, deadline).await) });
            }
            RaftMsg::Status(call) => call.reply(Ok(ctx.status())),
            RaftMsg::Check(call) => {
                let s = ctx.status();
                call.reply(Report {
                    ready: s.leader.is_some(),
                    detail: match &s.leader {
                        Some(l) => format!("{} in term {}, leader {l}", s.state, s.term),
                        None => format!("{} in term {}, no leader", s.state, s.term),
                    },
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<Self::Msg>,
        state: &mut RaftState,
    ) -> Result<(), ActorProcessingErr> {
        state.tasks.abort_all();
        if let Err(e) = state.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft core did not shut down cleanly");
        }
        Ok(())
    }
}

/// The leader writes node status changes into the metadata. Every member keeps the
/// latest status per node, so one that becomes leader writes what it saw meanwhile.
async fn record_statuses(
    raft: Raft,
    batcher: Batcher,
    me: MemberId,
    mut changes: futures::stream::BoxStream<'static, (String, String)>,
) {
    use futures::StreamExt;
    let mut latest: BTreeMap<String, String> = BTreeMap::new();
    let mut metrics = raft.metrics();
    let mut leading = false;
    loop {
        let mut dirty: Vec<(String, String)> = Vec::new();
        tokio::select! {
            change = changes.next() => match change {
                Some((node, status)) => {
                    latest.insert(node.clone(), status.clone());
                    if leading {
                        dirty.push((node, status));
                    }
                }
                None => return,
            },
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = metrics.borrow_and_update().current_leader == Some(me);
                if now && !leading {
                    dirty.extend(latest.iter().map(|(n, s)| (n.clone(), s.clone())));
                }
                leading = now;
            }
        }
        for (node, status) in dirty {
            if let Err(e) = batcher
                .write(abi_protocol::raft::MetaCommand::SetNodeStatus {
                    node: node.clone(),
                    status,
                })
                .await
            {
                tracing::debug!(%node, error = %e, "node status not recorded");
            }
        }
    }
}

/// Mirrors openraft's metrics into Prometheus and logs leader changes as node events.
async fn watch_metrics(raft: Raft, m: RaftMetrics, node: Node, me: String) {
    let mut rx = raft.metrics();
    let mut leader = None;
    loop {
        let r = rx.borrow_and_update().clone();
        m.term.set(r.current_term as i64);
        m.is_leader.set(i64::from(r.state == ServerState::Leader));
        let applied = r.last_applied.map_or(0, |l| l.index);
        let last = r.last_log_index.unwrap_or(0);
        m.commit_index.set(applied as i64);
        m.last_log_index.set(last as i64);
        m.apply_lag.set(last.saturating_sub(applied) as i64);
        if r.current_leader != leader {
            leader = r.current_leader;
            m.leader_changes.inc();
            let name = leader.and_then(|id| {
                r.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.name.clone())
            });
            node.events().push(
                format!("{me}/{}", abi_protocol::raft::PATH),
                abi_runtime::events::EventKind::LeaderChanged,
                match name {
                    Some(n) => format!("raft leader is {n} (term {})", r.current_term),
                    None => format!("raft has no leader (term {})", r.current_term),
                },
            );
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Where a request goes next when this member is not the leader.
enum Route {
    Here,
    Forward(Member),
}

impl Ctx {
    /// Whether this member leads the group right now.
    fn leads(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(member_id(&self.me.name))
    }

    fn status(&self) -> RaftStatus {
        let m = self.raft.metrics().borrow().clone();
        let v = view(&m);
        let mem = m.membership_config.membership();
        RaftStatus {
            node: self.me.name.clone(),
            state: v.state.into(),
            leader: v.leader,
            term: v.term,
            commit_index: v.applied,
            last_log_index: m.last_log_index,
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: v.voters,
            learners: v.learners,
            addrs: mem
                .nodes()
                .map(|(_, n)| (n.name.clone(), n.addr.clone()))
                .collect(),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
        }
    }

    /// Waits (up to the deadline) for a leader to be known, then says where to go.
    async fn route(
        &self,
        hint: ForwardToLeader<MemberId, Member>,
        deadline: Instant,
    ) -> Result<Route, RaftFailure> {
        if let Some(leader) = hint.leader_node {
            return Ok(if leader.name == self.me.name {
                Route::Here
            } else {
                Route::Forward(leader)
            });
        }
        // Election in progress: wait for its outcome rather than fail the caller at once.
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_millis(50));
        let m = self
            .raft
            .wait(Some(wait))
            .metrics(
                |m| {
                    m.current_leader.is_some_and(|l| {
                        m.membership_config.membership().voter_ids().any(|v| v == l)
                    })
                },
                "a voting leader is known",
            )
            .await
            .map_err(|_| RaftFailure::NoLeader)?;
        let leader = m.current_leader.ok_or(RaftFailure::NoLeader)?;
        let node = m
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or(RaftFailure::NoLeader)?;
        Ok(if node.name == self.me.name {
            Route::Here
        } else {
            Route::Forward(node)
        })
    }

    /// Sends `req` to the leader. When the leader could not be reached at all (so the
    /// request was never delivered), waits for the group to notice and retries with
    /// whoever leads next, until the deadline.
    async fn forward<R>(&self, mut leader: Member, req: R, deadline: Instant) -> R::Reply
    where
        R: Request<Reply = Result<<R as ForwardReply>::Ok, RaftFailure>> + ForwardReply + Clone,
    {
        loop {
            let to = NodeId::new(leader.name.clone())
                .map_err(|e| RaftFailure::Internal(e.to_string()))?;
            (self.learn)(&to, &leader.addr);
            let path = ActorPath::new(to, 0, abi_protocol::raft::PATH)
                .map_err(|e| RaftFailure::Internal(e.to_string()))?;
            let ttl = deadline.saturating_duration_since(Instant::now());
            let old = member_id(&leader.name);
            let mut metrics = self.raft.metrics();
            // A leader killed mid-request never answers; the group electing another one is
            // the earliest sign. Every metadata command is idempotent (set, delete,
            // membership targets), so re-sending to the new leader is safe.
            let moved = metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != old));
            let err = tokio::select! {
                r = self.node.ask(&path, req.clone(), ttl) => match r {
                    Ok(r) => return r,
                    Err(e) => e,
                },
                Ok(_) = moved => AskError::PeerUnreachable {
                    node: leader.name.clone(),
                    reason: "leadership moved while the request was in flight".into(),
                },
            };
            let undelivered = matches!(
                err,
                AskError::PeerUnreachable { .. } | AskError::NoSuchActor(_)
            );
            let failure = RaftFailure::LeaderUnreachable {
                leader: leader.name.clone(),
                reason: err.to_string(),
            };
            if !undelivered || Instant::now() + RETRY_PAUSE >= deadline {
                return Err(failure);
            }
            if self.raft.metrics().borrow().current_leader == Some(old) {
                // Not known to have moved yet: give the group a moment.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let m = self.raft.metrics().borrow().clone();
            let next = m
                .current_leader
                .and_then(|id| m.membership_config.membership().get_node(&id).cloned());
            match next {
                Some(n) if n.name == self.me.name => return Err(failure),
                Some(n) => leader = n,
                // No leader known yet: keep trying the old one until one is.
                None => {}
            }
        }
    }

    /// Retries while no leader is known (an election, or a leader that just removed
    /// itself), up to the deadline: callers see a slow write rather than a failed one.
    async fn until_leader<T, F, Fut>(&self, deadline: Instant, f: F) -> Result<T, RaftFailure>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, RaftFailure>>,
    {
        loop {
            match f().await {
                Err(RaftFailure::NoLeader) if Instant::now() + RETRY_PAUSE < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Whether this node is outside the group (not a voter or learner yet): it knows
    /// neither a leader nor the metadata, so it asks a member.
    fn outsider(&self) -> bool {
        let m = self.raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&member_id(&self.me.name)).is_none()
    }

    /// Sends `req` to the initial voters in turn until one answers.
    async fn via_member<R>(&self, req: R, deadline: Instant) -> R::Reply
    where
        R: Request<Reply = Result<<R as ForwardReply>::Ok, RaftFailure>> + ForwardReply + Clone,
    {
        let mut last = RaftFailure::NoLeader;
        for m in self.bootstrap.iter().filter(|m| m.name != self.me.name) {
            let Ok(id) = NodeId::new(m.name.clone()) else {
                continue;
            };
            (self.learn)(&id, &m.addr);
            let Ok(path) = ActorPath::new(id, 0, abi_protocol::raft::PATH) else {
                continue;
            };
            let ttl = deadline.saturating_duration_since(Instant::now());
            match self.node.ask(&path, req.clone(), ttl).await {
                Ok(r) => return r,
                Err(e) => {
                    last = RaftFailure::LeaderUnreachable {
                        leader: m.name.clone(),
                        reason: e.to_string(),
                    }
                }
            }
        }
        Err(last)
    }

    async fn propose(&self, req: Propose, deadline: Instant) -> Result<Applied, RaftFailure> {
        if self.outsider() && req.forwards < MAX_FORWARDS {
            let fwd = Propose {
                forwards: req.forwards + 1,
                ..req
            };
            return self.via_member(fwd, deadline).await;
        }
        self.until_leader(deadline, || self.propose_once(req.clone(), deadline))
            .await
    }

    async fn propose_once(&self, req: Propose, deadline: Instant) -> Result<Applied, RaftFailure> {
        loop {
            match self.batcher.write(req.command.clone()).await {
                Ok((index, previous)) => {
                    return Ok(Applied {
                        index,
                        leader: self.me.name.clone(),
                        previous,
                    });
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    match self.route(f, deadline).await? {
                        Route::Here => continue,
                        Route::Forward(leader) => {
                            if req.forwards >= MAX_FORWARDS {
                                return Err(RaftFailure::TooManyForwards(req.forwards));
                            }
                            let next = Propose {
                                command: req.command.clone(),
                                forwards: req.forwards + 1,
                            };
                            match self.forward(leader, next, deadline).await {
                                // Leadership moved here while forwarding: write locally.
                                Err(RaftFailure::LeaderUnreachable { .. }) if self.leads() => {
                                    continue;
                                }
                                other => return other,
                            }
                        }
                    }
                }
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                    return Err(RaftFailure::Invalid(e.to_string()));
                }
                Err(RaftError::Fatal(e)) => return Err(RaftFailure::Internal(e.to_string())),
            }
        }
    }

    async fn read(&self, req: ReadMeta, deadline: Instant) -> Result<ClusterMeta, RaftFailure> {
        if self.outsider() && !self.bootstrap.is_empty() {
            return self.via_member(req, deadline).await;
        }
        self.until_leader(deadline, || self.read_once(req.clone(), deadline))
            .await
    }

    async fn read_once(
        &self,
        req: ReadMeta,
        deadline: Instant,
    ) -> Result<ClusterMeta, RaftFailure> {
        if !req.linearizable {
            return Ok(self.view.meta());
        }
        loop {
            match self.raft.ensure_linearizable().await {
                Ok(_) => return Ok(self.view.meta()),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    match self.route(f, deadline).await? {
                        Route::Here => continue,
                        Route::Forward(leader) => {
                            match self.forward(leader, req.clone(), deadline).await {
                                Err(RaftFailure::LeaderUnreachable { .. }) if self.leads() => {
                                    continue;
                                }
                                other => return other,
                            }
                        }
                    }
                }
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                    return Err(RaftFailure::Internal(e.to_string()));
                }
                Err(RaftError::Fatal(e)) => return Err(RaftFailure::Internal(e.to_string())),
            }
        }
    }

    async fn change(
        &self,
        req: ChangeMembership,
        deadline: Instant,
    ) -> Result<RaftStatus, RaftFailure> {
        self.until_leader(deadline, || self.change_once(req.clone(), deadline))
            .await
    }

    async fn change_once(
        &self,
        req: ChangeMembership,
        deadline: Instant,
    ) -> Result<RaftStatus, RaftFailure> {
        let res = match &req.change {
            // Only the leader's membership is authoritative: a follower may not have
            // applied the entry that added a learner yet, and would refuse to promote it.
            MembershipChange::Promote { .. } | MembershipChange::Remove { .. } if !self.leads() => {
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(
                    ForwardToLeader::empty(),
                )))
            }
            MembershipChange::AddLearner { node, addr } => {
                let id =
                    NodeId::new(node.clone()).map_err(|e| RaftFailure::Invalid(e.to_string()))?;
                let _: std::net::SocketAddr = addr
                    .parse()
                    .map_err(|e| RaftFailure::Invalid(format!("address {addr:?}: {e}")))?;
                (self.learn)(&id, addr);
                let member = Member {
                    name: node.clone(),
                    addr: addr.clone(),
                };
                self.raft.add_learner(member_id(node), member, true).await
            }
            MembershipChange::Promote { nodes } => {
                let ids = self.known(nodes)?;
                self.raft
                    .change_membership(ChangeMembers::AddVoterIds(ids), false)
                    .await
            }
            MembershipChange::Remove { nodes } => {
                let ids = self.known(nodes)?;
                let (voters, learners): (BTreeSet<_>, BTreeSet<_>) = {
                    let m = self.raft.metrics().borrow().membership_config.clone();
                    let v: BTreeSet<MemberId> = m.membership().voter_ids().collect();
                    ids.into_iter().partition(|id| v.contains(id))
                };
                let mut last = None;
                if !voters.is_empty() {
                    last = Some(
                        self.raft
                            .change_membership(ChangeMembers::RemoveVoters(voters), false)
                            .await,
                    );
                }
                if !learners.is_empty() && last.as_ref().is_none_or(Result::is_ok) {
                    last = Some(
                        self.raft
                            .change_membership(ChangeMembers::RemoveNodes(learners), false)
                            .await,
                    );
                }
                last.ok_or_else(|| RaftFailure::Invalid("no nodes to remove".into()))?
            }
        };
        match res {
            Ok(_) => Ok(self.status()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                match self.route(f, deadline).await? {
                    Route::Here => Err(RaftFailure::NoLeader),
                    Route::Forward(leader) => {
                        if req.forwards >= MAX_FORWARDS {
                            return Err(RaftFailure::TooManyForwards(req.forwards));
                        }
                        let next = ChangeMembership {
                            change: req.change,
                            forwards: req.forwards + 1,
                        };
                        self.forward(leader, next, deadline).await
                    }
                }
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(_),
            ))) if Instant::now() + CHANGE_RETRY < deadline => {
                // The previous change (a learner just added, say) is still being
                // committed; it settles within milliseconds, so wait instead of failing.
                tokio::time::sleep(CHANGE_RETRY).await;
                Box::pin(self.change_once(req, deadline)).await
            }
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(RaftFailure::Invalid(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(RaftFailure::Internal(e.to_string())),
        }
    }

    /// Ids of members known to the group; unknown names are an error.
    fn known(&self, nodes: &[String]) -> Result<BTreeSet<MemberId>, RaftFailure> {
        let m = self.raft.metrics().borrow().membership_config.clone();
        nodes
            .iter()
            .map(|n| {
                let id = member_id(n);
                m.membership().get_node(&id).map(|_| id).ok_or_else(|| {
                    RaftFailure::Invalid(format!("{n} is not a member of the group"))
                })
            })
            .collect()
    }
}

/// The success type of a forwardable request's reply.
pub trait ForwardReply {
    /// What the leader returns on success.
    type Ok;
}

impl ForwardReply for Propose {
    type Ok = Applied;
}
impl ForwardReply for ReadMeta {
    type Ok = ClusterMeta;
}
impl ForwardReply for ChangeMembership {
    type Ok = RaftStatus;
}

/// The supervisor child for the group, registered at `<node>/raft`.
pub fn child_spec(config: RaftConfig) -> ChildSpec {
    ChildSpec::worker(abi_protocol::raft::PATH, move |ctx| {
        let config = config.clone();
        async move {
            ctx.node.register_health_check(ctx.path.clone());
            let r = ctx.spawn(RaftActor, (ctx.node.clone(), config)).await?;
            Ok(Started::new(r)
                .serves::<AppendRpc>()
                .serves::<VoteRpc>()
                .serves::<SnapshotRpc>()
                .serves::<Propose>()
                .serves::<ReadMeta>()
                .serves::<GetStatus>()
                .serves::<ChangeMembership>()
                .serves::<Check>())
        }
    })
}
