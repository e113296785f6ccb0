//! OTP-style supervision on ractor.
//!
//! A supervisor owns an ordered list of [`ChildSpec`]s. It starts them in
//! order, stops them in reverse order (each within its shutdown timeout), and
//! when one exits applies its [`Strategy`] according to the child's
//! [`Restart`] type, counting restarts against its [`Intensity`]: past it, the
//! supervisor stops its children and fails, so its own parent decides.
//! Repeated quick failures back off exponentially with jitter ([`Backoff`]).
//!
//! # Restart semantics
//! - `permanent`: always restarted; `transient`: restarted only after an
//!   abnormal exit (panic, error, kill); `temporary`: never restarted.
//! - `one_for_one` restarts the child; `one_for_all` all children;
//!   `rest_for_one` the child and those started after it.
//! - The first restart after a stable period is immediate; later ones in the
//!   same streak wait `initial * 2^(n-2)` (capped, jittered).
//! - Every restart is counted in the child's live state, logged, and recorded
//!   in the node's [event log](crate::events).

mod actor;
pub mod decide;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use abi_protocol::ActorPath;
use abi_protocol::supervision::{ActorTree, ChildState, Failure};
use futures::future::BoxFuture;
use parking_lot::RwLock;
use ractor::{Actor, ActorCell, ActorId, ActorRef, SpawnErr};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::Node;
use crate::registry::Started;

pub(crate) use actor::SupervisorMsg;

/// Which siblings restart when a child exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the exited child.
    #[default]
    OneForOne,
    /// Every child.
    OneForAll,
    /// The exited child and every child started after it.
    RestForOne,
}

impl Strategy {
    /// The OTP name (`one_for_one`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneForOne => "one_for_one",
            Self::OneForAll => "one_for_all",
            Self::RestForOne => "rest_for_one",
        }
    }
}

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Always.
    #[default]
    Permanent,
    /// Only after an abnormal exit.
    Transient,
    /// Never.
    Temporary,
}

impl Restart {
    /// The OTP name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Permanent => "permanent",
            Self::Transient => "transient",
            Self::Temporary => "temporary",
        }
    }
}

/// Restart intensity: at most `max_restarts` within `within`, else escalate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Restarts allowed inside the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub within: Duration,
}

impl Default for Intensity {
    /// OTP's default is 1 in 5 s; ours is more forgiving for long-running services.
    fn default() -> Self {
        Self {
            max_restarts: 5,
            within: Duration::from_secs(10),
        }
    }
}

/// Exponential restart backoff with jitter, reset after a stable period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay of the second quick restart in a row (the first is immediate); zero disables backoff.
    pub initial: Duration,
    /// Upper bound.
    pub max: Duration,
    /// Relative spread, 0.0..=1.0.
    pub jitter: f64,
    /// A child that ran this long before failing starts a fresh streak.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(10),
            jitter: 0.2,
            reset_after: Duration::from_secs(30),
        }
    }
}

/// Why a child could not be started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
    /// ractor refused to spawn it (its `pre_start` failed or panicked).
    #[error("spawn failed: {0}")]
    Spawn(String),
    /// The start function gave up for another reason.
    #[error("{0}")]
    Other(String),
}

impl StartError {
    /// A start error with a message.
    pub fn msg(m: impl fmt::Display) -> Self {
        Self::Other(m.to_string())
    }
}

impl From<SpawnErr> for StartError {
    fn from(e: SpawnErr) -> Self {
        match e {
            SpawnErr::StartupFailed(inner) => Self::Spawn(inner.to_string()),
            other => Self::Spawn(other.to_string()),
        }
    }
}

impl From<abi_protocol::PathError> for StartError {
    fn from(e: abi_protocol::PathError) -> Self {
        Self::Other(e.to_string())
    }
}

/// Errors of the dynamic-children API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SupervisorError {
    /// A child with that name exists already.
    #[error("a child named {0:?} already exists")]
    AlreadyExists(String),
    /// No child with that name.
    #[error("no child named {0:?}")]
    NoSuchChild(String),
    /// Its start function failed.
    #[error("start failed: {0}")]
    Start(#[from] StartError),
    /// The supervisor is gone.
    #[error("supervisor {0} is not running")]
    NotRunning(String),
}

/// Everything a child's start function needs.
#[derive(Clone)]
pub struct ChildContext {
    /// The local node.
    pub node: Node,
    /// The path this child will be registered at.
    pub path: ActorPath,
    supervisor: ActorCell,
}

impl fmt::Debug for ChildContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildContext")
            .field("path", &self.path.to_string())
            .finish()
    }
}

