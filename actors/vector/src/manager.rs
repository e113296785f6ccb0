//! The `vector` manager actor (at [`MANAGER_PATH`]): collections' lifecycle, routing of point
//! operations to shard actors, search fan-out with deadlines and exact top-k merge.
//!
//! Collections are supervisors started dynamically under the `vector` supervisor (one shard
//! actor each child), so that creating or dropping one never restarts the others. Fan-outs
//! run in tracked tasks so that the manager keeps answering while shards work.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use abi_protocol::ActorPath;
use abi_protocol::health::{Check, Report};
use abi_protocol::vector::shard::{
    ShardCount, ShardDelete, ShardGet, ShardScroll, ShardSearch, ShardSnapshot, ShardUpsert,
};
use abi_protocol::vector::{
    CollectionConfig, CollectionInfo, Count, CreateCollection, DeleteCollection, DeletePoints,
    GetCollection, GetPoints, ListCollections, MANAGER_NAME, ReadConsistency, ScrollPage, Search,
    SearchResult, Snapshot, Upsert, VectorError, WriteAck,
};
use abi_runtime::{Call, ChildSpec, Node, ReplyTo, Request, Started, Strategy, SupervisorSpec};
use futures::future::join_all;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::collection::{
    load_configs, merge_top_k, route_ids, route_points, save_config, shard_config, shard_dir,
    validate_config,
};
use crate::filter;
use crate::metrics::{ShardMetrics, VectorMetrics};
use crate::replication::{ReplicationArgs, ReplicationState, wait_leaders};
use crate::routing::{Replicas, Route};
use crate::shard_actor::{ShardActor, ShardArgs};
use std::sync::Arc;

/// How long the manager waits for its parent supervisor to be registered at start.
const BOOTSTRAP_TRIES: u32 = 500;
/// How often replicated collections are reconciled with the cluster metadata.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);
/// How long creating a replicated collection waits for its shard groups' leaders.
const CREATE_WAIT: Duration = Duration::from_secs(15);

/// Messages of the manager.
pub enum ManagerMsg {
    /// Create a collection.
    Create(Call<CreateCollection>),
    /// Drop a collection.
    Drop(Call<DeleteCollection>),
    /// List names.
    List(Call<ListCollections>),
    /// Describe one.
    Get(Call<GetCollection>),
    /// Upsert points.
    Upsert(Call<Upsert>),
    /// Delete points.
    Delete(Call<DeletePoints>),
    /// Retrieve points.
    Retrieve(Call<GetPoints>),
    /// Search (batch).
    Search(Call<Search>),
    /// Count.
    Count(Call<Count>),
    /// Scroll.
    Scroll(Call<abi_protocol::vector::Scroll>),
    /// Snapshot all shards of a collection.
    Snapshot(Call<Snapshot>),
    /// Readiness.
    Health(Call<Check>),
    /// Start the collections found on disk (retried until the parent supervisor is known).
    Bootstrap(u32),
    /// Bring replicated collections in line with the cluster metadata (timer).
    Reconcile,
}

macro_rules! from_call {
    ($($req:ty => $var:ident),* $(,)?) => {$(
        impl From<Call<$req>> for ManagerMsg {
            fn from(c: Call<$req>) -> Self {
                ManagerMsg::$var(c)
            }
        }
    )*};
}
from_call!(CreateCollection => Create, DeleteCollection => Drop, ListCollections => List,
    GetCollection => Get, Upsert => Upsert, DeletePoints => Delete, GetPoints => Retrieve,
    Search => Search, Count => Count, abi_protocol::vector::Scroll => Scroll,
    Snapshot => Snapshot, Check => Health);

/// The manager actor.
#[derive(Debug)]
pub struct Manager;

