//! Where the manager sends a shard request: the local shard actor of an unreplicated
//! collection, or a replica of a replicated one (reads: this node's replica first, then
//! the others; writes: the group's leader, found by following `NotLeader` answers).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::vector::{ReadConsistency, VectorError, WriteAck};
use abi_protocol::{ActorPath, NodeId, Request};
use abi_runtime::{AskError, Node};
use parking_lot::Mutex;

/// Longest single try at one replica before the next one is tried (a killed node's
/// asks otherwise wait for the transport to notice).
const ATTEMPT: Duration = Duration::from_secs(2);
/// Pause before trying again when no replica knows a leader (election in progress).
const NO_LEADER_PAUSE: Duration = Duration::from_millis(50);

/// The replicas of a replicated collection's shards, as the cluster metadata places them.
#[derive(Debug, Default)]
pub struct Replicas {
    /// Shard -> nodes holding a replica.
    pub placement: BTreeMap<u32, Vec<String>>,
    /// Shard -> the last node that took a write (the leader, most of the time).
    leaders: Mutex<HashMap<u32, String>>,
}

impl Replicas {
    /// Replicas placed as given.
    pub fn new(placement: BTreeMap<u32, Vec<String>>) -> Self {
        Self {
            placement,
            leaders: Mutex::default(),
        }
    }
}

/// How one collection's shards are reached.
#[derive(Debug, Clone)]
pub enum Route {
    /// Shard actors on this node.
    Local,
    /// Replica actors on the nodes of the placement.
    Replicated(Arc<Replicas>),
}

fn ask_err(e: AskError) -> VectorError {
    match e {
        AskError::Timeout { .. } => VectorError::Timeout(e.to_string()),
        other => VectorError::Unavailable(other.to_string()),
    }
}

/// The actor name of shard `i` of `collection` (below the vector subsystem).
pub(crate) fn shard_name(collection: &str, i: u32) -> String {
    format!("{}/{collection}/shard-{i}", abi_protocol::paths::VECTOR)
}

fn path_on(node: &str, collection: &str, i: u32) -> Result<ActorPath, VectorError> {
    let id = NodeId::new(node.to_string()).map_err(|e| VectorError::BadRequest(e.to_string()))?;
    ActorPath::new(id, 0, &shard_name(collection, i))
        .map_err(|e| VectorError::BadRequest(e.to_string()))
}

/// Whether trying another replica may help.
fn retryable(e: &VectorError) -> bool {
    matches!(
        e,
        VectorError::Unavailable(_) | VectorError::Timeout(_) | VectorError::NotLeader(_)
    )
}

impl Route {
    /// Asks shard `i` for a read: any replica answers it, or the leader with
    /// [`ReadConsistency::Leader`] (the request must then ask the replica to confirm).
    pub async fn read<R, T>(
        &self,
        node: &Node,
        collection: &str,
        i: u32,
        req: R,
        timeout: Duration,
        consistency: ReadConsistency,
    ) -> Result<T, VectorError>
    where
        R: Request<Reply = Result<T, VectorError>> + Clone,
    {
        let reps = match self {
            Route::Replicated(reps) if consistency == ReadConsistency::Leader => {
                let deadline = Instant::now() + timeout;
                return to_leader(reps, node, collection, i, req, deadline).await;
            }
            Route::Replicated(reps) => reps,
            Route::Local => {
                let path = node
                    .path(&shard_name(collection, i))
                    .map_err(|e| VectorError::BadRequest(e.to_string()))?;
                return node.ask(&path, req, timeout).await.map_err(ask_err)?;
            }
        };
        let deadline = Instant::now() + timeout;
        let me = node.id().as_str();
        let mut order: Vec<&String> = reps.placement.get(&i).into_iter().flatten().collect();
        // This node's replica first, then the rest from a shard-dependent start so that
        // remote reads spread over the replicas.
        if !order.is_empty() {
            let k = i as usize % order.len();
            order.rotate_left(k);
        }
        order.sort_by_key(|n| n.as_str() != me);
        let mut last =
            VectorError::Unavailable(format!("shard {i} of {collection} has no replicas"));
        for n in order {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let path = path_on(n, collection, i)?;
            match node.ask(&path, req.clone(), left.min(ATTEMPT)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if !retryable(&e) => return Err(e),
                Ok(Err(e)) => last = e,
                Err(e) => last = ask_err(e),
            }
        }
        Err(last)
    }

    /// Sends a write for shard `i` (to the leader of its group when replicated).
    pub async fn write<R>(
        &self,
        node: &Node,
        collection: &str,
        i: u32,
        req: R,
        deadline: Instant,
    ) -> Result<WriteAck, VectorError>
    where
        R: Request<Reply = Result<WriteAck, VectorError>> + Clone,
    {
        match self {
            Route::Replicated(reps) => to_leader(reps, node, collection, i, req, deadline).await,
            Route::Local => {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                let r = self.read(node, collection, i, req, left, ReadConsistency::Any);
                r.await
            }
        }
    }
}

/// Sends `req` to the leader of shard `i`'s group, following `NotLeader` answers and
/// trying the other replicas while none is known, until the deadline.
async fn to_leader<R, T>(
    reps: &Replicas,
    node: &Node,
    collection: &str,
    i: u32,
    req: R,
    deadline: Instant,
) -> Result<T, VectorError>
where
    R: Request<Reply = Result<T, VectorError>> + Clone,
{
    let placement = reps.placement.get(&i).cloned().unwrap_or_default();
    if placement.is_empty() {
        return Err(VectorError::Unavailable(format!(
            "shard {i} of {collection} has no replicas"
        )));
    }
    let me = node.id().as_str();
    let mut target = reps
        .leaders
        .lock()
        .get(&i)
        .cloned()
        .or_else(|| placement.iter().find(|n| n.as_str() == me).cloned())
        .unwrap_or_else(|| placement[0].clone());
    let mut next = 0usize;
    let mut last;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(VectorError::Unavailable(format!(
                "shard {i} of {collection}: no leader answered in time"
            )));
        }
        let path = path_on(&target, collection, i)?;
        // A write re-sent after a lost answer is applied twice, which leaves the same
        // points: upserts and deletes are idempotent.
        let r = node.ask(&path, req.clone(), left.min(ATTEMPT)).await;
        match r {
            Ok(Ok(v)) => {
                reps.leaders.lock().insert(i, target);
                return Ok(v);
            }
            Ok(Err(VectorError::NotLeader(Some(leader)))) if leader != target => {
                target = leader;
                continue;
            }
            Ok(Err(e)) if !retryable(&e) => return Err(e),
            Ok(Err(e)) => last = e,
            Err(e) => last = ask_err(e),
        }
        tracing::debug!(shard = i, %collection, error = %last, "retrying at another replica");
        reps.leaders.lock().remove(&i);
        target = placement[next % placement.len()].clone();
        next += 1;
        tokio::time::sleep(NO_LEADER_PAUSE.min(left)).await;
    }
}
