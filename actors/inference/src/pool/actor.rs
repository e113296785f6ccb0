//! The pool actor at `inference/<model-id>`: the model's front door. It owns a bounded queue,
//! forms embedding batches, hands jobs to the least-loaded idle worker, restarts workers that
//! fail, and reports health by running real work on a worker.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::health::{Check, Report};
use abi_protocol::inference::{
    Chat, ChatCancel, ChatOpen, ChatPoll, Describe, Embed, InferenceError, ModelInfo, ModelKind,
};
use abi_runtime::Call;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::atomic::AtomicBool;

use super::catalog::{ModelEntry, ModelSource};
use super::config::PoolConfig;
use super::lease::Placement;
use super::metrics::PoolMetrics;
use super::streams::Streams;
use super::worker::{Job, Notify, Worker, WorkerArgs};

/// Messages a pool handles: requests from anywhere plus its workers' notices.
pub enum PoolMsg {
    /// Embed texts.
    Embed(Call<Embed>),
    /// Whole chat completion.
    Chat(Call<Chat>),
    /// Open a streamed chat completion.
    ChatOpen(Call<ChatOpen>),
    /// Poll a stream.
    ChatPoll(Call<ChatPoll>),
    /// Cancel a stream.
    ChatCancel(Call<ChatCancel>),
    /// Describe the model.
    Describe(Call<Describe>),
    /// Readiness probe.
    Health(Call<Check>),
    /// A worker finished a job.
    WorkerDone(usize),
    /// The batching timer fired.
    Flush,
    /// Test hook: the next embedding batch panics inside its worker (fault injection).
    PoisonNextEmbed,
}

macro_rules! from_call {
    ($($req:ty => $var:ident),*) => {$(
        impl From<Call<$req>> for PoolMsg {
            fn from(c: Call<$req>) -> Self { Self::$var(c) }
        }
    )*};
}
from_call!(Embed => Embed, Chat => Chat, ChatOpen => ChatOpen, ChatPoll => ChatPoll,
    ChatCancel => ChatCancel, Describe => Describe, Check => Health);

/// Start arguments of a pool.
pub struct PoolArgs {
    /// The model.
    pub entry: ModelEntry,
    /// Sizing.
    pub config: PoolConfig,
    /// This pool's metric series.
    pub metrics: PoolMetrics,
    /// The node, to announce the pool in the cluster metadata (`None` in unit tests).
    pub node: Option<abi_runtime::Node>,
}

/// The pool actor.
pub struct Pool;

enum Pending {
    Embed(Call<Embed>, Instant),
    Chat(Call<Chat>),
    Stream(u64, abi_protocol::inference::ChatRequest, Arc<AtomicBool>),
    Health(Call<Check>),
}

struct Slot {
    actor: Option<ActorRef<Job>>,
    busy: bool,
    jobs_done: u64,
    restarts: u32,
}

/// A pool's state.
pub struct PoolState {
    entry: ModelEntry,
    config: PoolConfig,
    info: ModelInfo,
    slots: Vec<Slot>,
    queue: VecDeque<Pending>,
    streams: Streams,
    next_stream: u64,
    flush_timer: Option<FlushTimer>,
    poison_next: bool,
    metrics: PoolMetrics,
    /// Announces the pool in the cluster metadata (aborted when the pool stops).
    announce: Option<JoinHandle<()>>,
    /// Where workers run and whom they lease the device from.
    placement: Placement,
}

type FlushTimer = JoinHandle<Result<(), ractor::MessagingErr<PoolMsg>>>;

struct ToPool(ActorRef<PoolMsg>);

impl Notify for ToPool {
    fn done(&self, index: usize) {
        let _ = self.0.send_message(PoolMsg::WorkerDone(index));
    }
}

fn kind_of(entry: &ModelEntry) -> ModelKind {
    entry.kind().unwrap_or(ModelKind::Embedding)
}

async fn spawn_worker(
    myself: &ActorRef<PoolMsg>,
    entry: &ModelEntry,
    index: usize,
    info: &Arc<parking_lot::Mutex<Option<ModelInfo>>>,
    metrics: &PoolMetrics,
    placement: &Placement,
) -> Result<ActorRef<Job>, String> {
    let args = WorkerArgs {
        placement: placement.clone(),
        generated_tokens: metrics.generated_tokens.clone(),
        model: entry.id.clone(),
        source: entry.source.clone(),
        index,
        notify: Arc::new(ToPool(myself.clone())),
        info: info.clone(),
    };
    Actor::spawn_linked(None, Worker, args, myself.get_cell())
        .await
        .map(|(r, _join)| r)
        .map_err(|e| e.to_string())
}