/// What the manager needs to start.
#[derive(Debug, Clone)]
pub struct ManagerArgs {
    /// The local node.
    pub node: Node,
    /// Path of the `vector` supervisor (collections are its children).
    pub parent: ActorPath,
    /// `<data_dir>/vector`.
    pub root: PathBuf,
    /// Collections declared in the topology (created when missing on disk).
    pub declared: Vec<CollectionConfig>,
    /// Replicated collections' settings; `None` on a node without the `[raft]` group.
    pub replication: Option<ReplicationArgs>,
    /// The node-local collections, published for [`direct_search`].
    pub catalog: LocalCatalog,
}

/// The collections whose shards all live on this node (not replicated), by name: what a
/// search may read without asking the manager.
pub type LocalCatalog = Arc<parking_lot::RwLock<HashMap<String, CollectionConfig>>>;

/// Manager state.
pub struct ManagerState {
    pub(crate) args: ManagerArgs,
    /// Every collection this node serves (local ones and replicated ones).
    pub(crate) collections: HashMap<String, CollectionConfig>,
    /// Replicated collections' placement.
    pub(crate) replicated: HashMap<String, Arc<Replicas>>,
    pub(crate) replication: ReplicationState,
    tasks: JoinSet<()>,
    reconcile_timer: Option<tokio::task::JoinHandle<()>>,
}

/// The child spec of one collection: a supervisor of its shard actors.
pub fn collection_spec(root: &std::path::Path, cfg: &CollectionConfig) -> ChildSpec {
    let dir = root.join(&cfg.name);
    let mut sup = SupervisorSpec::new(Strategy::OneForOne);
    for i in 0..cfg.shards {
        let args = ShardArgs {
            dir: shard_dir(&dir, i),
            config: shard_config(cfg),
            metrics: ShardMetrics::detached(),
            path: Arc::from(""),
        };
        let collection = cfg.name.clone();
        sup = sup.child(
            ChildSpec::worker(format!("shard-{i}"), move |ctx| {
                let mut args = args.clone();
                args.metrics = VectorMetrics::of(&ctx.node).shard(&collection, i);
                args.path = Arc::from(ctx.path.to_string());
                async move {
                    let r = ctx.spawn(ShardActor, args).await?;
                    Ok(Started::new(r)
                        .serves::<ShardUpsert>()
                        .serves::<ShardDelete>()
                        .serves::<ShardGet>()
                        .serves::<ShardSearch>()
                        .serves::<ShardCount>()
                        .serves::<ShardScroll>()
                        .serves::<ShardSnapshot>()
                        .serves::<Check>())
                }
            })
            // A stop writes a snapshot (index dump), which takes seconds on big shards.
            .shutdown(Duration::from_secs(60)),
        );
    }
    ChildSpec::supervisor(cfg.name.clone(), sup)
}

