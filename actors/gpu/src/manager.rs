//! The device manager actor: owns the loaded backends and their devices, runs ops on them off
//! the async executor, leases device memory to other actors, and health-checks every device
//! periodically with a real computation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use abi_protocol::gpu::{
    Compute, ComputeResult, DeviceEntry, GpuError, Lease, LeaseGrant, LeaseInfo, ListDevices,
    ListLeases, Release,
};
use abi_protocol::{ActorPath, health};
use abi_runtime::{Call, ChildSpec, Node, Restart, StartError, Started};
use abi_sdk::host::{Context, Plugin};
use abi_sdk::{DeviceInfo, DeviceKind};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::{JoinHandle, JoinSet};

use crate::loader::{LoadReport, PluginConfig, load_all};

/// Settings of the device manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where plugins come from and which are required.
    pub plugins: PluginConfig,
    /// How often every device runs its health check.
    pub health_interval: Duration,
    /// How often leases of vanished holders are released.
    pub sweep_interval: Duration,
}

impl ManagerConfig {
    /// Defaults: health every 30 s, lease sweep every second.
    pub fn new(plugins: PluginConfig) -> Self {
        Self {
            plugins,
            health_interval: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(1),
        }
    }
}

/// The supervised device manager, registered at `gpu` (see `abi_protocol::paths::GPU`).
/// Start-up fails (and the reason is reported) when a required plugin does not load.
pub fn child_spec(plugins: PluginConfig) -> ChildSpec {
    child_spec_with(ManagerConfig::new(plugins))
}

/// [`child_spec`] with explicit intervals.
pub fn child_spec_with(cfg: ManagerConfig) -> ChildSpec {
    ChildSpec::worker(abi_protocol::paths::GPU, move |ctx| {
        let cfg = cfg.clone();
        async move {
            let plugins = cfg.plugins.clone();
            // dlopen and plugin init (wgpu adapter enumeration) block: keep them off the executor.
            let report = tokio::task::spawn_blocking(move || load_all(&plugins))
                .await
                .map_err(|e| StartError::msg(format!("plugin loading task failed: {e}")))?
                .map_err(StartError::msg)?;
            let args = ManagerArgs {
                node: ctx.node.clone(),
                report,
                cfg,
            };
            let r = ctx.spawn(DeviceManager, args).await?;
            ctx.node.register_health_check(ctx.path.clone());
            Ok(Started::new(r)
                .serves::<ListDevices>()
                .serves::<Compute>()
                .serves::<Lease>()
                .serves::<Release>()
                .serves::<ListLeases>()
                .serves::<health::Check>())
        }
    })
    .restart(Restart::Permanent)
    .shutdown(Duration::from_secs(5))
}

/// The actor.
#[derive(Debug)]
pub struct DeviceManager;

/// Its start arguments.
#[derive(Debug)]
pub struct ManagerArgs {
    /// The local node (for lease holder liveness).
    pub node: Node,
    /// What the loader found.
    pub report: LoadReport,
    /// Intervals.
    pub cfg: ManagerConfig,
}

/// Messages of the device manager.
pub enum GpuMsg {
    /// `gpu.list_devices`.
    List(Call<ListDevices>),
    /// `gpu.compute`.
    Compute(Call<Compute>),
    /// `gpu.lease`.
    Lease(Call<Lease>),
    /// `gpu.release`.
    Release(Call<Release>),
    /// `gpu.list_leases`.
    Leases(Call<ListLeases>),
    /// Readiness probe: runs a real health check.
    Check(Call<health::Check>),
    /// Timer: sweep leases; every N ticks, health-check devices.
    Tick,
    /// Health results from a blocking job: (slot, result, fresh device info).
    HealthDone(Vec<(usize, Result<(), String>, Option<DeviceInfo>)>),
}

macro_rules! from_call {
    ($($req:ty => $var:ident),*) => {$(
        impl From<Call<$req>> for GpuMsg {
            fn from(c: Call<$req>) -> Self { GpuMsg::$var(c) }
        }
    )*};
}
from_call!(ListDevices => List, Compute => Compute, Lease => Lease, Release => Release,
    ListLeases => Leases, health::Check => Check);

/// One device of one backend, with its lazily opened context.
struct Slot {
    plugin: Plugin,
    index: u32,
    info: DeviceInfo,
    ctx: Arc<Mutex<Option<Context>>>,
    healthy: bool,
    last_error: Option<String>,
    leased: u64,
}

