//! Any gateway serves any collection: a request for a collection this node does not hold
//! goes to a node that does. Holders are found by asking the alive members' vector
//! managers (`GetCollection`) and remembered for a while; a stale entry (the holder died
//! or dropped the collection) is forgotten and the search starts again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use abi_protocol::membership::{ListNodes, NodeStatus, PATH as MEMBERSHIP};
use abi_protocol::vector::{GetCollection, MANAGER_PATH, VectorError};
use abi_protocol::{ActorPath, NodeId, Request};
use abi_runtime::AskError;
use parking_lot::Mutex;

use crate::{ApiError, GatewayState};

/// How long a found holder is trusted without asking again.
const TTL: Duration = Duration::from_secs(30);
/// How long asking one member whether it holds a collection may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Collection name -> the node holding it (when it is not this node).
#[derive(Debug, Default)]
pub struct Holders {
    known: Mutex<HashMap<String, (NodeId, Instant)>>,
}

impl Holders {
    fn get(&self, collection: &str) -> Option<NodeId> {
        let known = self.known.lock();
        known
            .get(collection)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(n, _)| n.clone())
    }

    fn set(&self, collection: &str, node: NodeId) {
        self.known
            .lock()
            .insert(collection.to_string(), (node, Instant::now()));
    }

    fn forget(&self, collection: &str) {
        self.known.lock().remove(collection);
    }
}

fn manager_on(node: &NodeId) -> Result<ActorPath, ApiError> {
    ActorPath::new(node.clone(), 0, MANAGER_PATH).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Whether an answer means "that node does not hold the collection (any more)".
fn missing<T>(r: &Result<Result<T, VectorError>, AskError>) -> bool {
    matches!(
        r,
        Ok(Err(VectorError::NotFound(_)))
            | Err(AskError::PeerUnreachable { .. } | AskError::NoSuchActor(_))
    )
}

/// Asks the vector manager holding `collection`: this node's, or another member's.
///
/// Returns the raw answer so the caller maps vector errors as usual.
pub async fn ask<R, T>(
    state: &GatewayState,
    collection: &str,
    req: R,
    timeout: Duration,
) -> Result<Result<T, VectorError>, ApiError>
where
    R: Request<Reply = Result<T, VectorError>> + Clone,
{
    let holders = &state.holders;
    if let Some(node) = holders.get(collection) {
        let r = state
            .node
            .ask(&manager_on(&node)?, req.clone(), timeout)
            .await;
        if !missing(&r) {
            return Ok(r?);
        }
        holders.forget(collection);
    }
    let local = state
        .node
        .path(MANAGER_PATH)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let r = state.node.ask(&local, req.clone(), timeout).await;
    if !matches!(r, Ok(Err(VectorError::NotFound(_)))) {
        return Ok(r?);
    }
    match find(state, collection).await {
        Some(node) => {
            holders.set(collection, node.clone());
            Ok(state.node.ask(&manager_on(&node)?, req, timeout).await?)
        }
        None => Ok(r?),
    }
}

/// The first alive member (other than this node) whose manager has `collection`.
async fn find(state: &GatewayState, collection: &str) -> Option<NodeId> {
    let me = state.node.id().clone();
    let path = state.node.path(MEMBERSHIP).ok()?;
    // A node without a cluster has no membership actor: nothing else to ask.
    let nodes = state.node.ask(&path, ListNodes, PROBE_TIMEOUT).await.ok()?;
    let probes = nodes
        .into_iter()
        .filter(|n| n.id != me && n.status == NodeStatus::Alive)
        .map(|n| async move {
            let path = manager_on(&n.id).ok()?;
            let get = GetCollection {
                name: collection.to_string(),
            };
            match state.node.ask(&path, get, PROBE_TIMEOUT).await {
                Ok(Ok(_)) => Some(n.id),
                _ => None,
            }
        });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .next()
}

/// The collection a request is about, if it is about one that already exists
/// (creation and listing stay on this node).
pub trait Scoped {
    /// The collection, or `None` for node-local requests.
    fn collection(&self) -> Option<&str>;
}

macro_rules! scoped {
    ($($t:ty => $field:ident),* $(,)?) => {$(
        impl Scoped for $t {
            fn collection(&self) -> Option<&str> {
                Some(&self.$field)
            }
        }
    )*};
}

scoped!(
    abi_protocol::vector::GetCollection => name,
    abi_protocol::vector::DeleteCollection => name,
    abi_protocol::vector::Upsert => collection,
    abi_protocol::vector::DeletePoints => collection,
    abi_protocol::vector::GetPoints => collection,
    abi_protocol::vector::Search => collection,
    abi_protocol::vector::Count => collection,
    abi_protocol::vector::Scroll => collection,
);

impl Scoped for abi_protocol::vector::CreateCollection {
    fn collection(&self) -> Option<&str> {
        None
    }
}