fn shard_path(node: &Node, collection: &str, i: u32) -> Result<ActorPath, VectorError> {
    node.path(&crate::routing::shard_name(collection, i))
        .map_err(|e| VectorError::BadRequest(e.to_string()))
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

/// Sends one write per non-empty shard batch, concurrently, and acknowledges
/// with the highest sequence once every shard has made its part durable.
async fn write_to_shards<T, R>(
    node: &Node,
    route: &Route,
    collection: &str,
    by_shard: Vec<Vec<T>>,
    make: impl Fn(Vec<T>) -> R,
    deadline: Instant,
) -> Result<WriteAck, VectorError>
where
    R: Request<Reply = Result<WriteAck, VectorError>> + Clone,
{
    let asks = by_shard
        .into_iter()
        .enumerate()
        .filter(|(_, batch)| !batch.is_empty())
        .map(|(i, batch)| route.write(node, collection, i as u32, make(batch), deadline));
    let mut seq = 0;
    for r in join_all(asks).await {
        seq = seq.max(r?.seq);
    }
    Ok(WriteAck { seq })
}

impl ManagerState {
    /// Refuses an invalid config, a reserved name or a name in use.
    fn check_new(&self, cfg: &CollectionConfig) -> Result<(), VectorError> {
        validate_config(cfg)?;
        if cfg.name == MANAGER_NAME {
            return Err(VectorError::BadRequest(format!(
                "{MANAGER_NAME:?} is a reserved name"
            )));
        }
        if self.collections.contains_key(&cfg.name) {
            return Err(VectorError::AlreadyExists(cfg.name.clone()));
        }
        Ok(())
    }

    /// A collection's definition and how its shards are reached.
    fn target(&self, name: &str) -> Result<(CollectionConfig, Route), VectorError> {
        let cfg = self
            .collections
            .get(name)
            .cloned()
            .ok_or_else(|| VectorError::NotFound(name.to_string()))?;
        let route = match self.replicated.get(name) {
            Some(r) => Route::Replicated(r.clone()),
            None => Route::Local,
        };
        Ok((cfg, route))
    }

    /// Publishes the node-local collections for direct searches.
    fn publish(&self) {
        let local = self
            .collections
            .iter()
            .filter(|(name, _)| !self.replicated.contains_key(*name))
            .map(|(name, cfg)| (name.clone(), cfg.clone()))
            .collect();
        *self.args.catalog.write() = local;
    }

    /// Runs `fut` in a tracked task and sends its output to `reply`.
    fn answer<T: Send + 'static>(
        &mut self,
        reply: ReplyTo<T>,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) {
        // In the handler's span, so that the shard asks it makes join the request's trace.
        self.tasks.spawn(
            async move {
                reply.send(fut.await);
            }
            .in_current_span(),
        );
    }

    async fn start_collection(&self, cfg: &CollectionConfig) -> Result<(), VectorError> {
        let sup = self
            .args
            .node
            .supervisor(&self.args.parent)
            .ok_or_else(|| VectorError::Unavailable("vector supervisor is not running".into()))?;
        if sup.child_names().iter().any(|n| n == &cfg.name) {
            return Ok(());
        }
        sup.start_child(collection_spec(&self.args.root, cfg))
            .await
            .map_err(|e| VectorError::Unavailable(format!("starting {}: {e}", cfg.name)))
    }

    async fn count(
        node: Node,
        route: Route,
        cfg: CollectionConfig,
        q: Count,
        deadline: Instant,
    ) -> Result<u64, VectorError> {
        if let Some(f) = &q.filter {
            filter::validate(f).map_err(VectorError::BadRequest)?;
        }
        let asks = (0..cfg.shards).map(|i| {
            route.read(
                &node,
                &cfg.name,
                i,
                ShardCount {
                    filter: q.filter.clone(),
                    linearizable: q.consistency == ReadConsistency::Leader,
                },
                remaining(deadline),
                q.consistency,
            )
        });
        let mut total = 0;
        for r in join_all(asks).await {
            total += r?;
        }
        Ok(total)
    }
}

/// A search of a collection whose shards all run here: every shard read straight from
/// the read pool in one job (shards in parallel), as the in-process engine does,
/// instead of one ask per shard actor (each a hop and a wake-up).
async fn search_open(
    shards: Vec<crate::shard_actor::OpenShard>,
    cfg: &CollectionConfig,
    req: &Search,
) -> Result<SearchResult, VectorError> {
    for s in &shards {
        s.metrics.searches.inc_by(req.queries.len() as u64);
    }
    let small = shards.iter().all(|s| s.shard.is_small());
    // A traced request gets one span per shard, as the shard actors would
    // have made had it asked them: its trace shows every shard it read.
    // Untraced (the common case), the list stays empty.
    let spans: Vec<Option<abi_runtime::trace::ChildSpan>> = if abi_runtime::trace::traced() {
        shards
            .iter()
            .map(|s| abi_runtime::trace::child_span_shared(&s.path, ShardSearch::TYPE))
            .collect()
    } else {
        Vec::new()
    };
    let queries = req.queries.clone();
    let run = move |parallel: bool| {
        use rayon::prelude::*;
        let one = |(s, span): (
            &Arc<crate::shard::Shard>,
            Option<abi_runtime::trace::ChildSpan>,
        )| {
            let scan = || {
                queries
                    .iter()
                    .map(|q| s.search(q))
                    .collect::<Result<Vec<_>, _>>()
            };
            match span {
                Some(span) => span.run(scan),
                None => scan(),
            }
        };
        // One span per shard when traced, none otherwise.
        let mut spans = spans.into_iter();
        let with_spans = shards.iter().map(|s| (&s.shard, spans.next().flatten()));
        if parallel {
            with_spans
                .collect::<Vec<_>>()
                .into_par_iter()
                .map(one)
                .collect()
        } else {
            with_spans.map(one).collect::<Result<Vec<_>, _>>()
        }
    };
    // Small shards answer in microseconds: right here, no hand-off.
    let by_shard: Vec<Vec<Vec<abi_protocol::vector::ScoredPoint>>> = if small {
        run(false)?
    } else {
        crate::shard_actor::on_read_pool(move || run(true)).await?
    };
    let mut lists = ShardLists::new(req.queries.len());
    for shard in by_shard {
        lists.add(shard);
    }
    Ok(lists.merge(cfg, req, Vec::new()))
}

