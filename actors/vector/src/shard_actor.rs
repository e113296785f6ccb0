//! The actor that owns one [`Shard`], at `vector/<collection>/shard-<i>`.
//!
//! Writes are applied in mailbox order (the handler awaits the blocking apply); their fsync and
//! the acknowledgement run in a tracked task so that concurrent writers share fsyncs (group
//! commit). Reads run on the shard read pool (one thread per core, shared by every shard:
//! a 4-shard search on 2 cores queues rather than time-slices) and answer from there; a
//! read holds its shard by `Arc`, so one in flight when the actor stops still completes.
//! Every task lives in the actor's `JoinSet` and is aborted when the actor stops; a final
//! snapshot is written on stop.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use abi_protocol::health::{Check, Report};
use abi_protocol::vector::VectorError;
use abi_protocol::vector::WriteAck;
use abi_protocol::vector::shard::{
    ShardCount, ShardDelete, ShardGet, ShardScroll, ShardSearch, ShardSnapshot, ShardUpsert,
};
use abi_runtime::Call;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;

use crate::metrics::ShardMetrics;
use crate::shard::{Shard, ShardConfig};

/// How often a shard with new writes snapshots itself.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);

/// Messages of a shard actor: the requests it serves plus its own timer.
pub enum ShardMsg {
    /// Insert or replace.
    Upsert(Call<ShardUpsert>),
    /// Delete by id.
    Delete(Call<ShardDelete>),
    /// Get by id.
    Get(Call<ShardGet>),
    /// k-NN queries.
    Search(Call<ShardSearch>),
    /// Count.
    Count(Call<ShardCount>),
    /// Scroll.
    Scroll(Call<ShardScroll>),
    /// Snapshot now.
    Snapshot(Call<ShardSnapshot>),
    /// Readiness probe.
    Health(Call<Check>),
    /// Periodic snapshot timer.
    Tick,
}

macro_rules! from_call {
    ($($req:ty => $var:ident),* $(,)?) => {$(
        impl From<Call<$req>> for ShardMsg {
            fn from(c: Call<$req>) -> Self {
                ShardMsg::$var(c)
            }
        }
    )*};
}
from_call!(ShardUpsert => Upsert, ShardDelete => Delete, ShardGet => Get, ShardSearch => Search,
    ShardCount => Count, ShardScroll => Scroll, ShardSnapshot => Snapshot, Check => Health);

/// The shard actor (stateless handler; the shard lives in [`ShardState`]).
#[derive(Debug)]
pub struct ShardActor;

/// Where a shard lives and how it is configured.
#[derive(Debug, Clone)]
pub struct ShardArgs {
    /// Shard directory.
    pub dir: PathBuf,
    /// Engine configuration.
    pub config: ShardConfig,
    /// This shard's metric series.
    pub metrics: ShardMetrics,
    /// The shard actor's path as traces name it (`node/name`), written once.
    pub path: Arc<str>,
}

/// Runtime state of a shard actor.
pub struct ShardState {
    dir: PathBuf,
    shard: Arc<Shard>,
    tasks: JoinSet<()>,
    timer: Option<tokio::task::JoinHandle<()>>,
    dirty: bool,
    metrics: ShardMetrics,
}

pub(crate) fn join_err(e: tokio::task::JoinError) -> VectorError {
    VectorError::Unavailable(format!("shard task failed: {e}"))
}

/// Runs `f` on the shard read pool and hands its result to `reply` (shared with the
/// replica actor); a read panicking there answers an error. On a small shard the read
/// costs microseconds and runs right here: the hand-offs to and from a thread would cost
/// more.
pub(crate) fn spawn_read<T: Send + 'static>(
    shard: &Arc<Shard>,
    f: impl FnOnce(&Shard) -> Result<T, VectorError> + Send + 'static,
    reply: impl FnOnce(Result<T, VectorError>) + Send + 'static,
) {
    if shard.is_small() {
        reply(f(shard));
        return;
    }
    let shard = Arc::clone(shard);
    // The handler's span stays open until the read is answered.
    let span = tracing::Span::current();
    read_pool().spawn(move || {
        let _in = span.enter();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&shard)))
            .unwrap_or_else(|_| Err(VectorError::Unavailable("shard read panicked".into())));
        reply(r);
    });
}

