//! The supervisor actor: carries out what [`Decider`] decides.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use abi_protocol::ActorPath;
use abi_protocol::supervision::{
    ChildState, CommandError, Failure, GetTree, KillChild, RestartChild,
};
use parking_lot::RwLock;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::decide::{Decider, Decision, Exit};
use super::{
    ChildContext, ChildSpec, ChildView, Restart, StartError, SupervisorError, SupervisorRef,
    SupervisorSpec, View,
};
use crate::events::{EventKind, unix_ms};
use crate::metrics::Metrics;
use crate::registry::Started;
use crate::{Call, Node};

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// Its live tree.
    GetTree(Call<GetTree>),
    /// Operator restart of a child.
    Restart(Call<RestartChild>),
    /// Fault injection: kill a child.
    Kill(Call<KillChild>),
    /// Add a child at the end.
    StartChild(Box<ChildSpec>, oneshot::Sender<Result<(), SupervisorError>>),
    /// Stop and forget a child.
    TerminateChild(String, oneshot::Sender<Result<(), SupervisorError>>),
    /// A backoff delay ran out.
    RestartDue { token: u64 },
}

impl From<Call<GetTree>> for SupervisorMsg {
    fn from(c: Call<GetTree>) -> Self {
        Self::GetTree(c)
    }
}
impl From<Call<RestartChild>> for SupervisorMsg {
    fn from(c: Call<RestartChild>) -> Self {
        Self::Restart(c)
    }
}
impl From<Call<KillChild>> for SupervisorMsg {
    fn from(c: Call<KillChild>) -> Self {
        Self::Kill(c)
    }
}

struct Child {
    spec: ChildSpec,
    path: ActorPath,
    cell: Option<ActorCell>,
    state: ChildState,
    restarts: u64,
    last_failure: Option<Failure>,
    started_at: Option<Instant>,
    streak: u32,
    sup: Option<SupervisorRef>,
}

pub(crate) struct Supervisor;

pub(crate) struct Args {
    node: Node,
    path: ActorPath,
    spec: SupervisorSpec,
    view: Arc<RwLock<View>>,
}

pub(crate) struct State {
    node: Node,
    path: ActorPath,
    decider: Decider,
    children: Vec<Child>,
    view: Arc<RwLock<View>>,
    /// Scheduled restart: (token, children to start, timer).
    pending: Option<(u64, Vec<usize>, tokio::task::JoinHandle<()>)>,
    next_token: u64,
}

pub(crate) async fn spawn_root(
    node: Node,
    path: ActorPath,
    spec: SupervisorSpec,
) -> Result<(SupervisorRef, tokio::task::JoinHandle<()>), StartError> {
    let view = Arc::new(RwLock::new(View::default()));
    let strategy = spec.strategy;
    let args = Args {
        node: node.clone(),
        path: path.clone(),
        spec,
        view: view.clone(),
    };
    let (actor, join) = Actor::spawn(None, Supervisor, args).await?;
    let sup = SupervisorRef {
        path: path.clone(),
        strategy,
        actor: actor.clone(),
        view,
        started_at: Instant::now(),
    };
    register(&node, &path, &sup);
    Ok((sup, join))
}

pub(crate) async fn spawn_child_supervisor(
    ctx: ChildContext,
    spec: SupervisorSpec,
) -> Result<Started, StartError> {
    let view = Arc::new(RwLock::new(View::default()));
    let strategy = spec.strategy;
    let args = Args {
        node: ctx.node.clone(),
        path: ctx.path.clone(),
        spec,
        view: view.clone(),
    };
    let (actor, _join) =
        Actor::spawn_linked(None, Supervisor, args, ctx.supervisor.clone()).await?;
    let sup = SupervisorRef {
        path: ctx.path.clone(),
        strategy,
        actor: actor.clone(),
        view,
        started_at: Instant::now(),
    };
    ctx.node.add_supervisor(sup.clone());
    let mut started: Started = Started::new(actor)
        .serves::<GetTree>()
        .serves::<RestartChild>()
        .serves::<KillChild>()
        .into();
    started.supervisor = Some(sup);
    Ok(started)
}

fn register(node: &Node, path: &ActorPath, sup: &SupervisorRef) {
    node.add_supervisor(sup.clone());
    let started: Started = Started::new(sup.actor.clone())
        .serves::<GetTree>()
        .serves::<RestartChild>()
        .serves::<KillChild>()
        .into();
    if let Some(mb) = started.mailbox {
        node.registry().insert(path.name.clone(), mb);
    }
}

fn now_failure(reason: String) -> Failure {
    Failure {
        reason,
        at_unix_ms: unix_ms(SystemTime::now()),
    }
}

