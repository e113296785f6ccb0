//! The membership actor: owns the [`ClusterHandle`] (heartbeat task and
//! discovery registration) under the node's supervisor, answers
//! `membership::ListNodes`, and leaves the cluster gracefully when stopped.

use std::sync::Arc;

use abi_protocol::membership::{ListNodes, PATH};
use abi_runtime::events::EventKind;
use abi_runtime::{Call, ChildSpec, Node, Started};
use abi_transport::Transport;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::warn;

use crate::{Cluster, ClusterHandle, Discovery, MemberInfo, MembershipConfig, MembershipEvent};

/// What the membership actor needs to start (cloned on every restart).
#[derive(Clone)]
pub struct MembershipArgs {
    /// The node's transport (heartbeats, dialling seeds).
    pub transport: Transport,
    /// The discovery backend.
    pub discovery: Arc<dyn Discovery>,
    /// This node's record.
    pub me: MemberInfo,
    /// Failure-detection timing.
    pub timing: MembershipConfig,
    /// Where membership events are published (Raft, placement, gateway, dashboard
    /// subscribe with `events.subscribe()`); survives actor restarts.
    pub events: broadcast::Sender<MembershipEvent>,
}

impl std::fmt::Debug for MembershipArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MembershipArgs")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// The actor serving [`ListNodes`].
#[derive(Debug)]
pub struct MembershipActor;

/// The membership actor's state: the running cluster handle and the task that
/// writes membership changes into the node's event log.
pub struct MembershipState {
    handle: Option<ClusterHandle>,
    log: JoinSet<()>,
}

/// Copies membership changes into the node's event log (dashboard, `/v1/cluster/events`).
async fn log_changes(node: Node, mut rx: broadcast::Receiver<MembershipEvent>) {
    use broadcast::error::RecvError;
    let path = format!("{}/{PATH}", node.id());
    loop {
        let detail = match rx.recv().await {
            Ok(MembershipEvent::Joined(m)) => {
                format!("{} joined (incarnation {})", m.id, m.incarnation)
            }
            Ok(MembershipEvent::Recovered(id)) => format!("{id} is alive again"),
            Ok(MembershipEvent::Suspect(id)) => format!("{id} is suspect"),
            Ok(MembershipEvent::Dead(id)) => format!("{id} is dead"),
            Ok(MembershipEvent::Left(id)) => format!("{id} left"),
            Err(RecvError::Lagged(n)) => format!("{n} membership changes not logged (lagged)"),
            Err(RecvError::Closed) => return,
        };
        node.events()
            .push(path.clone(), EventKind::MembershipChanged, detail);
    }
}

impl Actor for MembershipActor {
    type Msg = Call<ListNodes>;
    type State = MembershipState;
    type Arguments = (MembershipArgs, Node);

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        (a, node): (MembershipArgs, Node),
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut log = JoinSet::new();
        log.spawn(log_changes(node, a.events.subscribe()));
        let handle =
            Cluster::start_with_events(a.transport, a.discovery, a.me, a.timing, a.events).await?;
        Ok(MembershipState {
            handle: Some(handle),
            log,
        })
    }

    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        call: Call<ListNodes>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        call.reply(
            state
                .handle
                .as_ref()
                .map(ClusterHandle::nodes)
                .unwrap_or_default(),
        );
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.log.abort_all();
        if let Some(h) = state.handle.take()
            && let Err(e) = h.leave().await
        {
            warn!(error = %e, "could not deregister from discovery");
        }
        Ok(())
    }
}

/// The supervisor child for membership, registered at `<node>/membership`.
pub fn child_spec(args: MembershipArgs) -> ChildSpec {
    ChildSpec::worker(PATH, move |ctx| {
        let args = args.clone();
        async move {
            let r = ctx.spawn(MembershipActor, (args, ctx.node.clone())).await?;
            Ok(Started::new(r).serves::<ListNodes>())
        }
    })
}