impl Slot {
    fn id(&self) -> String {
        format!("{}:{}", self.plugin.name(), self.index)
    }
}

/// Gets the slot's context, opening it on first use (called on blocking threads only).
fn context_of(
    plugin: &Plugin,
    index: u32,
    cell: &Mutex<Option<Context>>,
) -> Result<Context, String> {
    let mut g = cell.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = g.as_ref() {
        return Ok(c.clone());
    }
    let c = plugin.create_context(index).map_err(|e| e.to_string())?;
    *g = Some(c.clone());
    Ok(c)
}

/// What a health job needs for one device: slot index, plugin, device index, context cell.
type HealthTarget = (usize, Plugin, u32, Arc<Mutex<Option<Context>>>);

struct LeaseRec {
    holder: ActorPath,
    slot: usize,
    memory: u64,
}

/// The actor's state.
pub struct ManagerState {
    node: Node,
    slots: Vec<Slot>,
    leases: HashMap<u64, LeaseRec>,
    next_lease: u64,
    ticker: JoinHandle<()>,
    jobs: JoinSet<()>,
    ticks_per_health: u64,
    tick_count: u64,
}

fn health_job(targets: Vec<HealthTarget>) -> Vec<(usize, Result<(), String>, Option<DeviceInfo>)> {
    targets
        .into_iter()
        .map(|(slot, plugin, index, cell)| {
            let r = context_of(&plugin, index, &cell)
                .and_then(|c| c.health_check().map_err(|e| e.to_string()));
            let fresh = plugin
                .devices()
                .ok()
                .and_then(|d| d.into_iter().nth(index as usize));
            (slot, r, fresh)
        })
        .collect()
}

impl ManagerState {
    fn entries(&self) -> Vec<DeviceEntry> {
        self.slots
            .iter()
            .map(|s| DeviceEntry {
                backend: s.plugin.name().to_string(),
                id: s.id(),
                index: s.index,
                name: s.info.name.clone(),
                kind: s.info.kind.name().to_string(),
                memory_total: s.info.memory_total,
                memory_free: s.info.memory_free,
                memory_leased: s.leased,
                ops: s.info.op_names().into_iter().map(str::to_string).collect(),
                healthy: s.healthy,
                last_error: s.last_error.clone(),
                plugin: format!("{} (abi {})", s.plugin.version(), s.plugin.abi_version()),
            })
            .collect()
    }

    /// The slot for a compute request: requested backend/device if present and able, else cpu.
    fn pick_for_compute(
        &self,
        backend: Option<&str>,
        device: Option<u32>,
        op: abi_sdk::OpKind,
    ) -> Result<(usize, bool), GpuError> {
        let want = backend.unwrap_or("cpu");
        let find = |name: &str, dev: Option<u32>| {
            self.slots.iter().position(|s| {
                s.plugin.name() == name && dev.is_none_or(|d| d == s.index) && s.info.supports(op)
            })
        };
        if let Some(i) = find(want, device) {
            return Ok((i, false));
        }
        if let Some(i) = find("cpu", None) {
            return Ok((i, want != "cpu"));
        }
        Err(GpuError::NoDevice(format!(
            "backend `{want}` has no device that runs {}, and no cpu backend is loaded",
            op.name()
        )))
    }

    fn sweep_leases(&mut self) {
        let live: HashSet<String> = self.node.registry().names().into_iter().collect();
        let me = self.node.id().clone();
        let inc = self.node.incarnation();
        let dead: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| {
                l.holder.node == me
                    && ((l.holder.incarnation != 0 && l.holder.incarnation != inc)
                        || !live.contains(&l.holder.name))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            if let Some(l) = self.leases.remove(&id) {
                if let Some(s) = self.slots.get_mut(l.slot) {
                    s.leased = s.leased.saturating_sub(l.memory);
                }
                tracing::info!(lease = id, holder = %l.holder, "lease released: holder is gone");
            }
        }
    }

