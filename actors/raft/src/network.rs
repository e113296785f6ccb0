//! openraft's network over abi: each RPC is an `ask` to the target member's `raft` actor.

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
use crate::types::{Member, MemberId, TypeConfig};

/// Tells the transport where a member listens (members added at run time may not have
/// been discovered yet).
pub type LearnAddr = Arc<dyn Fn(&NodeId, &str) + Send + Sync>;

/// Creates one [`Peer`] per target member.
#[derive(Clone)]
pub struct Network {
    node: Node,
    learn: LearnAddr,
}

impl Network {
    /// A network sending through `node`'s remote seam.
    pub fn new(node: Node, learn: LearnAddr) -> Self {
        Self { node, learn }
    }
}

/// The connection to one member.
pub struct Peer {
    node: Node,
    path: Result<ActorPath, String>,
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

impl Peer {
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

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, _target: MemberId, member: &Member) -> Peer {
        let path = NodeId::new(member.name.clone())
            .and_then(|id| {
                (self.learn)(&id, &member.addr);
                ActorPath::new(id, 0, abi_protocol::raft::PATH)
            })
            .map_err(|e| e.to_string());
        Peer {
            node: self.node.clone(),
            path,
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RpcErr> {
        self.call(AppendRpc(rpc), option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, RpcErr<InstallSnapshotError>> {
        self.call(SnapshotRpc(rpc), option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RpcErr> {
        self.call(VoteRpc(rpc), option.hard_ttl()).await
    }
}