/// The hit lists of every shard that answered, by query, merged exactly at the end.
struct ShardLists(Vec<Vec<Vec<abi_protocol::vector::ScoredPoint>>>);

impl ShardLists {
    fn new(queries: usize) -> Self {
        Self(vec![Vec::new(); queries])
    }

    /// One shard's answer: a list per query, in query order.
    fn add(&mut self, shard: Vec<Vec<abi_protocol::vector::ScoredPoint>>) {
        for (q, list) in shard.into_iter().enumerate() {
            if let Some(slot) = self.0.get_mut(q) {
                slot.push(list);
            }
        }
    }

    fn merge(self, cfg: &CollectionConfig, req: &Search, missing: Vec<u32>) -> SearchResult {
        let hits = self
            .0
            .into_iter()
            .zip(&req.queries)
            .map(|(lists, q)| merge_top_k(cfg.distance, lists, q.limit as usize, q.offset as usize))
            .collect();
        SearchResult {
            hits,
            missing_shards: missing,
        }
    }
}

fn check_search(cfg: &CollectionConfig, req: &Search) -> Result<(), VectorError> {
    for q in &req.queries {
        crate::shard::check_vector(&q.vector, cfg.dim as usize, cfg.distance)?;
        if let Some(f) = &q.filter {
            filter::validate(f).map_err(VectorError::BadRequest)?;
        }
    }
    Ok(())
}

/// Every shard of a local collection, when all are open (a restarting one is not: then the
/// asks report it properly).
fn open_shards(
    root: &std::path::Path,
    cfg: &CollectionConfig,
) -> Option<Vec<crate::shard_actor::OpenShard>> {
    let dir = root.join(&cfg.name);
    (0..cfg.shards)
        .map(|i| crate::shard_actor::open_shard(&shard_dir(&dir, i)))
        .collect()
}

/// The manager's [`abi_runtime::DirectRead`] of searches: a search of a node-local collection
/// whose shards are all open runs in the caller's task (small shards right there, others as
/// one read-pool job), without the hop through the manager's mailbox and task. The rest
/// (replicated or unknown collections, restarting shards) goes to the manager.
pub fn direct_search(catalog: LocalCatalog, root: PathBuf) -> abi_runtime::DirectRead<Search> {
    Arc::new(move |req: Search| {
        let Some(cfg) = catalog.read().get(&req.collection).cloned() else {
            return Err(req);
        };
        let Some(shards) = open_shards(&root, &cfg) else {
            return Err(req);
        };
        Ok(Box::pin(async move {
            check_search(&cfg, &req)?;
            search_open(shards, &cfg, &req).await
        }))
    })
}