impl State {
    fn publish(&self) {
        let mut view = self.view.write();
        view.children = self
            .children
            .iter()
            .map(|c| ChildView {
                path: c.path.to_string(),
                is_supervisor: c.spec.is_supervisor,
                restart: c.spec.restart,
                state: c.state,
                restarts: c.restarts,
                last_failure: c.last_failure.clone(),
                started_at: c.started_at,
                sup: c.sup.clone(),
            })
            .collect();
    }

    fn kinds(&self) -> Vec<Restart> {
        self.children.iter().map(|c| c.spec.restart).collect()
    }

    fn index_of_cell(&self, cell: &ActorCell) -> Option<usize> {
        let id = cell.get_id();
        self.children
            .iter()
            .position(|c| c.cell.as_ref().is_some_and(|cc| cc.get_id() == id))
    }

    fn index_of_name(&self, name: &str) -> Option<usize> {
        self.children.iter().position(|c| c.spec.name == name)
    }

    /// Forgets a child's actor: registry entry, supervisor entry, cell.
    fn detach(&mut self, i: usize) -> Option<ActorCell> {
        let child = &mut self.children[i];
        let cell = child.cell.take()?;
        self.node
            .registry()
            .remove_if(&child.path.name, cell.get_id());
        if let Some(sup) = &child.sup {
            self.node.remove_supervisor(&child.path.name, sup.id());
        }
        Some(cell)
    }

    /// Graceful stop within the child's shutdown timeout, then kill.
    async fn stop_child(&mut self, i: usize) {
        let timeout = self.children[i].spec.shutdown;
        if let Some(cell) = self.detach(i)
            && cell
                .stop_and_wait(Some("shutdown".into()), Some(timeout))
                .await
                .is_err()
        {
            tracing::warn!(path = %self.children[i].path, ?timeout, "child did not stop in time; killing");
            let _ = cell.kill_and_wait(Some(Duration::from_secs(1))).await;
        }
        self.children[i].state = ChildState::Stopped;
        self.children[i].started_at = None;
        let labels = Metrics::labels(&self.children[i].path.to_string());
        self.node.metrics().up.get_or_create(&labels).set(0);
    }

    async fn stop_all(&mut self) {
        if let Some((_, _, timer)) = self.pending.take() {
            timer.abort();
        }
        for i in (0..self.children.len()).rev() {
            self.stop_child(i).await;
        }
        self.publish();
    }

    /// Starts child `i`; on failure records it and returns the reason.
    async fn start_child(&mut self, i: usize, myself: &ActorCell) -> Result<(), StartError> {
        self.children[i].state = ChildState::Starting;
        self.publish();
        let ctx = ChildContext {
            node: self.node.clone(),
            path: self.children[i].path.clone(),
            supervisor: myself.clone(),
        };
        let start = self.children[i].spec.start.clone();
        match start(ctx).await {
            Ok(started) => {
                let child = &mut self.children[i];
                if let Some(mb) = started.mailbox {
                    self.node.registry().insert(child.path.name.clone(), mb);
                }
                child.cell = Some(started.cell);
                child.sup = started.supervisor;
                child.state = ChildState::Running;
                child.started_at = Some(Instant::now());
                let labels = Metrics::labels(&child.path.to_string());
                self.node.metrics().up.get_or_create(&labels).set(1);
                self.publish();
                Ok(())
            }
            Err(e) => {
                let child = &mut self.children[i];
                child.state = ChildState::Failed;
                child.last_failure = Some(now_failure(format!("start failed: {e}")));
                let labels = Metrics::labels(&child.path.to_string());
                self.node.metrics().failures.get_or_create(&labels).inc();
                self.node.events().push(
                    child.path.to_string(),
                    EventKind::StartFailed,
                    e.to_string(),
                );
                tracing::error!(path = %child.path, error = %e, "child failed to start");
                self.publish();
                Err(e)
            }
        }
    }

