//! `check` and `init`, and resolving which node of a topology this process is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use abi_topology::{Loaded, NodeSpec, Topology};
use anyhow::{Context, bail};

use crate::cli::RunArgs;

/// `abi-node check FILE`.
pub fn check(file: &Path) -> ExitCode {
    match abi_topology::load_file(file) {
        Ok(l) => {
            let t = &l.topology;
            println!(
                "{}: ok — cluster {:?}, {} node(s), {} inference pool(s), {} collection(s)",
                file.display(),
                t.cluster.name,
                t.declared_nodes().len(),
                t.inference.len(),
                t.collections.len()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            eprintln!("{diags}");
            ExitCode::FAILURE
        }
    }
}

/// `abi-node init [DIR]`: writes the embedded default as a starting point.
pub fn init(dir: &Path, force: bool) -> ExitCode {
    let path = dir.join("abi.toml");
    if path.exists() && !force {
        eprintln!("{} exists; pass --force to overwrite", path.display());
        return ExitCode::FAILURE;
    }
    let res = std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&path, abi_topology::DEFAULT_TOPOLOGY));
    match res {
        Ok(()) => {
            println!(
                "wrote {}\nnext: abi-node check {0} && abi-node run --config {0}",
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The topology plus the resolved identity of this process.
/// Where this node's certificate, key and the cluster CA are.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The gateway's HTTPS files.
#[derive(Debug, Clone)]
pub struct GatewayTlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub topology: Topology,
    /// Gateway keys file (flag over topology).
    pub keys_file: Option<PathBuf>,
    /// Gateway HTTPS (flags over topology).
    pub gateway_tls: Option<GatewayTlsPaths>,
    /// Gateway JWT verification (flags over topology), paths resolved.
    pub jwt: Option<abi_gateway::auth::jwt::JwtSettings>,
    /// TLS files for the cluster transport, if configured.
    pub tls: Option<TlsPaths>,
    pub me: NodeSpec,
    /// Directory that relative model paths in the file are resolved from.
    #[allow(dead_code)] // read by subsystems as they are wired in
    pub base: PathBuf,
}

/// Loads the topology named by `--config` (or the default) and applies flags.
pub fn resolve(args: &RunArgs) -> anyhow::Result<Resolved> {
    let loaded: Loaded = match &args.config {
        Some(p) => abi_topology::load_file(p).map_err(|d| anyhow::anyhow!("{d}"))?,
        None => abi_topology::load_default().map_err(|d| anyhow::anyhow!("{d}"))?,
    };
    let base = loaded
        .path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let t = loaded.topology;
    let mut me = if t.nodes.is_empty() {
        let mut n = t
            .node
            .clone()
            .unwrap_or_else(|| NodeSpec::with_id("node-a"));
        if let Some(id) = &args.node_id {
            n.id = id.clone();
        }
        n
    } else {
        let Some(id) = &args.node_id else {
            bail!(
                "this topology declares {} nodes ([[nodes]]): choose one with --node-id ({})",
                t.nodes.len(),
                t.nodes
                    .iter()
                    .map(|n| n.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        t.nodes
            .iter()
            .find(|n| &n.id == id)
            .cloned()
            .with_context(|| format!("--node-id {id:?} is not declared in the topology"))?
    };
    if let Some(a) = args.listen {
        me.listen = a;
    }
    if let Some(a) = args.http {
        me.http = a;
    }
    // Relative data dirs are relative to the working directory (like etcd's);
    // model paths in the file are relative to the file (see `base`).
    if let Some(d) = &args.data_dir {
        me.data_dir = d.clone();
    }
    abi_protocol::NodeId::new(me.id.clone())
        .with_context(|| format!("invalid node id {:?}", me.id))?;
    if let Some(d) = &args.models_dir {
        me.models_dir = d.clone();
    }
    let mut t = t;
    if !args.plugins_dir.is_empty() {
        t.plugins.dirs = args.plugins_dir.clone();
    } else {
        t.plugins.dirs = t.plugins.dirs.iter().map(|d| base.join(d)).collect();
    }
    if let Some(a) = args.advertise {
        me.advertise = Some(a);
    }
    if let Some(seeds) = &args.seeds {
        t.cluster.discovery.seeds = seeds.iter().filter(|s| !s.is_empty()).cloned().collect();
    }
    let tls = match (&args.tls_dir, &t.tls) {
        (Some(dir), _) => Some(TlsPaths {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
        }),
        (None, Some(tls)) => match (&tls.dir, &tls.ca, &tls.cert, &tls.key) {
            (_, Some(ca), Some(cert), Some(key)) => Some(TlsPaths {
                ca: base.join(ca),
                cert: base.join(cert),
                key: base.join(key),
            }),
            (Some(dir), ..) => Some(TlsPaths {
                ca: base.join(dir).join("ca.pem"),
                cert: base.join(dir).join("node.pem"),
                key: base.join(dir).join("node.key"),
            }),
            _ => bail!("[tls] needs `dir`, or all of `ca`, `cert` and `key`"),
        },
        (None, None) => None,
    };
    if let Some(e) = otlp_endpoint(args, |k| std::env::var(k).ok()) {
        t.telemetry.otlp_endpoint = Some(e);
    }
    if let Some(r) = args.sampling_ratio {
        if !(0.0..=1.0).contains(&r) {
            bail!("--sampling-ratio must be between 0.0 and 1.0, got {r}");
        }
        t.telemetry.sampling_ratio = r;
    }
    let keys_file = args
        .keys_file
        .clone()
        .or_else(|| t.gateway.keys_file.as_ref().map(|k| base.join(k)));
    let g = &t.gateway;
    let gateway_tls = match (
        &args.gateway_tls_cert,
        &args.gateway_tls_key,
        &g.tls_cert,
        &g.tls_key,
    ) {
        (Some(cert), Some(key), ..) => Some(GatewayTlsPaths {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None, Some(cert), Some(key)) => Some(GatewayTlsPaths {
            cert: base.join(cert),
            key: base.join(key),
        }),
        (None, None, None, None) => None,
        _ => bail!(
            "gateway TLS needs both a certificate and a key ([gateway] tls_cert and tls_key, or --gateway-tls-cert and --gateway-tls-key)"
        ),
    };
    let allow_plain = args.allow_insecure_http || g.allow_plain_http;
    if gateway_tls.is_none() && !abi_gateway::tls::plain_http_allowed(me.http, allow_plain) {
        bail!(
            "refusing to serve plain HTTP on {} (not loopback): configure TLS ([gateway] tls_cert/tls_key or --gateway-tls-cert/--gateway-tls-key), or opt in with [gateway] allow_plain_http = true / --allow-insecure-http (e.g. behind a TLS-terminating proxy)",
            me.http
        );
    }
    abi_gateway::cors::validate_origins(&g.cors_origins)?;
    let mut jwt = g.jwt.as_ref().map(|j| abi_gateway::auth::jwt::JwtSettings {
        hs256_secret_file: j.hs256_secret_file.as_ref().map(|p| base.join(p)),
        rs256_public_key_file: j.rs256_public_key_file.as_ref().map(|p| base.join(p)),
        leeway_secs: j.leeway_secs,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        role_claim: j.role_claim.clone(),
    });
    if args.jwt_hs256_secret_file.is_some() || args.jwt_rs256_public_key.is_some() {
        let j = jwt.get_or_insert_with(|| abi_gateway::auth::jwt::JwtSettings {
            leeway_secs: 30,
            role_claim: "role".into(),
            ..Default::default()
        });
        if let Some(p) = &args.jwt_hs256_secret_file {
            j.hs256_secret_file = Some(p.clone());
        }
        if let Some(p) = &args.jwt_rs256_public_key {
            j.rs256_public_key_file = Some(p.clone());
        }
    }
    Ok(Resolved {
        tls,
        keys_file,
        gateway_tls,
        jwt,
        topology: t,
        me,
        base,
    })
}

/// The traces endpoint from the flag or the standard OTel variables (all of
/// which override the file): the flag, then `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
/// (used as is), then `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL: `/v1/traces`
/// is appended). Empty values count as unset.
pub fn otlp_endpoint(args: &RunArgs, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    set(args.otlp_endpoint.clone())
        .or_else(|| set(env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")))
        .or_else(|| {
            set(env("OTEL_EXPORTER_OTLP_ENDPOINT"))
                .map(|base| format!("{}/v1/traces", base.trim_end_matches('/')))
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn run_args(argv: &[&str]) -> RunArgs {
        let mut full = vec!["abi-node", "run"];
        full.extend_from_slice(argv);
        match crate::cli::Cli::parse_from(full).command {
            crate::cli::Command::Run(a) => *a,
            _ => panic!("not a run command"),
        }
    }

    #[test]
    fn otlp_endpoint_precedence() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = run_args(&[]);
        assert_eq!(otlp_endpoint(&none, env(&[])), None);
        assert_eq!(
            otlp_endpoint(
                &none,
                env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])
            ),
            Some("http://c:4318/v1/traces".into())
        );
        assert_eq!(
            otlp_endpoint(
                &none,
                env(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x"),
                ])
            ),
            Some("http://t:1/x".into())
        );
        let flag = run_args(&["--otlp-endpoint", "http://f:2/v1/traces"]);
        assert_eq!(
            otlp_endpoint(
                &flag,
                env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/x")])
            ),
            Some("http://f:2/v1/traces".into())
        );
        assert_eq!(
            otlp_endpoint(&none, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")])),
            None
        );
    }
}