async fn search(
    node: Node,
    route: Route,
    cfg: CollectionConfig,
    req: Search,
    root: PathBuf,
) -> Result<SearchResult, VectorError> {
    check_search(&cfg, &req)?;
    if matches!(route, Route::Local)
        && let Some(shards) = open_shards(&root, &cfg)
    {
        return search_open(shards, &cfg, &req).await;
    }
    let timeout = Duration::from_millis(req.timeout_ms.max(1) as u64);
    let asks = (0..cfg.shards).map(|i| {
        route.read(
            &node,
            &cfg.name,
            i,
            ShardSearch {
                queries: req.queries.clone(),
                linearizable: req.consistency == ReadConsistency::Leader,
            },
            timeout,
            req.consistency,
        )
    });
    let mut lists = ShardLists::new(req.queries.len());
    let mut missing = Vec::new();
    for (i, r) in join_all(asks).await.into_iter().enumerate() {
        match r {
            Ok(shard) => lists.add(shard),
            Err(e @ (VectorError::Timeout(_) | VectorError::Unavailable(_))) => {
                if !req.allow_partial {
                    return Err(match e {
                        VectorError::Timeout(m) => {
                            VectorError::Timeout(format!("shard {i} of {}: {m}", cfg.name))
                        }
                        other => other,
                    });
                }
                missing.push(i as u32);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(lists.merge(&cfg, &req, missing))
}

async fn scroll(
    node: Node,
    route: Route,
    cfg: CollectionConfig,
    req: abi_protocol::vector::Scroll,
    deadline: Instant,
) -> Result<ScrollPage, VectorError> {
    let limit = req.limit.max(1) as usize;
    let asks = (0..cfg.shards).map(|i| {
        route.read(
            &node,
            &cfg.name,
            i,
            ShardScroll {
                offset: req.offset,
                limit: limit as u32,
                filter: req.filter.clone(),
                with_payload: req.with_payload,
                with_vector: req.with_vector,
                linearizable: req.consistency == ReadConsistency::Leader,
            },
            remaining(deadline),
            req.consistency,
        )
    });
    let mut points = Vec::new();
    let mut nexts = Vec::new();
    for r in join_all(asks).await {
        let page = r?;
        points.extend(page.points);
        nexts.extend(page.next);
    }
    points.sort_by_key(|p| p.id);
    let rest = points.split_off(points.len().min(limit));
    let next = rest.first().map(|p| p.id).into_iter().chain(nexts).min();
    Ok(ScrollPage { points, next })
}

impl Actor for Manager {
    type Msg = ManagerMsg;
    type State = ManagerState;
    type Arguments = ManagerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ManagerMsg>,
        args: ManagerArgs,
    ) -> Result<ManagerState, ActorProcessingErr> {
        let root = args.root.clone();
        let declared = args.declared.clone();
        // Reads and (for new declared collections) writes small files: blocking, off-executor.
        let collections = tokio::task::spawn_blocking(move || {
            let mut map: HashMap<String, CollectionConfig> = load_configs(&root)?
                .into_iter()
                .map(|c| (c.name.clone(), c))
                .collect();
            for cfg in declared {
                validate_config(&cfg)?;
                match map.get(&cfg.name) {
                    Some(existing) if existing != &cfg => tracing::warn!(
                        collection = %cfg.name,
                        "declared collection differs from the one on disk; keeping the disk one"
                    ),
                    Some(_) => {}
                    None => {
                        save_config(&root.join(&cfg.name), &cfg)?;
                        map.insert(cfg.name.clone(), cfg);
                    }
                }
            }
            Ok::<_, VectorError>(map)
        })
        .await??;
        Ok(ManagerState {
            args,
            collections,
            replicated: HashMap::new(),
            replication: ReplicationState::default(),
            tasks: JoinSet::new(),
            reconcile_timer: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<ManagerMsg>,
        st: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_message(ManagerMsg::Bootstrap(0))?;
        if st.args.replication.is_some() {
            st.reconcile_timer =
                Some(myself.send_interval(RECONCILE_EVERY, || ManagerMsg::Reconcile));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        st: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        while st.tasks.try_join_next().is_some() {}
        let node = st.args.node.clone();
        // Only these change which collections this node serves (and whether replicated);
        // point writes and reads leave the published catalogue as it is.
        let changes_catalog = matches!(
            msg,
            ManagerMsg::Create(_)
                | ManagerMsg::Drop(_)
                | ManagerMsg::Bootstrap(_)
                | ManagerMsg::Reconcile
        );
        self.dispatch(myself, msg, node, st).await?;
        if changes_catalog {
            st.publish();
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ManagerMsg>,
        st: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = st.reconcile_timer.take() {
            t.abort();
        }
        st.tasks.abort_all();
        while st.tasks.join_next().await.is_some() {}
        Ok(())
    }
}

impl Manager {
    async fn dispatch(
        &self,
        myself: ActorRef<ManagerMsg>,
        msg: ManagerMsg,
        node: Node,
        st: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ManagerMsg::Bootstrap(n) => {
                if node.supervisor(&st.args.parent).is_none() {
                    if n >= BOOTSTRAP_TRIES {
                        return Err("vector supervisor never appeared".into());
                    }
                    // The parent registers itself right after its children started.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    myself.send_message(ManagerMsg::Bootstrap(n + 1))?;
                    return Ok(());
                }
                let mut cfgs: Vec<CollectionConfig> = st.collections.values().cloned().collect();
                cfgs.sort_by(|a, b| a.name.cmp(&b.name));
                for cfg in cfgs {
                    if let Err(e) = st.start_collection(&cfg).await {
                        tracing::error!(collection = %cfg.name, error = %e, "collection failed to start");
                    }
                }
            }
            ManagerMsg::Reconcile => {
                if node.supervisor(&st.args.parent).is_some() {
                    st.reconcile().await;
                }
            }
            ManagerMsg::Create(call) if call.request().config.replication > 1 => {
                let (req, reply) = call.into_parts();
                let cfg = req.config;
                let placed = async {
                    st.check_new(&cfg)?;
                    st.create_replicated(&cfg).await
                }
                .await;
                match placed {
                    Err(e) => reply.send(Err(e)),
                    Ok(placement) => st.answer(reply, async move {
                        let deadline = Instant::now() + CREATE_WAIT;
                        wait_leaders(&node, &cfg.name, &placement, deadline).await?;
                        Ok(CollectionInfo {
                            config: cfg,
                            points: 0,
                        })
                    }),
                }
            }
            ManagerMsg::Drop(call) if st.replicated.contains_key(&call.request().name) => {
                let (req, reply) = call.into_parts();
                reply.send(st.drop_replicated(&req.name).await);
            }
            ManagerMsg::Create(call) => {
                let (req, reply) = call.into_parts();
                let cfg = req.config;
                let r = async {
                    st.check_new(&cfg)?;
                    let dir = st.args.root.join(&cfg.name);
                    let c = cfg.clone();
                    tokio::task::spawn_blocking(move || save_config(&dir, &c))
                        .await
                        .map_err(|e| VectorError::Storage(e.to_string()))??;
                    st.collections.insert(cfg.name.clone(), cfg.clone());
                    if let Err(e) = st.start_collection(&cfg).await {
                        st.collections.remove(&cfg.name);
                        let dir = st.args.root.join(&cfg.name);
                        let _ =
                            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
                        return Err(e);
                    }
                    Ok(CollectionInfo {
                        config: cfg.clone(),
                        points: 0,
                    })
                }
                .await;
                reply.send(r);
            }
            ManagerMsg::Drop(call) => {
                let (req, reply) = call.into_parts();
                let r = async {
                    if st.collections.remove(&req.name).is_none() {
                        return Ok(false);
                    }
                    if let Some(sup) = node.supervisor(&st.args.parent) {
                        match sup.terminate_child(&req.name).await {
                            Ok(()) | Err(abi_runtime::SupervisorError::NoSuchChild(_)) => {}
                            Err(e) => return Err(VectorError::Unavailable(e.to_string())),
                        }
                    }
                    let dir = st.args.root.join(&req.name);
                    tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir))
                        .await
                        .map_err(|e| VectorError::Storage(e.to_string()))?
                        .map_err(|e| VectorError::Storage(format!("removing data: {e}")))?;
                    Ok(true)
                }
                .await;
                reply.send(r);
            }
            ManagerMsg::List(call) => {
                let mut names: Vec<String> = st.collections.keys().cloned().collect();
                names.sort();
                call.reply(names);
            }
            ManagerMsg::Get(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                match st.target(&req.name) {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route)) => st.answer(reply, async move {
                        let q = Count {
                            collection: cfg.name.clone(),
                            filter: None,
                            consistency: ReadConsistency::Any,
                        };
                        let points =
                            ManagerState::count(node, route, cfg.clone(), q, deadline).await?;
                        Ok(CollectionInfo {
                            config: cfg,
                            points,
                        })
                    }),
                }
            }
            ManagerMsg::Upsert(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                let routed = st.target(&req.collection).and_then(|(cfg, route)| {
                    route_points(&cfg, req.points).map(|r| (cfg, route, r))
                });
                match routed {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route, by_shard)) => st.answer(reply, async move {
                        let upsert = |points| ShardUpsert { points };
                        write_to_shards(&node, &route, &cfg.name, by_shard, upsert, deadline).await
                    }),
                }
            }
            ManagerMsg::Delete(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                match st.target(&req.collection) {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route)) => st.answer(reply, async move {
                        let by_shard = route_ids(req.ids, cfg.shards);
                        let delete = |ids| ShardDelete { ids };
                        write_to_shards(&node, &route, &cfg.name, by_shard, delete, deadline).await
                    }),
                }
            }
            ManagerMsg::Retrieve(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                match st.target(&req.collection) {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route)) => st.answer(reply, async move {
                        let order = req.ids.clone();
                        let by_shard = route_ids(req.ids, cfg.shards);
                        let asks = by_shard
                            .into_iter()
                            .enumerate()
                            .filter(|(_, p)| !p.is_empty())
                            .map(|(i, ids)| {
                                route.read(
                                    &node,
                                    &cfg.name,
                                    i as u32,
                                    ShardGet {
                                        ids,
                                        with_payload: req.with_payload,
                                        with_vector: req.with_vector,
                                        linearizable: req.consistency == ReadConsistency::Leader,
                                    },
                                    remaining(deadline),
                                    req.consistency,
                                )
                            });
                        let mut found = HashMap::new();
                        for r in join_all(asks).await {
                            for p in r? {
                                found.insert(p.id, p);
                            }
                        }
                        Ok(order.iter().filter_map(|id| found.remove(id)).collect())
                    }),
                }
            }
            ManagerMsg::Search(call) => {
                let (req, reply) = call.into_parts();
                match st.target(&req.collection) {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route)) => {
                        let root = st.args.root.clone();
                        st.answer(reply, search(node, route, cfg, req, root))
                    }
                }
            }
            ManagerMsg::Count(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                match st.target(&req.collection) {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route)) => {
                        st.answer(reply, ManagerState::count(node, route, cfg, req, deadline))
                    }
                }
            }
            ManagerMsg::Scroll(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                match st.target(&req.collection) {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route)) => st.answer(reply, scroll(node, route, cfg, req, deadline)),
                }
            }
            ManagerMsg::Snapshot(call) => {
                let deadline = call.deadline();
                let (req, reply) = call.into_parts();
                match st.target(&req.collection) {
                    Err(e) => reply.send(Err(e)),
                    Ok((cfg, route)) => st.answer(reply, async move {
                        let asks = (0..cfg.shards).map(|i| {
                            route.read(
                                &node,
                                &cfg.name,
                                i,
                                ShardSnapshot,
                                remaining(deadline),
                                ReadConsistency::Any,
                            )
                        });
                        let mut seq = 0;
                        for r in join_all(asks).await {
                            seq = seq.max(r?);
                        }
                        Ok(seq)
                    }),
                }
            }
            ManagerMsg::Health(call) => {
                let deadline = call.deadline();
                let (_, reply) = call.into_parts();
                // This node's shards: all of a local collection, the placed replicas of a
                // replicated one.
                let me = node.id().to_string();
                let local: Vec<(String, Vec<u32>)> = st
                    .collections
                    .values()
                    .map(|c| match st.replicated.get(&c.name) {
                        None => (c.name.clone(), (0..c.shards).collect()),
                        Some(r) => (
                            c.name.clone(),
                            r.placement
                                .iter()
                                .filter(|(_, ns)| ns.contains(&me))
                                .map(|(i, _)| *i)
                                .collect(),
                        ),
                    })
                    .collect();
                st.answer(reply, async move {
                    let mut shards = 0;
                    for (name, list) in local {
                        for i in list {
                            let path = match shard_path(&node, &name, i) {
                                Ok(p) => p,
                                Err(e) => {
                                    return Report {
                                        ready: false,
                                        detail: e.to_string(),
                                    };
                                }
                            };
                            match node.ask(&path, Check, remaining(deadline)).await {
                                Ok(r) if r.ready => shards += 1,
                                Ok(r) => {
                                    return Report {
                                        ready: false,
                                        detail: format!("{path}: {}", r.detail),
                                    };
                                }
                                Err(e) => {
                                    return Report {
                                        ready: false,
                                        detail: format!("{path}: {e}"),
                                    };
                                }
                            }
                        }
                    }
                    Report {
                        ready: true,
                        detail: format!("{shards} shards answer"),
                    }
                });
            }
        }
        Ok(())
    }
}

