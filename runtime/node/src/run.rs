//! `abi-node run`: start the supervision tree, serve, shut down on a signal.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use abi_runtime::supervisor::RootExit;
use abi_runtime::{Backoff, Node, Strategy, SupervisorSpec};
use abi_topology::StrategyName;
use std::sync::Arc;

use abi_gateway::auth::KeyStore;
use abi_gateway::auth::middleware::Security;
use anyhow::Context;

use crate::cli::{LogFormatArg, RunArgs};
use crate::config::{self, Resolved};

pub fn main(args: RunArgs) -> ExitCode {
    let resolved = match config::resolve(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let json = match args.log_format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Text) => false,
        None => resolved.topology.telemetry.log_format == abi_topology::LogFormat::Json,
    };
    // The tracer provider must exist before the subscriber is installed (its
    // layer is part of it); the flusher actor that exports starts with the tree.
    let telemetry = match telemetry(&resolved) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::logging::init(json, telemetry.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(
        resolved,
        telemetry,
        Duration::from_secs(args.shutdown_timeout_secs),
    )) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "abi-node failed");
            ExitCode::FAILURE
        }
    }
}

/// The span sink, when an OTLP endpoint is configured.
fn telemetry(
    r: &Resolved,
) -> Result<Option<abi_telemetry::Telemetry>, abi_telemetry::TelemetryError> {
    let t = &r.topology.telemetry;
    let Some(endpoint) = &t.otlp_endpoint else {
        return Ok(None);
    };
    let mut cfg = abi_telemetry::TelemetryConfig::new(endpoint.clone());
    cfg.sampling_ratio = t.sampling_ratio;
    cfg.queue_size = t.queue_size;
    cfg.max_batch = t.max_export_batch_size;
    cfg.service_name = t.service_name.clone();
    abi_telemetry::Telemetry::new(cfg).map(Some)
}