impl ChildContext {
    /// Spawns `actor` linked to the supervisor (so its exits are supervised).
    pub async fn spawn<A: Actor>(
        &self,
        actor: A,
        args: A::Arguments,
    ) -> Result<ActorRef<A::Msg>, StartError> {
        let (r, _join) = Actor::spawn_linked(None, actor, args, self.supervisor.clone()).await?;
        Ok(r)
    }

    /// The supervisor's cell, for actors that link further children themselves.
    pub fn supervisor_cell(&self) -> &ActorCell {
        &self.supervisor
    }
}

type StartFn =
    Arc<dyn Fn(ChildContext) -> BoxFuture<'static, Result<Started, StartError>> + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) name: String,
    pub(crate) restart: Restart,
    pub(crate) shutdown: Duration,
    pub(crate) is_supervisor: bool,
    pub(crate) start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("is_supervisor", &self.is_supervisor)
            .finish()
    }
}

impl ChildSpec {
    /// A worker child: `start` is called for the first start and for every restart.
    pub fn worker<F, Fut, S>(name: impl Into<String>, start: F) -> Self
    where
        F: Fn(ChildContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, StartError>> + Send + 'static,
        S: Into<Started>,
    {
        let start: StartFn = Arc::new(move |ctx| {
            let fut = start(ctx);
            Box::pin(async move { fut.await.map(Into::into) })
        });
        Self {
            name: name.into(),
            restart: Restart::Permanent,
            shutdown: Duration::from_secs(5),
            is_supervisor: false,
            start,
        }
    }

    /// A child that is itself a supervisor of `spec`'s children.
    pub fn supervisor(name: impl Into<String>, spec: SupervisorSpec) -> Self {
        let start: StartFn = Arc::new(move |ctx: ChildContext| {
            let spec = spec.clone();
            Box::pin(async move { actor::spawn_child_supervisor(ctx, spec).await })
        });
        Self {
            name: name.into(),
            restart: Restart::Permanent,
            // A supervisor needs time to stop its own children.
            shutdown: Duration::from_secs(30),
            is_supervisor: true,
            start,
        }
    }

    /// Sets the restart type (default permanent).
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how long a graceful stop may take before the child is killed (default 5 s).
    pub fn shutdown(mut self, timeout: Duration) -> Self {
        self.shutdown = timeout;
        self
    }

    /// The child's name (last path segment).
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A supervisor's configuration and children.
#[derive(Debug, Clone, Default)]
pub struct SupervisorSpec {
    /// Which siblings restart together.
    pub strategy: Strategy,
    /// Restarts allowed per window before escalating.
    pub intensity: Intensity,
    /// Backoff between quick restarts.
    pub backoff: Backoff,
    /// Children in start order.
    pub children: Vec<ChildSpec>,
}

impl SupervisorSpec {
    /// A supervisor with the given strategy and default intensity and backoff.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            ..Default::default()
        }
    }

    /// Appends a child (children start in the order they are added).
    pub fn child(mut self, spec: ChildSpec) -> Self {
        self.children.push(spec);
        self
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.intensity = Intensity {
            max_restarts,
            within,
        };
        self
    }

    /// Sets the backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// Live, shared view of one child, written only by its supervisor.
#[derive(Clone)]
pub(crate) struct ChildView {
    pub(crate) path: String,
    pub(crate) is_supervisor: bool,
    pub(crate) restart: Restart,
    pub(crate) state: ChildState,
    pub(crate) restarts: u64,
    pub(crate) last_failure: Option<Failure>,
    pub(crate) started_at: Option<Instant>,
    pub(crate) sup: Option<SupervisorRef>,
}

/// Live view of a supervisor's children.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) children: Vec<ChildView>,
    pub(crate) escalated: Option<String>,
}

/// Handle to a running supervisor: query its tree, add and remove children.
#[derive(Clone)]
pub struct SupervisorRef {
    path: ActorPath,
    strategy: Strategy,
    actor: ActorRef<SupervisorMsg>,
    view: Arc<RwLock<View>>,
    started_at: Instant,
}

impl fmt::Debug for SupervisorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorRef")
            .field("path", &self.path.to_string())
            .finish()
    }
}

impl SupervisorRef {
    /// Its path.
    pub fn path(&self) -> &ActorPath {
        &self.path
    }

    pub(crate) fn id(&self) -> ActorId {
        self.actor.get_id()
    }

    /// Its ractor cell (to wait on or link to).
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Starts a new child at the end of the child list (OTP `start_child`).
    pub async fn start_child(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.actor
            .send_message(SupervisorMsg::StartChild(Box::new(spec), tx))
            .map_err(|_| SupervisorError::NotRunning(self.path.to_string()))?;
        rx.await
            .map_err(|_| SupervisorError::NotRunning(self.path.to_string()))?
    }