/// The open shards of this process by directory, so that a local search can read them
/// on the read pool directly (one hop instead of an ask per shard); writes, lifecycle
/// and remote reads still go through the shard actors. Entries are weak: a stopped
/// shard is not kept alive, and a restarted one registers its new instance.
/// (The metrics are shared, not cloned per search: a clone is four reference counts.)
/// A read-write lock: every local search reads it, only shard starts and stops write.
/// Fx, not SipHash: a search hashes each shard's path, and SipHash took about 1,100
/// instructions a path (callgrind); the keys are this node's shard directories, a few per
/// collection, which no request can add to.
type OpenShards =
    parking_lot::RwLock<rustc_hash::FxHashMap<PathBuf, (Weak<Shard>, Arc<ShardMetrics>, Arc<str>)>>;

/// A running shard that a search can read directly.
pub(crate) struct OpenShard {
    pub(crate) shard: Arc<Shard>,
    /// Its metric series.
    pub(crate) metrics: Arc<ShardMetrics>,
    /// Its actor's path, for the search's span of it.
    pub(crate) path: Arc<str>,
}

fn open_shards() -> &'static OpenShards {
    static OPEN: std::sync::OnceLock<OpenShards> = std::sync::OnceLock::new();
    OPEN.get_or_init(Default::default)
}

/// The running shard stored in `dir`, if any.
pub(crate) fn open_shard(dir: &std::path::Path) -> Option<OpenShard> {
    let open = open_shards().read();
    let (weak, metrics, path) = open.get(dir)?;
    Some(OpenShard {
        shard: weak.upgrade()?,
        metrics: metrics.clone(),
        path: path.clone(),
    })
}

/// Writes the shard's snapshot (index dump + point store) on a blocking thread.
pub(crate) async fn snapshot_index(shard: &Arc<Shard>) -> Result<u64, VectorError> {
    let shard = Arc::clone(shard);
    tokio::task::spawn_blocking(move || shard.snapshot())
        .await
        .map_err(join_err)
        .and_then(|r| r)
}

/// Runs `f` on the read pool (where rayon's parallel iterators use the pool's threads)
/// and waits for its result; a panic in `f` is an error.
pub(crate) async fn on_read_pool<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, VectorError> + Send + 'static,
) -> Result<T, VectorError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    read_pool().spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
            .unwrap_or_else(|_| Err(VectorError::Unavailable("shard read panicked".into())));
        let _ = tx.send(r);
    });
    rx.await
        .map_err(|_| VectorError::Unavailable("shard read pool stopped".into()))?
}

/// The threads that run shard reads: one per core, like the searches' CPU budget, so
/// that concurrent searches queue instead of time-slicing each other (and index builds,
/// which use rayon's global pool, do not hold reads back).
fn read_pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("abi-read-{i}"))
            .build()
            .unwrap_or_else(|e| panic!("cannot start the shard read pool: {e}"))
    })
}