/// Each start of a node gets a higher incarnation, persisted in its data dir.
fn next_incarnation(data_dir: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let path = data_dir.join("incarnation");
    let prev = match std::fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .with_context(|| format!("corrupt {}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let next = prev + 1;
    let tmp = data_dir.join("incarnation.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        writeln!(f, "{next}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(next)
}

fn root_spec(r: &Resolved) -> SupervisorSpec {
    let s = &r.topology.supervision;
    let strategy = match s.strategy {
        StrategyName::OneForOne => Strategy::OneForOne,
        StrategyName::OneForAll => Strategy::OneForAll,
        StrategyName::RestForOne => Strategy::RestForOne,
    };
    SupervisorSpec::new(strategy)
        .intensity(s.max_restarts, Duration::from_secs(s.within_secs))
        .backoff(Backoff {
            initial: Duration::from_millis(s.backoff_initial_ms),
            max: Duration::from_millis(s.backoff_max_ms),
            jitter: s.backoff_jitter,
            reset_after: Duration::from_secs(s.reset_after_secs),
        })
}

fn security(r: &Resolved) -> anyhow::Result<Arc<Security>> {
    let g = &r.topology.gateway;
    let keys = match &r.keys_file {
        Some(path) => {
            let store =
                KeyStore::open(path).with_context(|| format!("keys file {}", path.display()))?;
            tracing::info!(keys_file = %path.display(), "gateway authentication on");
            Some(store)
        }
        None if r.jwt.is_none() => {
            tracing::warn!(
                "gateway authentication off (no --keys-file): keep the gateway on loopback"
            );
            None
        }
        None => None,
    };
    let jwt = match &r.jwt {
        Some(settings) => {
            let v = abi_gateway::auth::jwt::JwtVerifier::new(settings)?;
            tracing::info!(verifier = ?v, "gateway accepts JWT bearer tokens");
            Some(v)
        }
        None => None,
    };
    if keys.is_none() && jwt.is_some() {
        tracing::info!("gateway authentication on (JWT only)");
    }
    Ok(Arc::new(Security {
        keys,
        jwt,
        open_metrics: g.open_metrics,
        limiter: (g.rate_limit_per_sec > 0.0).then(|| {
            abi_gateway::auth::limit::RateLimiter::new(g.rate_limit_per_sec, g.rate_limit_burst)
        }),
        max_concurrency: (g.max_concurrency > 0)
            .then(|| Arc::new(tokio::sync::Semaphore::new(g.max_concurrency))),
    }))
}

fn pool_decl(r: &Resolved, p: &abi_topology::InferencePool) -> abi_inference::pool::PoolDecl {
    abi_inference::pool::PoolDecl {
        name: p.name.clone(),
        model: r.base.join(&p.model),
        config: abi_inference::pool::PoolConfig {
            workers: p.replicas,
            max_batch: p.max_batch,
            max_wait_ms: p.max_wait_ms,
            queue_capacity: p.queue_capacity,
            device: p.device.clone(),
            ..Default::default()
        },
    }
}

/// The node's subsystems in start order: devices first (others lease them),
/// then storage, inference, and the gateway last so that it only opens when
/// what it routes to exists (and closes first on shutdown).
fn children(
    r: &Resolved,
    security: &Arc<Security>,
    gateway_tls: Option<Arc<rustls::ServerConfig>>,
    mut spec: SupervisorSpec,
) -> SupervisorSpec {
    let t = &r.topology;
    if t.gpu.placement.matches(&r.me) {
        spec = spec.child(abi_gpu::child_spec(abi_gpu::PluginConfig {
            dirs: t.plugins.dirs.clone(),
            require: t.plugins.require.clone(),
            pins: t.plugins.pins.clone(),
        }));
    }
    let collections = t
        .collections
        .iter()
        .filter(|c| c.placement.matches(&r.me))
        .map(abi_vector::topology::collection_config)
        .collect();
    // Replicated collections ride on the metadata group: its timing drives the shard groups.
    let replication = t.raft.as_ref().map(|raft| abi_vector::ReplicationArgs {
        timing: abi_vector::replica::actor::GroupTiming {
            election_ms: raft.election_timeout_ms,
            heartbeat_ms: raft.heartbeat_ms,
            snapshot_every: raft.snapshot_every,
        },
        replace_after: Duration::from_millis(raft.replace_dead_after_ms),
    });
    spec = spec.child(abi_vector::child_spec_with(
        &r.me.data_dir,
        collections,
        replication,
    ));
    let pools = t
        .inference
        .iter()
        .filter(|p| p.placement.matches(&r.me))
        .map(|p| pool_decl(r, p))
        .collect();
    spec = spec.child(abi_inference::child_spec(r.me.models_dir.clone(), pools));
    if t.gateway.placement.matches(&r.me) {
        let timeout = Duration::from_millis(t.gateway.request_timeout_ms);
        spec = spec.child(abi_gateway::child_spec(
            abi_gateway::GatewayConfig {
                listen: r.me.http,
                workers: t.gateway.workers,
                max_body_bytes: t.gateway.max_body_bytes,
                request_timeout: timeout,
                security: security.clone(),
                tls: gateway_tls,
                cors_origins: t.gateway.cors_origins.clone(),
            },
            timeout,
        ));
    }
    spec
}

async fn serve(
    r: Resolved,
    telemetry: Option<abi_telemetry::Telemetry>,
    shutdown_timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let incarnation = next_incarnation(&r.me.data_dir)?;
    let node = Node::new(abi_protocol::NodeId::new(r.me.id.clone())?, incarnation);
    tracing::info!(
        node = %r.me.id,
        incarnation,
        http = %r.me.http,
        quic = %r.me.listen,
        data_dir = %r.me.data_dir.display(),
        "starting abi-node {}",
        env!("CARGO_PKG_VERSION")
    );
    let security = security(&r)?;
    // TLS files are read here, before anything starts, so a bad file fails fast.
    let gateway_tls = match &r.gateway_tls {
        Some(p) => {
            let cfg = abi_gateway::tls::server_config(&p.cert, &p.key)?;
            tracing::info!(cert = %p.cert.display(), "gateway serves HTTPS only");
            Some(cfg)
        }
        None => None,
    };
    let cluster = crate::cluster::start(&r, &node).await?;
    let mut spec = root_spec(&r);
    if let Some(t) = &telemetry {
        // First child: started before anything that makes spans, stopped
        // last, so the final flush sees the spans of the shutdown too.
        t.register_metrics(&node);
        t.install_propagation();
        spec = spec.child(t.child_spec());
        tracing::info!(
            endpoint = %t.config().otlp_endpoint,
            sampling_ratio = t.config().sampling_ratio,
            queue_size = t.config().queue_size,
            "exporting traces over OTLP/HTTP"
        );
    }
    if let Some(c) = &cluster {
        spec = spec.child(c.membership.clone());
    }
    // Metadata before the subsystems that will react to it.
    if let Some(raft) = crate::cluster::raft_child(&r, cluster.as_ref())? {
        spec = spec.child(raft);
    }
    let spec = children(&r, &security, gateway_tls, spec);
    let root = node
        .start_root(spec)
        .await
        .map_err(|e| anyhow::anyhow!("start-up failed: {e}"))?;
    tracing::info!(node = %r.me.id, "node started");

    use tokio::signal::unix::{SignalKind, signal};
    let mut sigterm = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = sighup.recv() => {
                // Key rotation and revocation without a restart.
                if let Some(keys) = &security.keys {
                    match keys.reload() {
                        Ok(n) => tracing::info!(active_keys = n, "SIGHUP: keys reloaded"),
                        Err(e) => tracing::error!(error = %e, "SIGHUP: keys reload failed; old keys kept"),
                    }
                }
            }
            _ = root.ended() => break,
        }
    }
    let exit = root.shutdown(shutdown_timeout).await;
    if let Some(t) = &telemetry {
        t.shutdown();
    }
    if let Some(c) = cluster {
        // Peers see the connection close at once instead of waiting for the idle timeout.
        c.transport.shutdown();
    }
    match exit {
        RootExit::Stopped => {
            tracing::info!("stopped cleanly");
            Ok(ExitCode::SUCCESS)
        }
        RootExit::Failed(reason) => {
            tracing::error!(%reason, "root supervisor escalated: the node cannot keep its actors running");
            Ok(ExitCode::from(3))
        }
    }
}