/// Records in the cluster metadata that this node runs the pool, so that every gateway
/// finds it there. Retried while the group has no leader; a node without `[raft]` has
/// no metadata actor and nothing to announce to.
async fn announce(node: abi_runtime::Node, info: ModelInfo) {
    use abi_protocol::raft::{MetaCommand, PATH, Propose};
    let Ok(path) = node.path(PATH) else { return };
    let cmd = MetaCommand::JoinPool {
        name: info.id.clone(),
        kind: match info.kind {
            ModelKind::Embedding => "embedding",
            ModelKind::Chat => "chat",
        }
        .into(),
        node: node.id().to_string(),
    };
    for _ in 0..60 {
        match node
            .ask(&path, Propose::new(cmd.clone()), Duration::from_secs(5))
            .await
        {
            Ok(Ok(_)) => return,
            Err(abi_runtime::AskError::NoSuchActor(_)) => return,
            Ok(Err(e)) => tracing::debug!(error = %e, "pool announcement retried"),
            Err(e) => tracing::debug!(error = %e, "pool announcement retried"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tracing::warn!(model = %info.id, "pool not recorded in the cluster metadata");
}

fn source_path(entry: &ModelEntry) -> String {
    match &entry.source {
        ModelSource::Embedding(p) | ModelSource::Chat(p) => p.display().to_string(),
        ModelSource::Unrecognised { dir, .. } => dir.display().to_string(),
    }
}

impl PoolState {
    fn unavailable(&self) -> Option<InferenceError> {
        self.info
            .unavailable
            .as_ref()
            .map(|r| InferenceError::Unavailable {
                model: self.info.id.clone(),
                reason: r.clone(),
            })
    }

    fn overloaded(&self) -> InferenceError {
        InferenceError::Overloaded {
            model: self.info.id.clone(),
            retry_after_ms: 1000,
        }
    }

    fn wrong_kind(&self) -> InferenceError {
        InferenceError::WrongKind {
            model: self.info.id.clone(),
            kind: self.info.kind,
        }
    }

    /// Least-loaded idle worker: idle, fewest jobs done (spreads work evenly).
    fn idle_worker(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy && s.actor.is_some())
            .min_by_key(|(_, s)| s.jobs_done)
            .map(|(i, _)| i)
    }

    fn queued_inputs(&self) -> usize {
        self.queue
            .iter()
            .map(|p| match p {
                Pending::Embed(c, _) => c.request().inputs.len(),
                _ => 0,
            })
            .sum()
    }

    /// Hands queued work to idle workers.
    fn pump(&mut self, myself: &ActorRef<PoolMsg>) {
        self.pump_queue(myself);
        self.metrics.queue_depth.set(self.queue.len() as i64);
    }

    fn pump_queue(&mut self, myself: &ActorRef<PoolMsg>) {
        while let Some(front) = self.queue.front() {
            let Some(w) = self.idle_worker() else {
                return;
            };
            // A partial embedding batch may wait a little for company.
            if let Pending::Embed(_, since) = front
                && self.config.max_wait_ms > 0
                && self.queued_inputs() < self.config.max_batch
            {
                let wait = Duration::from_millis(self.config.max_wait_ms);
                let waited = since.elapsed();
                if waited < wait {
                    if self
                        .flush_timer
                        .as_ref()
                        .is_none_or(FlushTimer::is_finished)
                    {
                        self.flush_timer =
                            Some(myself.send_after(wait - waited, || PoolMsg::Flush));
                    }
                    return;
                }
            }
            let job = match self.queue.pop_front() {
                Some(Pending::Embed(first, _)) => {
                    let mut inputs = first.request().inputs.len();
                    let mut batch = vec![first.into_parts()];
                    while let Some(Pending::Embed(next, _)) = self.queue.front() {
                        let n = next.request().inputs.len();
                        if inputs + n > self.config.max_batch {
                            break;
                        }
                        inputs += n;
                        if let Some(Pending::Embed(next, _)) = self.queue.pop_front() {
                            batch.push(next.into_parts());
                        }
                    }
                    self.metrics.batch_size.observe(inputs as f64);
                    Job::Embed(batch, std::mem::take(&mut self.poison_next))
                }
                Some(Pending::Chat(call)) => {
                    let (req, reply) = call.into_parts();
                    Job::Chat(req.0, reply)
                }
                Some(Pending::Stream(id, req, cancel)) => Job::Stream {
                    id,
                    req,
                    cancel,
                    streams: self.streams.clone(),
                },
                Some(Pending::Health(call)) => Job::Health(call.into_parts().1),
                None => return,
            };
            let slot = &mut self.slots[w];
            if let Some(actor) = &slot.actor {
                slot.busy = true;
                if let Err(e) = actor.send_message(job) {
                    // The worker just died; its supervision event will restart it. The job is
                    // lost with it: tell whoever waits.
                    slot.busy = false;
                    slot.actor = None;
                    if let ractor::MessagingErr::SendErr(job) = e {
                        fail_job(job, &self.info.id);
                    }
                }
            }
        }
    }

    fn enqueue(&mut self, p: Pending, myself: &ActorRef<PoolMsg>) -> Result<(), Pending> {
        if self.queue.len() >= self.config.queue_capacity {
            return Err(p);
        }
        self.queue.push_back(p);
        self.pump(myself);
        Ok(())
    }
}

fn fail_job(job: Job, model: &str) {
    let err = InferenceError::WorkerFailed(format!("worker of {model} stopped"));
    match job {
        Job::Embed(batch, _) => batch
            .into_iter()
            .for_each(|(_, r)| r.send(Err(err.clone()))),
        Job::Chat(_, r) => r.send(Err(err)),
        Job::Stream { id, streams, .. } => streams.finish(
            id,
            abi_protocol::inference::ChatFinished {
                outcome: Err(err),
                prompt_tokens: 0,
                completion_tokens: 0,
            },
        ),
        Job::Health(r) => r.send(Report {
            ready: false,
            detail: err.to_string(),
        }),
    }
}

impl Actor for Pool {
    type Msg = PoolMsg;
    type State = PoolState;
    type Arguments = PoolArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<PoolMsg>,
        args: PoolArgs,
    ) -> Result<PoolState, ActorProcessingErr> {
        let entry = args.entry;
        let mut info = ModelInfo {
            id: entry.id.clone(),
            kind: kind_of(&entry),
            dim: None,
            context: None,
            unavailable: None,
            load: 0,
        };
        let mut slots = Vec::new();
        let loaded = Arc::new(parking_lot::Mutex::new(None));
        // The config was validated before the pool started (an invalid one never gets here).
        let placement = Placement {
            device: args.config.device_spec().unwrap_or_default(),
            leaser: args.node.as_ref().and_then(|n| {
                n.path(&format!("{}/{}", abi_protocol::paths::INFERENCE, entry.id))
                    .ok()
                    .map(|p| (n.clone(), p))
            }),
        };
        // A model that cannot load leaves the pool up but unavailable: the node keeps running
        // and /ready names the path and the reason.
        for index in 0..args.config.workers {
            match spawn_worker(&myself, &entry, index, &loaded, &args.metrics, &placement).await {
                Ok(actor) => slots.push(Slot {
                    actor: Some(actor),
                    busy: false,
                    jobs_done: 0,
                    restarts: 0,
                }),
                Err(e) => {
                    tracing::error!(model = %entry.id, "cannot load {}: {e}", source_path(&entry));
                    info.unavailable = Some(format!("{}: {e}", source_path(&entry)));
                    for s in slots.drain(..) {
                        if let Some(a) = s.actor {
                            a.stop(None);
                        }
                    }
                    break;
                }
            }
        }
        if let Some(l) = loaded.lock().take()
            && info.unavailable.is_none()
        {
            info = l;
        }
        let announce = match &args.node {
            Some(node) if info.unavailable.is_none() => {
                Some(tokio::spawn(announce(node.clone(), info.clone())))
            }
            _ => None,
        };
        Ok(PoolState {
            entry,
            config: args.config,
            info,
            slots,
            queue: VecDeque::new(),
            streams: Streams::default(),
            next_stream: 1,
            flush_timer: None,
            poison_next: false,
            metrics: args.metrics,
            announce,
            placement,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PoolMsg>,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.flush_timer.take() {
            t.abort();
        }
        if let Some(t) = state.announce.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<PoolMsg>,
        msg: PoolMsg,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PoolMsg::Embed(call) => {
                if let Some(e) = state.unavailable() {
                    call.reply(Err(e));
                } else if state.info.kind != ModelKind::Embedding {
                    let e = state.wrong_kind();
                    call.reply(Err(e));
                } else if call.request().inputs.is_empty() {
                    call.reply(Err(InferenceError::InvalidInput(
                        "input must not be empty".into(),
                    )));
                } else if call.request().inputs.len() > state.config.max_inputs {
                    let e = InferenceError::InvalidInput(format!(
                        "too many inputs: {} (at most {})",
                        call.request().inputs.len(),
                        state.config.max_inputs
                    ));
                    call.reply(Err(e));
                } else if let Err(Pending::Embed(call, _)) =
                    state.enqueue(Pending::Embed(call, Instant::now()), &myself)
                {
                    let e = state.overloaded();
                    call.reply(Err(e));
                }
            }
            PoolMsg::Chat(call) => {
                if let Some(e) = state.unavailable() {
                    call.reply(Err(e));
                } else if state.info.kind != ModelKind::Chat {
                    let e = state.wrong_kind();
                    call.reply(Err(e));
                } else if let Err(e) = super::engine::generate_params(&call.request().0) {
                    call.reply(Err(e));
                } else if let Err(Pending::Chat(call)) = state.enqueue(Pending::Chat(call), &myself)
                {
                    let e = state.overloaded();
                    call.reply(Err(e));
                }
            }
            PoolMsg::ChatOpen(call) => {
                let (req, reply) = call.into_parts();
                if let Some(e) = state.unavailable() {
                    reply.send(Err(e));
                } else if state.info.kind != ModelKind::Chat {
                    reply.send(Err(state.wrong_kind()));
                } else if let Err(e) = super::engine::generate_params(&req.0) {
                    reply.send(Err(e));
                } else if state.queue.len() >= state.config.queue_capacity {
                    reply.send(Err(state.overloaded()));
                } else {
                    let id = state.next_stream;
                    state.next_stream += 1;
                    let cancel = state.streams.open(id);
                    reply.send(Ok(id));
                    let _ = state.enqueue(Pending::Stream(id, req.0, cancel), &myself);
                }
            }
            PoolMsg::ChatPoll(call) => {
                let (req, reply) = call.into_parts();
                state.streams.poll(req.stream, reply);
            }
            PoolMsg::ChatCancel(call) => {
                let id = call.request().stream;
                state.streams.cancel(id);
                state
                    .queue
                    .retain(|p| !matches!(p, Pending::Stream(s, _, _) if *s == id));
            }
            PoolMsg::Describe(call) => {
                let mut info = state.info.clone();
                let busy = state.slots.iter().filter(|s| s.busy).count();
                info.load = (state.queue.len() + busy) as u32;
                call.reply(info);
            }
            PoolMsg::Health(call) => {
                if let Some(r) = &state.info.unavailable {
                    call.reply(Report {
                        ready: false,
                        detail: format!("model {} unavailable: {r}", state.info.id),
                    });
                } else if state.slots.iter().all(|s| s.actor.is_none()) {
                    call.reply(Report {
                        ready: false,
                        detail: format!("model {}: no worker running", state.info.id),
                    });
                } else {
                    // Probes jump the queue: readiness must not wait behind a long backlog.
                    state.queue.push_front(Pending::Health(call));
                    state.pump(&myself);
                }
            }
            PoolMsg::WorkerDone(i) => {
                if let Some(s) = state.slots.get_mut(i) {
                    s.busy = false;
                    s.jobs_done += 1;
                }
                state.pump(&myself);
            }
            PoolMsg::Flush => state.pump(&myself),
            PoolMsg::PoisonNextEmbed => state.poison_next = true,
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<PoolMsg>,
        evt: SupervisionEvent,
        state: &mut PoolState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why): (ActorCell, String) = match evt {
            SupervisionEvent::ActorFailed(cell, e) => (cell, e.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(i) = state.slots.iter().position(|s| {
            s.actor
                .as_ref()
                .is_some_and(|a| a.get_id() == cell.get_id())
        }) else {
            return Ok(());
        };
        tracing::warn!(model = %state.info.id, worker = i, "worker exited ({why}); restarting");
        state.slots[i].actor = None;
        state.slots[i].busy = false;
        state.slots[i].restarts += 1;
        let loaded = Arc::new(parking_lot::Mutex::new(None));
        match spawn_worker(
            &myself,
            &state.entry,
            i,
            &loaded,
            &state.metrics,
            &state.placement,
        )
        .await
        {
            Ok(a) => state.slots[i].actor = Some(a),
            Err(e) => {
                tracing::error!(model = %state.info.id, "worker restart failed: {e}");
                if state.slots.iter().all(|s| s.actor.is_none()) {
                    state.info.unavailable = Some(format!("{}: {e}", source_path(&state.entry)));
                }
            }
        }
        state.pump(&myself);
        Ok(())
    }
}

impl PoolState {
    /// Worker restarts so far (all slots).
    pub fn restarts(&self) -> u32 {
        self.slots.iter().map(|s| s.restarts).sum()
    }
}