    /// Stops a child (gracefully, within its shutdown timeout) and forgets it
    /// (OTP `terminate_child` + `delete_child`).
    pub async fn terminate_child(&self, name: &str) -> Result<(), SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.actor
            .send_message(SupervisorMsg::TerminateChild(name.to_string(), tx))
            .map_err(|_| SupervisorError::NotRunning(self.path.to_string()))?;
        rx.await
            .map_err(|_| SupervisorError::NotRunning(self.path.to_string()))?
    }

    /// Names of its children, in start order.
    pub fn child_names(&self) -> Vec<String> {
        self.view
            .read()
            .children
            .iter()
            .map(|c| c.path.rsplit('/').next().unwrap_or("").to_string())
            .collect()
    }

    /// The live tree under this supervisor; `me` describes the supervisor itself
    /// as its parent sees it (or `None` for a root).
    pub fn tree(&self) -> ActorTree {
        self.tree_as(None)
    }

    fn tree_as(&self, me: Option<&ChildView>) -> ActorTree {
        let view = self.view.read();
        let children = view
            .children
            .iter()
            .map(|c| match &c.sup {
                Some(sup) if c.state == ChildState::Running => sup.tree_as(Some(c)),
                _ => leaf(c),
            })
            .collect();
        let (restart, state, restarts, last_failure, uptime) = match me {
            Some(c) => (
                c.restart,
                c.state,
                c.restarts,
                c.last_failure.clone(),
                uptime(c.started_at),
            ),
            None => (
                Restart::Permanent,
                if view.escalated.is_some() {
                    ChildState::Failed
                } else {
                    ChildState::Running
                },
                0,
                view.escalated.clone().map(|reason| Failure {
                    reason,
                    at_unix_ms: crate::events::unix_ms(std::time::SystemTime::now()),
                }),
                uptime(Some(self.started_at)),
            ),
        };
        ActorTree {
            path: self.path.to_string(),
            kind: "supervisor".into(),
            restart: restart.as_str().into(),
            state,
            restarts,
            last_failure,
            uptime_secs: uptime,
            strategy: Some(self.strategy.as_str().into()),
            children,
        }
    }
}

fn uptime(started: Option<Instant>) -> f64 {
    started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0)
}

fn leaf(c: &ChildView) -> ActorTree {
    ActorTree {
        path: c.path.clone(),
        kind: if c.is_supervisor {
            "supervisor"
        } else {
            "worker"
        }
        .into(),
        restart: c.restart.as_str().into(),
        state: c.state,
        restarts: c.restarts,
        last_failure: c.last_failure.clone(),
        uptime_secs: if c.state == ChildState::Running {
            uptime(c.started_at)
        } else {
            0.0
        },
        strategy: None,
        children: Vec::new(),
    }
}

/// How a root supervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootExit {
    /// It was shut down.
    Stopped,
    /// It escalated (restart intensity exceeded) or crashed.
    Failed(String),
}

/// The node's root supervisor: shut it down, or wait for it to end.
pub struct RootHandle {
    sup: SupervisorRef,
    join: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for RootHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootHandle")
            .field("sup", &self.sup)
            .finish()
    }
}

impl RootHandle {
    /// The root supervisor.
    pub fn supervisor(&self) -> &SupervisorRef {
        &self.sup
    }

    /// Stops every child in reverse start order (each within its shutdown
    /// timeout), then the root; kills what is left after `timeout`.
    pub async fn shutdown(self, timeout: Duration) -> RootExit {
        let cell = self.sup.cell();
        if cell
            .stop_and_wait(Some("shutdown".into()), Some(timeout))
            .await
            .is_err()
        {
            tracing::error!("root supervisor did not stop within {timeout:?}; killing");
            cell.kill();
        }
        self.wait().await
    }

    /// Waits until the root supervisor ends.
    pub async fn wait(self) -> RootExit {
        let _ = self.join.await;
        match self.sup.view.read().escalated.clone() {
            Some(reason) => RootExit::Failed(reason),
            None => RootExit::Stopped,
        }
    }

    /// Resolves when the root ends, without consuming the handle.
    pub async fn ended(&self) {
        let _ = self.sup.cell().wait(None).await;
    }
}

pub(crate) async fn start_root(node: Node, spec: SupervisorSpec) -> Result<RootHandle, StartError> {
    let path = node.root_path();
    let (sup, join) = actor::spawn_root(node, path, spec).await?;
    Ok(RootHandle { sup, join })
}