    /// Handles the exit of child `i` and everything it leads to (including
    /// restarts that fail to start). `Err` means: escalate.
    async fn on_exit(
        &mut self,
        i: usize,
        exit: Exit,
        myself: &ActorCell,
    ) -> Result<(), ActorProcessingErr> {
        let mut queue = vec![(i, exit)];
        while let Some((i, exit)) = queue.pop() {
            let uptime = self.children[i]
                .started_at
                .map(|t| t.elapsed())
                .unwrap_or_default();
            self.detach(i);
            let path = self.children[i].path.to_string();
            let labels = Metrics::labels(&path);
            self.node.metrics().up.get_or_create(&labels).set(0);
            match &exit {
                Exit::Abnormal(reason) => {
                    self.node.metrics().failures.get_or_create(&labels).inc();
                    tracing::warn!(%path, %reason, "child failed");
                    self.children[i].last_failure = Some(now_failure(reason.clone()));
                    self.node
                        .events()
                        .push(path.clone(), EventKind::Failed, reason.clone());
                }
                Exit::Normal => {
                    tracing::info!(%path, "child exited normally");
                    self.node
                        .events()
                        .push(path.clone(), EventKind::Exited, String::new());
                }
            }
            self.children[i].started_at = None;
            let streak = self.decider.streak(self.children[i].streak, uptime);
            self.children[i].streak = streak;
            let kinds = self.kinds();
            match self
                .decider
                .on_exit(i, &kinds, &exit, streak, Instant::now())
            {
                Decision::LeaveDown => {
                    self.children[i].state = match exit {
                        Exit::Normal => ChildState::Stopped,
                        Exit::Abnormal(_) => ChildState::Failed,
                    };
                    self.publish();
                }
                Decision::Escalate { restarts, within } => {
                    let reason = format!(
                        "restart intensity exceeded: {restarts} restarts within {}s (last: {path})",
                        within.as_secs_f64()
                    );
                    tracing::error!(supervisor = %self.path, %reason, "escalating");
                    self.node.events().push(
                        self.path.to_string(),
                        EventKind::Escalated,
                        reason.clone(),
                    );
                    self.stop_all().await;
                    let labels = Metrics::labels(&self.path.to_string());
                    self.node.metrics().escalations.get_or_create(&labels).inc();
                    self.view.write().escalated = Some(reason.clone());
                    return Err(reason.into());
                }
                Decision::Restart { stop, start, delay } => {
                    for j in stop {
                        if self.children[j].cell.is_some() {
                            self.stop_child(j).await;
                        }
                    }
                    for &j in &start {
                        self.children[j].state = ChildState::Restarting;
                    }
                    self.publish();
                    if delay.is_zero() {
                        if let Some(failed) = self.start_group(&start, myself).await {
                            queue.push(failed);
                        }
                    } else {
                        self.schedule(start, delay, myself);
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts `group` in order, counting a restart for each; stops at the first
    /// failure and returns it as an exit to handle.
    async fn start_group(&mut self, group: &[usize], myself: &ActorCell) -> Option<(usize, Exit)> {
        for &j in group {
            if self.children[j].cell.is_some() {
                continue;
            }
            match self.start_child(j, myself).await {
                Ok(()) => {
                    self.children[j].restarts += 1;
                    let labels = Metrics::labels(&self.children[j].path.to_string());
                    self.node.metrics().restarts.get_or_create(&labels).inc();
                    self.node.events().push(
                        self.children[j].path.to_string(),
                        EventKind::Restarted,
                        format!("restart #{}", self.children[j].restarts),
                    );
                    self.publish();
                }
                Err(e) => return Some((j, Exit::Abnormal(format!("start failed: {e}")))),
            }
        }
        None
    }

    fn schedule(&mut self, group: Vec<usize>, delay: Duration, myself: &ActorCell) {
        let token = self.next_token;
        self.next_token += 1;
        let actor: ActorRef<SupervisorMsg> = myself.clone().into();
        // Owned by this supervisor: aborted in post_stop or when superseded.
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = actor.send_message(SupervisorMsg::RestartDue { token });
        });
        if let Some((_, mut old, old_timer)) = self.pending.take() {
            old_timer.abort();
            for j in group.iter() {
                old.retain(|k| k != j);
            }
            let mut merged = old;
            merged.extend(group);
            merged.sort_unstable();
            merged.dedup();
            self.pending = Some((token, merged, timer));
        } else {
            self.pending = Some((token, group, timer));
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        let seed = rand::random::<u64>();
        let mut state = State {
            decider: Decider::new(
                args.spec.strategy,
                args.spec.intensity,
                args.spec.backoff,
                seed,
            ),
            children: Vec::new(),
            view: args.view,
            pending: None,
            next_token: 0,
            node: args.node,
            path: args.path,
        };
        for spec in args.spec.children {
            let path = state.path.child(&spec.name)?;
            state.children.push(Child {
                spec,
                path,
                cell: None,
                state: ChildState::Starting,
                restarts: 0,
                last_failure: None,
                started_at: None,
                streak: 0,
                sup: None,
            });
        }
        state.publish();
        // Ordered start: a child that fails to start stops the ones before it.
        let me = myself.get_cell();
        for i in 0..state.children.len() {
            if let Err(e) = state.start_child(i, &me).await {
                state.stop_all().await;
                return Err(
                    format!("child {} failed to start: {e}", state.children[i].path).into(),
                );
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_all().await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let me = myself.get_cell();
        match msg {
            SupervisorMsg::GetTree(call) => {
                let sup = state.node.supervisor(&state.path);
                let tree = match sup {
                    Some(s) => s.tree(),
                    None => {
                        // Not registered (should not happen); answer with children only.
                        let fake = SupervisorRef {
                            path: state.path.clone(),
                            strategy: state.decider.strategy(),
                            actor: myself.clone(),
                            view: state.view.clone(),
                            started_at: Instant::now(),
                        };
                        fake.tree()
                    }
                };
                call.reply(tree);
            }
            SupervisorMsg::Kill(call) => {
                let name = call.request().name.clone();
                let res = match state.index_of_name(&name) {
                    Some(i) => match &state.children[i].cell {
                        Some(cell) => {
                            tracing::warn!(path = %state.children[i].path, "killing child on request (fault injection)");
                            cell.kill();
                            Ok(())
                        }
                        None => Err(CommandError::NoSuchChild(format!("{name} (not running)"))),
                    },
                    None => Err(CommandError::NoSuchChild(name)),
                };
                call.reply(res);
            }
            SupervisorMsg::Restart(call) => {
                let name = call.request().name.clone();
                let Some(i) = state.index_of_name(&name) else {
                    call.reply(Err(CommandError::NoSuchChild(name)));
                    return Ok(());
                };
                tracing::info!(path = %state.children[i].path, "operator restart");
                let kinds = state.kinds();
                let (stop, start) = state.decider.group(i, &kinds);
                for j in stop {
                    if state.children[j].cell.is_some() {
                        state.stop_child(j).await;
                    }
                }
                state.stop_child(i).await;
                let res = match state.start_group(&start, &me).await {
                    None => Ok(()),
                    Some((j, exit)) => {
                        let reason = match &exit {
                            Exit::Abnormal(r) => r.clone(),
                            Exit::Normal => String::new(),
                        };
                        call.reply(Err(CommandError::StartFailed(reason)));
                        return state.on_exit(j, exit, &me).await;
                    }
                };
                call.reply(res);
            }
            SupervisorMsg::StartChild(spec, reply) => {
                if state.index_of_name(&spec.name).is_some() {
                    let _ = reply.send(Err(SupervisorError::AlreadyExists(spec.name.clone())));
                    return Ok(());
                }
                let path = match state.path.child(&spec.name) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = reply.send(Err(StartError::msg(e).into()));
                        return Ok(());
                    }
                };
                state.children.push(Child {
                    spec: *spec,
                    path,
                    cell: None,
                    state: ChildState::Starting,
                    restarts: 0,
                    last_failure: None,
                    started_at: None,
                    streak: 0,
                    sup: None,
                });
                let i = state.children.len() - 1;
                match state.start_child(i, &me).await {
                    Ok(()) => {
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        state.children.remove(i);
                        state.publish();
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
            SupervisorMsg::TerminateChild(name, reply) => match state.index_of_name(&name) {
                Some(i) => {
                    state.stop_child(i).await;
                    state.children.remove(i);
                    if let Some((_, group, _)) = &mut state.pending {
                        group.retain(|&j| j != i);
                        for j in group.iter_mut() {
                            if *j > i {
                                *j -= 1;
                            }
                        }
                    }
                    state.publish();
                    let _ = reply.send(Ok(()));
                }
                None => {
                    let _ = reply.send(Err(SupervisorError::NoSuchChild(name)));
                }
            },
            SupervisorMsg::RestartDue { token } => {
                let due = match &state.pending {
                    Some((t, _, _)) if *t == token => state.pending.take(),
                    _ => None,
                };
                if let Some((_, group, _)) = due
                    && let Some((j, exit)) = state.start_group(&group, &me).await
                {
                    return state.on_exit(j, exit, &me).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorTerminated(cell, last_state, reason) => {
                // Release the child's resources (sockets, files) before any
                // restart tries to acquire them again.
                drop(last_state);
                let exit = match reason.as_deref() {
                    Some("killed") => Exit::Abnormal("killed".into()),
                    _ => Exit::Normal,
                };
                (cell, exit)
            }
            SupervisionEvent::ActorFailed(cell, err) => (cell, Exit::Abnormal(err.to_string())),
            _ => return Ok(()),
        };
        // Exits of children we stopped on purpose (or replaced) are not ours to handle.
        let Some(i) = state.index_of_cell(&cell) else {
            return Ok(());
        };
        state.on_exit(i, exit, &myself.get_cell()).await
    }
}
