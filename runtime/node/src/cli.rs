//! Command-line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// abi: a distributed actor runtime for AI workloads.
#[derive(Debug, Parser)]
#[command(name = "abi-node", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the embedded single-node default when no --config is given).
    Run(Box<RunArgs>),
    /// Validate a topology file and report every error with file:line:column.
    Check {
        /// The topology file.
        file: PathBuf,
    },
    /// Write a starter `abi.toml` into DIR (default: the current directory).
    Init {
        /// Target directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Overwrite an existing abi.toml.
        #[arg(long)]
        force: bool,
    },
    /// Cluster certificates: a CA, and node certificates signed by it.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Start a local cluster of separate processes (certificates, ports, logs
    /// under DIR) and stop them all on Ctrl-C.
    Demo {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Working directory (pid files, logs, data, certificates).
        #[arg(long, default_value = "./abi-demo")]
        dir: PathBuf,
    },
    /// Backend plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Manage gateway API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The cluster metadata Raft group of a running node (over its HTTP gateway).
    Cluster {
        #[command(flatten)]
        target: ClusterTarget,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Print the version.
    Version,
}

/// Which node's gateway a `cluster` command talks to.
#[derive(Debug, Args)]
pub struct ClusterTarget {
    /// Gateway base URL of any member.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "ABI_URL")]
    pub url: String,
    /// API key (admin for membership changes) when the gateway has auth on.
    #[arg(long, env = "ABI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Leader, term, commit index, voters and learners.
    Status,
    /// Add a node as a learner (it receives the log, does not vote); waits until it caught up.
    AddLearner {
        /// Node id.
        node: String,
        /// Its QUIC address (host:port).
        addr: String,
    },
    /// Promote learners to voters.
    Promote {
        /// Node ids.
        #[arg(required = true)]
        nodes: Vec<String>,
    },
    /// Remove a voter or learner from the group.
    Remove {
        /// Node id.
        node: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a plugin file and print its descriptor and devices.
    Inspect {
        /// The plugin (.so).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create a cluster CA in CA_DIR (ca.pem, ca.key).
    Init {
        /// Directory for the CA.
        ca_dir: PathBuf,
    },
    /// Issue a node certificate (SAN carries the node id) into OUT: ca.pem, node.pem, node.key.
    Issue {
        /// The CA directory.
        #[arg(long)]
        ca: PathBuf,
        /// Node id.
        #[arg(long)]
        node: String,
        /// Output directory (the --tls-dir layout).
        #[arg(long)]
        out: PathBuf,
        /// Extra subject alternative names (DNS names or IPs, repeatable), for
        /// using the certificate on the HTTPS gateway, e.g. `--san localhost --san 127.0.0.1`.
        #[arg(long)]
        san: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key with a role; prints it once (only its salted hash is stored).
    Create {
        /// `reader`, `writer` or `admin`.
        #[arg(long)]
        role: String,
        /// The keys file (created with mode 0600 if missing).
        #[arg(long)]
        keys_file: PathBuf,
    },
    /// Revoke a key by its id (the part after `abi_`); reload or SIGHUP applies it.
    Revoke {
        /// Key id.
        #[arg(long)]
        id: String,
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
    },
    /// List key ids, roles and states.
    List {
        /// The keys file.
        #[arg(long)]
        keys_file: PathBuf,
    },
}

/// Flags of `abi-node run`. Flags override the topology file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Topology file (default: the embedded single-node topology).
    #[arg(long, short = 'c', env = "ABI_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (selects the entry of a [[nodes]] file, or renames [node]).
    #[arg(long, env = "ABI_NODE_ID")]
    pub node_id: Option<String>,
    /// QUIC listen address.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// HTTP gateway address.
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Data directory (WALs, snapshots, Raft state).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Models directory (a folder per model id; default ./models).
    #[arg(long, env = "ABI_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// Plugin directory (repeatable; default: plugins/ beside the binary, then its own folder).
    #[arg(long)]
    pub plugins_dir: Vec<PathBuf>,
    /// Seed nodes' QUIC addresses (static discovery), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// TLS directory with ca.pem, node.pem, node.key (enables the cluster transport).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// QUIC address other nodes dial (when --listen is a wildcard).
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// API keys file: turns gateway authentication on (see `abi-node keys create`).
    #[arg(long)]
    pub keys_file: Option<PathBuf>,
    /// Gateway HTTPS certificate chain (PEM); with --gateway-tls-key the gateway serves only HTTPS.
    #[arg(long, requires = "gateway_tls_key")]
    pub gateway_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --gateway-tls-cert.
    #[arg(long, requires = "gateway_tls_cert")]
    pub gateway_tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback --http address (e.g. behind a TLS-terminating proxy).
    #[arg(long)]
    pub allow_insecure_http: bool,
    /// Accept HS256 JWTs signed with the secret in this file (at least 32 bytes).
    #[arg(long)]
    pub jwt_hs256_secret_file: Option<PathBuf>,
    /// Accept RS256 JWTs verified with this PEM public key.
    #[arg(long)]
    pub jwt_rs256_public_key: Option<PathBuf>,
    /// OTLP/HTTP traces URL, e.g. http://127.0.0.1:6006/v1/traces (overrides
    /// telemetry.otlp_endpoint; OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is taken as is,
    /// OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/traces appended, as the OTel spec says).
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces exported (overrides telemetry.sampling_ratio).
    #[arg(long)]
    pub sampling_ratio: Option<f64>,
    /// Log format (overrides telemetry.log_format).
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Seconds a graceful shutdown may take before the rest is killed.
    #[arg(long, default_value_t = 4)]
    pub shutdown_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}