/// The `vector` subsystem: a supervisor whose first child is the manager (at
/// [`MANAGER_PATH`]); collections are added under it by the manager.
///
/// `data_dir` is the node's data directory (collections live in `<data_dir>/vector/<name>`);
/// `declared` are the `[[collection]]` entries of the topology.
pub fn child_spec(data_dir: &std::path::Path, declared: Vec<CollectionConfig>) -> ChildSpec {
    child_spec_with(data_dir, declared, None)
}

/// [`child_spec`] on a node that runs the `[raft]` group: replicated collections too.
pub fn child_spec_with(
    data_dir: &std::path::Path,
    declared: Vec<CollectionConfig>,
    replication: Option<ReplicationArgs>,
) -> ChildSpec {
    let root = data_dir.join(abi_protocol::paths::VECTOR);
    let spec = SupervisorSpec::new(Strategy::OneForOne).child(ChildSpec::worker(
        MANAGER_NAME,
        move |ctx| {
            let root = root.clone();
            let declared = declared.clone();
            async move {
                let parent = ctx
                    .node
                    .path(abi_protocol::paths::VECTOR)
                    .map_err(abi_runtime::StartError::msg)?;
                ctx.node.register_health_check(ctx.path.clone());
                let catalog = LocalCatalog::default();
                let direct = direct_search(catalog.clone(), root.clone());
                let args = ManagerArgs {
                    node: ctx.node.clone(),
                    parent,
                    root,
                    declared,
                    replication,
                    catalog,
                };
                let r = ctx.spawn(Manager, args).await?;
                Ok(Started::new(r)
                    .reads_directly::<Search>(direct)
                    .serves::<CreateCollection>()
                    .serves::<DeleteCollection>()
                    .serves::<ListCollections>()
                    .serves::<GetCollection>()
                    .serves::<Upsert>()
                    .serves::<DeletePoints>()
                    .serves::<GetPoints>()
                    .serves::<Search>()
                    .serves::<Count>()
                    .serves::<abi_protocol::vector::Scroll>()
                    .serves::<Snapshot>()
                    .serves::<Check>())
            }
        },
    ));
    ChildSpec::supervisor(abi_protocol::paths::VECTOR, spec)
}

/// Re-exported so callers need not spell it: `vector/api`.
pub use abi_protocol::vector::MANAGER_PATH;