    fn lease(&mut self, req: &Lease) -> Result<LeaseGrant, GpuError> {
        let rank = |k: DeviceKind| match k {
            DeviceKind::Gpu => 0,
            DeviceKind::SoftwareGpu => 1,
            DeviceKind::Cpu => 2,
            DeviceKind::Unknown(_) => 3,
        };
        let wanted = |s: &Slot| {
            req.backend.as_deref().is_none_or(|b| b == s.plugin.name())
                && req.device.is_none_or(|d| d == s.index)
        };
        let mut best: Option<(usize, u64)> = None;
        let mut most_free = 0u64;
        for (i, s) in self.slots.iter().enumerate() {
            if !s.healthy || !wanted(s) {
                continue;
            }
            let free = s.info.memory_total.saturating_sub(s.leased);
            most_free = most_free.max(free);
            if free < req.memory {
                continue;
            }
            let better = match best {
                None => true,
                Some((j, jf)) => {
                    let (ri, rj) = (rank(s.info.kind), rank(self.slots[j].info.kind));
                    ri < rj || (ri == rj && free > jf)
                }
            };
            if better {
                best = Some((i, free));
            }
        }
        let Some((i, _)) = best else {
            if self.slots.iter().any(|s| s.healthy && wanted(s)) {
                return Err(GpuError::InsufficientMemory {
                    requested: req.memory,
                    available: most_free,
                });
            }
            return Err(GpuError::NoDevice(format!(
                "no healthy device{}{}",
                req.backend
                    .as_deref()
                    .map(|b| format!(" of backend `{b}`"))
                    .unwrap_or_default(),
                req.device
                    .map(|d| format!(" with index {d}"))
                    .unwrap_or_default()
            )));
        };
        let id = self.next_lease;
        self.next_lease += 1;
        let slot = &mut self.slots[i];
        slot.leased += req.memory;
        self.leases.insert(
            id,
            LeaseRec {
                holder: req.holder.clone(),
                slot: i,
                memory: req.memory,
            },
        );
        Ok(LeaseGrant {
            lease_id: id,
            backend: slot.plugin.name().to_string(),
            device_id: slot.id(),
            device: slot.info.name.clone(),
        })
    }

    fn health_targets(&self) -> Vec<HealthTarget> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.plugin.clone(), s.index, s.ctx.clone()))
            .collect()
    }

    fn apply_health(&mut self, results: Vec<(usize, Result<(), String>, Option<DeviceInfo>)>) {
        for (i, r, fresh) in results {
            let Some(s) = self.slots.get_mut(i) else {
                continue;
            };
            if let Some(info) = fresh {
                s.info.memory_free = info.memory_free;
            }
            match r {
                Ok(()) => {
                    if !s.healthy {
                        tracing::info!(device = %s.id(), "device healthy");
                    }
                    s.healthy = true;
                    s.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(device = %s.id(), error = %e, "device health check failed");
                    s.healthy = false;
                    s.last_error = Some(e);
                }
            }
        }
    }
}

