//! The cluster side of a node: certificates CLI, the QUIC transport, and the
//! supervised membership actor fed by the configured discovery backend.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use abi_discovery::consul::{ConsulConfig, ConsulDiscovery};
use abi_discovery::etcd::{EtcdConfig, EtcdDiscovery};
use abi_discovery::static_seeds::StaticSeeds;
use abi_discovery::{Discovery, MemberInfo, MembershipArgs, MembershipConfig};
use abi_protocol::NodeId;
use abi_runtime::{ChildSpec, Node};
use abi_topology::DiscoveryKind;
use abi_transport::certs::TlsFiles;
use abi_transport::{Transport, TransportConfig};
use anyhow::Context;

use crate::cli::CertsCommand;
use crate::config::Resolved;

/// `abi-node certs init|issue`.
pub fn certs(cmd: CertsCommand) -> ExitCode {
    let res = match cmd {
        CertsCommand::Init { ca_dir } => abi_transport::certs::init_ca(&ca_dir)
            .map(|()| println!("cluster CA written to {}", ca_dir.display()))
            .map_err(|e| e.to_string()),
        CertsCommand::Issue { ca, node, out, san } => NodeId::new(node.clone())
            .map_err(|e| e.to_string())
            .and_then(|id| {
                abi_transport::certs::issue_with_sans(&ca, &id, &san, &out)
                    .map_err(|e| e.to_string())
            })
            .map(|()| {
                println!(
                    "certificate for {node} written to {} (ca.pem, node.pem, node.key)",
                    out.display()
                )
            }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The running cluster transport; shut down when the node stops.
pub struct Cluster {
    pub transport: Transport,
    pub membership: ChildSpec,
    /// Membership events (joined, suspect, dead, left), for the Raft group.
    pub events: tokio::sync::broadcast::Sender<abi_discovery::MembershipEvent>,
}

/// Binds the transport (when TLS is configured) and prepares the membership actor.
///
/// There is no plaintext path: without certificates the node runs alone.
pub async fn start(r: &Resolved, node: &Node) -> anyhow::Result<Option<Cluster>> {
    let Some(tls) = &r.tls else {
        if !r.topology.cluster.discovery.seeds.is_empty() {
            anyhow::bail!(
                "seeds are configured but no TLS: the cluster transport needs --tls-dir (see `abi-node certs`)"
            );
        }
        tracing::info!("no [tls] / --tls-dir: cluster transport off, single node");
        return Ok(None);
    };
    let files = TlsFiles::load_files(&tls.ca, &tls.cert, &tls.key)
        .with_context(|| format!("loading TLS files ({})", tls.cert.display()))?;
    // A dead peer's UDP port never answers: a short dial timeout makes asks
    // to it fail fast (a LAN handshake takes milliseconds).
    let cfg = TransportConfig {
        listen: r.me.listen,
        connect_timeout: Duration::from_millis(r.topology.membership.suspect_ms.clamp(300, 3000)),
        ..TransportConfig::default()
    };
    let transport = Transport::bind(
        node.id().clone(),
        node.incarnation(),
        &files,
        cfg,
        abi_transport::remote::node_handler(node.clone()),
    )
    .with_context(|| format!("binding QUIC on {}", r.me.listen))?;
    node.set_remote(Arc::new(transport.clone()));
    abi_transport::remote::register_metrics(&transport, node);
    tracing::info!(listen = %r.me.listen, "cluster transport up (QUIC, mutual TLS)");

    let d = &r.topology.cluster.discovery;
    let discovery: Arc<dyn Discovery> = match d.kind {
        DiscoveryKind::Static => Arc::new(StaticSeeds::parse(&d.seeds).context("static seeds")?),
        DiscoveryKind::Etcd => Arc::new(
            EtcdDiscovery::connect(EtcdConfig {
                endpoints: d.endpoints.clone(),
                prefix: format!(
                    "/{}/{}/nodes",
                    d.prefix.trim_matches('/'),
                    r.topology.cluster.name
                ),
                ttl: Duration::from_secs(d.ttl_secs.max(1)),
            })
            .await
            .context("connecting to etcd")?,
        ),
        DiscoveryKind::Consul => Arc::new(ConsulDiscovery::new(ConsulConfig {
            address: d
                .address
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8500".into()),
            token: d.token.clone(),
            service: format!("{}-{}", d.prefix, r.topology.cluster.name),
            refresh: Duration::from_secs(d.ttl_secs.max(2) / 2),
            wait: Duration::from_secs(10),
        })),
    };
    let addr: SocketAddr = r.me.advertise.unwrap_or(r.me.listen);
    let m = &r.topology.membership;
    let (events, _) = tokio::sync::broadcast::channel(256);
    let membership = abi_discovery::child_spec(MembershipArgs {
        events: events.clone(),
        transport: transport.clone(),
        discovery,
        me: MemberInfo {
            id: node.id().clone(),
            addr,
            incarnation: node.incarnation(),
            labels: r.me.labels.clone(),
        },
        timing: MembershipConfig {
            heartbeat_interval: Duration::from_millis(m.heartbeat_ms),
            suspect_after: Duration::from_millis(m.suspect_ms),
            dead_after: Duration::from_millis(m.dead_ms),
        },
    });
    Ok(Some(Cluster {
        transport,
        membership,
        events,
    }))
}

/// The Raft group child, when the topology has `[raft]`.
///
/// Initial voters are named in TOML and must be declared `[[nodes]]` (their QUIC
/// addresses come from there); a node outside `voters` starts with an empty group and
/// joins when an operator adds it (`abi-node cluster add-learner`).
pub fn raft_child(r: &Resolved, cluster: Option<&Cluster>) -> anyhow::Result<Option<ChildSpec>> {
    let Some(raft) = &r.topology.raft else {
        return Ok(None);
    };
    let addr_of = |n: &abi_topology::NodeSpec| n.advertise.unwrap_or(n.listen).to_string();
    let mut bootstrap = Vec::new();
    for v in &raft.voters {
        let spec = if *v == r.me.id {
            Some(&r.me)
        } else {
            r.topology.nodes.iter().find(|n| n.id == *v)
        };
        let spec =
            spec.with_context(|| format!("raft voter {v:?} is not a declared [[nodes]] entry"))?;
        bootstrap.push(abi_raft::Member {
            name: v.clone(),
            addr: addr_of(spec),
        });
    }
    let remote_voters = raft.voters.iter().any(|v| *v != r.me.id);
    let learn: abi_raft::LearnAddr = match cluster {
        Some(c) => {
            let t = c.transport.clone();
            Arc::new(
                move |id: &NodeId, addr: &str| match addr.parse::<SocketAddr>() {
                    Ok(a) => t.add_peer(id.clone(), a),
                    Err(e) => {
                        tracing::warn!(node = %id, addr, error = %e, "bad raft member address")
                    }
                },
            )
        }
        None if remote_voters => anyhow::bail!(
            "[raft] names other voters but no TLS: the group needs the cluster transport (--tls-dir)"
        ),
        None => Arc::new(|_: &NodeId, _: &str| {}),
    };
    Ok(Some(abi_raft::child_spec(abi_raft::RaftConfig {
        dir: r.me.data_dir.join(abi_protocol::paths::RAFT),
        me: abi_raft::Member {
            name: r.me.id.clone(),
            addr: addr_of(&r.me),
        },
        bootstrap,
        election_timeout_ms: raft.election_timeout_ms,
        heartbeat_ms: raft.heartbeat_ms,
        snapshot_every: raft.snapshot_every,
        learn,
        statuses: cluster.map(|c| status_feed(c.events.clone())),
    })))
}

/// Node status changes from the membership events, as `(node, status)`.
fn status_feed(
    events: tokio::sync::broadcast::Sender<abi_discovery::MembershipEvent>,
) -> abi_raft::StatusFeed {
    use abi_discovery::MembershipEvent as E;
    use tokio::sync::broadcast::error::RecvError;
    Arc::new(move || {
        let rx = events.subscribe();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            loop {
                let (node, status) = match rx.recv().await {
                    Ok(E::Joined(m)) => (m.id, "alive"),
                    Ok(E::Recovered(id)) => (id, "alive"),
                    Ok(E::Suspect(id)) => (id, "suspect"),
                    Ok(E::Dead(id)) => (id, "dead"),
                    Ok(E::Left(id)) => (id, "left"),
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                };
                return Some(((node.to_string(), status.to_string()), rx));
            }
        }))
    })
}
