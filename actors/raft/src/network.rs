//! openraft's network over abi: each RPC is an `ask` to the target member's group actor
//! (`raft` for the metadata group, the shard's actor for a replicated vector shard).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use abi_protocol::{ActorPath, NodeId};
use abi_runtime::{AskError, Node};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::rpc::{AppendRpc, SnapshotRpc, VoteRpc};
use crate::types::{Group, Member, MemberId};

/// Tells the transport where a member listens (members added at run time may not have
/// been discovered yet).
pub type LearnAddr = Arc<dyn Fn(&NodeId, &str) + Send + Sync>;

/// Creates one [`Peer`] per target member.
pub struct Network<C> {
    node: Node,
    learn: LearnAddr,
    actor: String,
    _group: PhantomData<fn() -> C>,
}

impl<C> Clone for Network<C> {
    fn clone(&self) -> Self {
        Self {
            node: self.node.clone(),
            learn: self.learn.clone(),
            actor: self.actor.clone(),
            _group: PhantomData,
        }
    }
}

impl<C: Group> Network<C> {
    /// A network sending through `node`'s remote seam to the actor named `actor` on
    /// each member (the same name on every member of the group).
    pub fn new(node: Node, learn: LearnAddr, actor: impl Into<String>) -> Self {
        Self {
            node,
            learn,
            actor: actor.into(),
            _group: PhantomData,
        }
    }
}

/// The connection to one member.
pub struct Peer<C> {
    node: Node,
    path: Result<ActorPath, String>,
    _group: PhantomData<fn() -> C>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<MemberId, Member, RaftError<MemberId, E>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Remote(String);

fn ask_err<E: std::error::Error>(e: AskError) -> RPCError<MemberId, Member, E> {
    match e {
        // Unreachable makes openraft back off before the next try; a timeout or a
        // busy member is retried at once.
        AskError::PeerUnreachable { .. } | AskError::NoSuchActor(_) | AskError::ActorStopped(_) => {
            RPCError::Unreachable(Unreachable::new(&e))
        }
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl<C> Peer<C> {
    async fn call<R: abi_protocol::Request<Reply = Result<T, String>>, T, E: std::error::Error>(
        &self,
        req: R,
        ttl: Duration,
    ) -> Result<T, RPCError<MemberId, Member, E>> {
        let path = self
            .path
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&Remote(e.clone()))))?;
        match self.node.ask(path, req, ttl).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(remote)) => Err(RPCError::Network(NetworkError::new(&Remote(remote)))),
            Err(e) => Err(ask_err(e)),
        }
    }
}

impl<C: Group> RaftNetworkFactory<C> for Network<C> {
    type Network = Peer<C>;

    async fn new_client(&mut self, _target: MemberId, member: &Member) -> Peer<C> {
        let path = NodeId::new(member.name.clone())
            .and_then(|id| {
                (self.learn)(&id, &member.addr);
                ActorPath::new(id, 0, &self.actor)
            })
            .map_err(|e| e.to_string());
        Peer {
            node: self.node.clone(),
            path,
            _group: PhantomData,
        }
    }
}

impl<C: Group> RaftNetwork<C> for Peer<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RpcErr> {
        self.call(AppendRpc::<C>(rpc), option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, RpcErr<InstallSnapshotError>> {
        self.call(SnapshotRpc::<C>(rpc), option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RpcErr> {
        self.call(VoteRpc::<C>::new(rpc), option.hard_ttl()).await
    }
}