impl Actor for DeviceManager {
    type Msg = GpuMsg;
    type State = ManagerState;
    type Arguments = ManagerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GpuMsg>,
        args: ManagerArgs,
    ) -> Result<ManagerState, ActorProcessingErr> {
        for s in &args.report.skipped {
            tracing::warn!(path = %s.path.display(), reason = %s.reason, "plugin skipped");
        }
        let mut slots = Vec::new();
        for lp in args.report.loaded {
            for (i, info) in lp.devices.into_iter().enumerate() {
                slots.push(Slot {
                    plugin: lp.plugin.clone(),
                    index: i as u32,
                    info,
                    ctx: Arc::new(Mutex::new(None)),
                    healthy: false,
                    last_error: Some("not checked yet".into()),
                    leased: 0,
                });
            }
        }
        let sweep = args.cfg.sweep_interval.max(Duration::from_millis(10));
        let ticks_per_health =
            (args.cfg.health_interval.as_millis() / sweep.as_millis()).max(1) as u64;
        let me = myself.clone();
        let ticker = tokio::spawn(async move {
            let mut iv = tokio::time::interval(sweep);
            iv.tick().await;
            loop {
                iv.tick().await;
                if me.send_message(GpuMsg::Tick).is_err() {
                    break;
                }
            }
        });
        let mut state = ManagerState {
            node: args.node,
            slots,
            leases: HashMap::new(),
            next_lease: 1,
            ticker,
            jobs: JoinSet::new(),
            ticks_per_health,
            tick_count: 0,
        };
        // First health check before serving, so /v1/devices is truthful from the start.
        let targets = state.health_targets();
        let results = tokio::task::spawn_blocking(move || health_job(targets)).await?;
        state.apply_health(results);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _: ActorRef<GpuMsg>,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        state.ticker.abort();
        state.jobs.abort_all();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<GpuMsg>,
        msg: GpuMsg,
        state: &mut ManagerState,
    ) -> Result<(), ActorProcessingErr> {
        while state.jobs.try_join_next().is_some() {}
        match msg {
            GpuMsg::List(call) => {
                let e = state.entries();
                call.reply(e);
            }
            GpuMsg::Leases(call) => {
                let v = state
                    .leases
                    .iter()
                    .map(|(id, l)| LeaseInfo {
                        lease_id: *id,
                        holder: l.holder.clone(),
                        device_id: state.slots[l.slot].id(),
                        memory: l.memory,
                    })
                    .collect();
                call.reply(v);
            }
            GpuMsg::Lease(call) => {
                let r = state.lease(call.request());
                call.reply(r);
            }
            GpuMsg::Release(call) => {
                let id = call.request().lease_id;
                let r = match state.leases.remove(&id) {
                    Some(l) => {
                        if let Some(s) = state.slots.get_mut(l.slot) {
                            s.leased = s.leased.saturating_sub(l.memory);
                        }
                        Ok(())
                    }
                    None => Err(GpuError::UnknownLease(id)),
                };
                call.reply(r);
            }
            GpuMsg::Compute(call) => {
                let (req, reply) = call.into_parts();
                let kind = match crate::compute::to_sdk(&req.op) {
                    Ok((op, _)) => op.kind(),
                    Err(e) => {
                        reply.send(Err(e));
                        return Ok(());
                    }
                };
                let (i, fallback) =
                    match state.pick_for_compute(req.backend.as_deref(), req.device, kind) {
                        Ok(x) => x,
                        Err(e) => {
                            reply.send(Err(e));
                            return Ok(());
                        }
                    };
                let s = &state.slots[i];
                let (plugin, index, cell) = (s.plugin.clone(), s.index, s.ctx.clone());
                let (device, device_id) = (s.info.name.clone(), s.id());
                state.jobs.spawn_blocking(move || {
                    let t0 = Instant::now();
                    let backend = plugin.name().to_string();
                    let r = crate::compute::to_sdk(&req.op).and_then(|(op, inputs)| {
                        let ctx =
                            context_of(&plugin, index, &cell).map_err(|m| GpuError::Backend {
                                backend: backend.clone(),
                                message: m,
                            })?;
                        ctx.run_host(&op, &inputs).map_err(|e| GpuError::Backend {
                            backend: backend.clone(),
                            message: e.to_string(),
                        })
                    });
                    reply.send(r.map(|out| ComputeResult {
                        backend,
                        device,
                        device_id,
                        fallback,
                        values: out.values,
                        indices: out.indices,
                        elapsed_us: t0.elapsed().as_micros() as u64,
                    }));
                });
            }
            GpuMsg::Check(call) => {
                // A real computation on the first healthy-looking device (cpu preferred).
                let pick = state
                    .slots
                    .iter()
                    .position(|s| s.plugin.name() == "cpu")
                    .or(if state.slots.is_empty() {
                        None
                    } else {
                        Some(0)
                    });
                let (_, reply) = call.into_parts();
                match pick {
                    None => reply.send(health::Report {
                        ready: false,
                        detail: "gpu manager: no backend devices loaded".into(),
                    }),
                    Some(i) => {
                        let s = &state.slots[i];
                        let (plugin, index, cell, id) =
                            (s.plugin.clone(), s.index, s.ctx.clone(), s.id());
                        let total = state.slots.len();
                        let healthy = state.slots.iter().filter(|s| s.healthy).count();
                        state.jobs.spawn_blocking(move || {
                            let r = context_of(&plugin, index, &cell)
                                .and_then(|c| c.health_check().map_err(|e| e.to_string()));
                            reply.send(match r {
                                Ok(()) => health::Report {
                                    ready: true,
                                    detail: format!(
                                        "gpu manager: {id} computed a checked vector_add; {healthy}/{total} devices healthy"
                                    ),
                                },
                                Err(e) => health::Report {
                                    ready: false,
                                    detail: format!("gpu manager: {id} failed its check: {e}"),
                                },
                            });
                        });
                    }
                }
            }
            GpuMsg::Tick => {
                state.sweep_leases();
                state.tick_count += 1;
                if state.tick_count.is_multiple_of(state.ticks_per_health) {
                    let targets = state.health_targets();
                    let me = myself.clone();
                    state.jobs.spawn_blocking(move || {
                        let _ = me.send_message(GpuMsg::HealthDone(health_job(targets)));
                    });
                }
            }
            GpuMsg::HealthDone(results) => state.apply_health(results),
        }
        Ok(())
    }
}