impl ShardState {
    /// Runs `f` on a blocking thread in a tracked task and hands its result to `reply`.
    fn read<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&Shard) -> Result<T, VectorError> + Send + 'static,
        reply: impl FnOnce(Result<T, VectorError>) + Send + 'static,
    ) {
        spawn_read(&self.shard, f, reply);
    }

    /// Starts a compaction when tombstones call for one (at most one at a time).
    fn maybe_compact(&mut self) {
        if self.shard.needs_compaction() {
            let shard = Arc::clone(&self.shard);
            self.tasks.spawn(async move {
                match tokio::task::spawn_blocking(move || shard.compact()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "shard compaction failed"),
                    Err(e) => tracing::error!(error = %e, "shard compaction panicked"),
                }
            });
        }
    }
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        // Opening replays the WAL: blocking work, off the executor.
        let (dir, config, metrics, path) = (args.dir, args.config, args.metrics, args.path);
        let open_dir = dir.clone();
        let shard = tokio::task::spawn_blocking(move || Shard::open(&dir, config)).await??;
        metrics.tombstones.set(shard.tombstones() as i64);
        let timer = myself.send_interval(SNAPSHOT_EVERY, || ShardMsg::Tick);
        let shard = Arc::new(shard);
        open_shards().write().insert(
            open_dir.clone(),
            (Arc::downgrade(&shard), Arc::new(metrics.clone()), path),
        );
        Ok(ShardState {
            dir: open_dir,
            shard,
            tasks: JoinSet::new(),
            timer: Some(timer),
            dirty: false,
            metrics,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        while st.tasks.try_join_next().is_some() {}
        match msg {
            ShardMsg::Upsert(call) => {
                let (req, reply) = call.into_parts();
                let shard = Arc::clone(&st.shard);
                st.metrics.upserts.inc_by(req.points.len() as u64);
                let applied = tokio::task::spawn_blocking(move || shard.upsert(req.points))
                    .await
                    .map_err(join_err)
                    .and_then(|r| r);
                write_done(st, applied, reply)?;
            }
            ShardMsg::Delete(call) => {
                let (req, reply) = call.into_parts();
                let shard = Arc::clone(&st.shard);
                let applied = tokio::task::spawn_blocking(move || shard.delete(req.ids))
                    .await
                    .map_err(join_err)
                    .and_then(|r| r);
                write_done(st, applied, reply)?;
            }
            ShardMsg::Get(call) => {
                let (req, reply) = call.into_parts();
                st.read(
                    move |s| Ok(s.get(&req.ids, req.with_payload, req.with_vector)),
                    move |r| reply.send(r),
                );
            }
            ShardMsg::Search(call) => {
                let (req, reply) = call.into_parts();
                st.metrics.searches.inc_by(req.queries.len() as u64);
                st.read(
                    move |s| req.queries.iter().map(|q| s.search(q)).collect(),
                    move |r| reply.send(r),
                );
            }
            ShardMsg::Count(call) => {
                let (req, reply) = call.into_parts();
                st.read(
                    move |s| s.count(req.filter.as_ref()),
                    move |r| reply.send(r),
                );
            }
            ShardMsg::Scroll(call) => {
                let (req, reply) = call.into_parts();
                st.read(
                    move |s| {
                        s.scroll(
                            req.offset,
                            req.limit as usize,
                            req.filter.as_ref(),
                            req.with_payload,
                            req.with_vector,
                        )
                    },
                    move |r| reply.send(r),
                );
            }
            ShardMsg::Snapshot(call) => {
                let r = snapshot_index(&st.shard).await;
                if r.is_ok() {
                    st.dirty = false;
                }
                call.reply(r);
            }
            ShardMsg::Health(call) => {
                let (_, reply) = call.into_parts();
                st.read(
                    |s| s.count(None),
                    move |r| {
                        reply.send(match r {
                            Ok(n) => Report {
                                ready: true,
                                detail: format!("shard answers: {n} points"),
                            },
                            Err(e) => Report {
                                ready: false,
                                detail: e.to_string(),
                            },
                        })
                    },
                );
            }
            ShardMsg::Tick => {
                // Compactions finish in background tasks: refresh the gauge here too.
                st.metrics.tombstones.set(st.shard.tombstones() as i64);
                if st.dirty {
                    match snapshot_index(&st.shard).await {
                        Ok(_) => st.dirty = false,
                        Err(e) => tracing::error!(error = %e, "periodic snapshot failed"),
                    }
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardMsg>,
        st: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.timer.take() {
            t.abort();
        }
        {
            let mut open = open_shards().write();
            if open
                .get(&st.dir)
                .is_some_and(|(w, _, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&st.shard)))
            {
                open.remove(&st.dir);
            }
        }
        st.tasks.abort_all();
        while st.tasks.join_next().await.is_some() {}
        if st.dirty {
            match snapshot_index(&st.shard).await {
                Ok(seq) => tracing::info!(seq, "shard snapshot on stop"),
                Err(e) => tracing::error!(error = %e, "snapshot on stop failed"),
            }
        }
        Ok(())
    }
}

/// After a write was applied: acknowledge once durable (in a tracked task, so concurrent
/// writes share fsyncs). A storage failure stops the actor so that its supervisor restarts
/// it from disk, where the unacknowledged write may or may not be.
fn write_done(
    st: &mut ShardState,
    applied: Result<u64, VectorError>,
    reply: abi_runtime::ReplyTo<Result<WriteAck, VectorError>>,
) -> Result<(), ActorProcessingErr> {
    match applied {
        Ok(seq) => {
            st.dirty = true;
            let shard = Arc::clone(&st.shard);
            st.metrics.tombstones.set(shard.tombstones() as i64);
            let metrics = st.metrics.clone();
            st.tasks.spawn(async move {
                let started = std::time::Instant::now();
                let r = tokio::task::spawn_blocking(move || shard.sync_to(seq))
                    .await
                    .map_err(join_err)
                    .and_then(|r| r);
                if r.is_ok() {
                    metrics.wal_sync.observe(started.elapsed().as_secs_f64());
                }
                reply.send(r.map(|()| WriteAck { seq }));
            });
            st.maybe_compact();
            Ok(())
        }
        Err(VectorError::Storage(m)) => {
            reply.send(Err(VectorError::Storage(m.clone())));
            Err(format!("shard storage failure: {m}").into())
        }
        Err(e) => {
            reply.send(Err(e));
            Ok(())
        }
    }
}
