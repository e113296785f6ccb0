//! The topology as typed values. Field docs double as the configuration
//! reference (README "Configuration").

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A whole topology file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Cluster identity and discovery.
    #[serde(default)]
    pub cluster: Cluster,
    /// This node (single-node files, or the defaults when started from flags).
    pub node: Option<NodeSpec>,
    /// Every node of a statically declared cluster; pick one with `--node-id`.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// Mutual TLS between nodes.
    pub tls: Option<Tls>,
    /// Backend plugins.
    #[serde(default)]
    pub plugins: Plugins,
    /// Defaults for supervisors.
    #[serde(default)]
    pub supervision: Supervision,
    /// The HTTP gateway.
    #[serde(default)]
    pub gateway: Gateway,
    /// Inference pools.
    #[serde(default)]
    pub inference: Vec<InferencePool>,
    /// Vector collections.
    #[serde(default, rename = "collection")]
    pub collections: Vec<Collection>,
    /// The GPU device manager.
    #[serde(default)]
    pub gpu: Gpu,
    /// The Raft group.
    pub raft: Option<Raft>,
    /// Telemetry.
    #[serde(default)]
    pub telemetry: Telemetry,
    /// Failure detection.
    #[serde(default)]
    pub membership: MembershipTiming,
}

/// `[membership]`: heartbeat failure detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipTiming {
    /// Interval between heartbeats to each peer.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Silence after which a peer is suspect.
    #[serde(default = "default_suspect_ms")]
    pub suspect_ms: u64,
    /// Silence after which a peer is dead.
    #[serde(default = "default_dead_ms")]
    pub dead_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    500
}
fn default_suspect_ms() -> u64 {
    1500
}
fn default_dead_ms() -> u64 {
    4000
}

impl Default for MembershipTiming {
    fn default() -> Self {
        Self {
            heartbeat_ms: default_heartbeat_ms(),
            suspect_ms: default_suspect_ms(),
            dead_ms: default_dead_ms(),
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name; nodes of different clusters refuse each other.
    #[serde(default = "default_cluster_name")]
    pub name: String,
    /// How nodes find each other.
    #[serde(default)]
    pub discovery: Discovery,
}

fn default_cluster_name() -> String {
    "abi".into()
}

impl Default for Cluster {
    fn default() -> Self {
        Self {
            name: default_cluster_name(),
            discovery: Discovery::default(),
        }
    }
}

/// `cluster.discovery = { kind = "static" | "etcd" | "consul", ... }`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// Backend.
    #[serde(default)]
    pub kind: DiscoveryKind,
    /// Static: QUIC addresses of seed nodes.
    #[serde(default)]
    pub seeds: Vec<String>,
    /// etcd: client endpoints (`host:port`).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Consul: agent address (`http://host:8500`).
    pub address: Option<String>,
    /// Consul: ACL token.
    pub token: Option<String>,
    /// Key prefix (etcd) or service name (Consul).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Registration time-to-live in seconds.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
}

fn default_prefix() -> String {
    "abi".into()
}
fn default_ttl() -> u64 {
    10
}

impl Default for Discovery {
    fn default() -> Self {
        Self {
            kind: DiscoveryKind::Static,
            seeds: Vec::new(),
            endpoints: Vec::new(),
            address: None,
            token: None,
            prefix: default_prefix(),
            ttl_secs: default_ttl(),
        }
    }
}

/// Discovery backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryKind {
    /// Seed addresses in the topology.
    #[default]
    Static,
    /// etcd leases and watches.
    Etcd,
    /// Consul service registration.
    Consul,
}

/// `[node]` or one `[[nodes]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node id (letters, digits, `.`, `_`, `-`).
    pub id: String,
    /// QUIC address for other nodes.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// HTTP gateway address.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// QUIC address other nodes dial, when `listen` is a wildcard (0.0.0.0).
    pub advertise: Option<SocketAddr>,
    /// Where WALs, snapshots and Raft state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where models are found (a folder per model id).
    #[serde(default = "default_models_dir")]
    pub models_dir: PathBuf,
    /// Free-form labels used by placement.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7700))
}
fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./abi-data")
}
fn default_models_dir() -> PathBuf {
    PathBuf::from("./models")
}

impl NodeSpec {
    /// A node with default addresses and directories.
    pub fn with_id(id: &str) -> Self {
        Self {
            id: id.to_string(),
            listen: default_listen(),
            http: default_http(),
            advertise: None,
            data_dir: default_data_dir(),
            models_dir: default_models_dir(),
            labels: BTreeMap::new(),
        }
    }
}

/// `[tls]`: either `dir` (holding ca.pem, node.pem, node.key) or the three files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Directory with `ca.pem`, `node.pem`, `node.key`.
    pub dir: Option<PathBuf>,
    /// Cluster CA certificate.
    pub ca: Option<PathBuf>,
    /// This node's certificate.
    pub cert: Option<PathBuf>,
    /// This node's private key.
    pub key: Option<PathBuf>,
}

/// `[plugins]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plugins {
    /// Directories scanned for backend plugins (default: beside the binary).
    #[serde(default)]
    pub dirs: Vec<PathBuf>,
    /// Plugins that must load, else start-up fails (e.g. `["cpu"]`).
    #[serde(default)]
    pub require: Vec<String>,
    /// File name -> `sha256:<hex>` pins.
    #[serde(default)]
    pub pins: BTreeMap<String, String>,
}

/// `[supervision]`: defaults for the node's root supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Supervision {
    /// `one_for_one`, `one_for_all` or `rest_for_one`.
    #[serde(default)]
    pub strategy: StrategyName,
    /// Restarts allowed within `within_secs` before the supervisor escalates.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    /// The restart-intensity window.
    #[serde(default = "default_within")]
    pub within_secs: u64,
    /// Second quick restart waits this long, doubling after (0 = no backoff).
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Backoff cap.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// Relative jitter, 0.0..=1.0.
    #[serde(default = "default_jitter")]
    pub backoff_jitter: f64,
    /// A child up this long starts a fresh backoff streak.
    #[serde(default = "default_reset_after")]
    pub reset_after_secs: u64,
    /// Default graceful-stop time per child.
    #[serde(default = "default_shutdown_ms")]
    pub shutdown_timeout_ms: u64,
}

fn default_max_restarts() -> u32 {
    5
}
fn default_within() -> u64 {
    10
}
fn default_backoff_initial() -> u64 {
    50
}
fn default_backoff_max() -> u64 {
    10_000
}
fn default_jitter() -> f64 {
    0.2
}
fn default_reset_after() -> u64 {
    30
}
fn default_shutdown_ms() -> u64 {
    5_000
}

impl Default for Supervision {
    fn default() -> Self {
        Self {
            strategy: StrategyName::OneForOne,
            max_restarts: default_max_restarts(),
            within_secs: default_within(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            backoff_jitter: default_jitter(),
            reset_after_secs: default_reset_after(),
            shutdown_timeout_ms: default_shutdown_ms(),
        }
    }
}

/// Supervision strategy names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    /// Restart only the failed child.
    #[default]
    OneForOne,
    /// Restart all children.
    OneForAll,
    /// Restart the failed child and those after it.
    RestForOne,
}

/// Where a subsystem runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// On every node.
    #[serde(default)]
    pub all: bool,
    /// On these node ids.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// On nodes whose labels include all of these.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Placement {
    /// True when nothing restricts placement (treated as "all nodes").
    pub fn is_unrestricted(&self) -> bool {
        self.nodes.is_empty() && self.labels.is_empty()
    }

    /// Does this placement put the subsystem on `node`?
    pub fn matches(&self, node: &NodeSpec) -> bool {
        if self.all || self.is_unrestricted() {
            return true;
        }
        if self.nodes.iter().any(|n| n == &node.id) {
            return true;
        }
        !self.labels.is_empty()
            && self
                .labels
                .iter()
                .all(|(k, v)| node.labels.get(k).is_some_and(|nv| nv == v))
    }
}

/// `[gateway]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Nodes that serve HTTP (default: all).
    #[serde(default)]
    pub placement: Placement,
    /// actix-web worker threads (default: 2).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Default deadline for a request forwarded to an actor.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Largest accepted request body.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// API keys file; when set, every route but `/health` and `/ready` needs a key.
    pub keys_file: Option<PathBuf>,
    /// Serve `/metrics` without credentials even when keys are on.
    #[serde(default = "yes")]
    pub open_metrics: bool,
    /// Requests per second per key (0 = unlimited).
    #[serde(default)]
    pub rate_limit_per_sec: f64,
    /// Burst size of the per-key rate limit.
    #[serde(default = "default_burst")]
    pub rate_limit_burst: f64,
    /// Requests in flight at once before the gateway answers 503 (0 = unlimited).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// PEM certificate chain: with `tls_key`, the gateway serves HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (loopback is always allowed).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Origins allowed by CORS (`"*"` for any); empty = CORS off.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// JWT bearer tokens, next to API keys.
    pub jwt: Option<GatewayJwt>,
}

/// `[gateway.jwt]`: which signed tokens the gateway accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayJwt {
    /// File holding the HS256 shared secret (at least 32 bytes).
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM file with the RS256 public key.
    pub rs256_public_key_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_jwt_leeway")]
    pub leeway_secs: u64,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Claim carrying the role (`reader`, `writer`, `admin`).
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
}

fn default_jwt_leeway() -> u64 {
    30
}
fn default_role_claim() -> String {
    "role".into()
}

fn default_burst() -> f64 {
    20.0
}
fn default_max_concurrency() -> usize {
    4096
}

fn default_workers() -> usize {
    2
}
fn default_request_timeout() -> u64 {
    30_000
}
fn default_max_body() -> usize {
    32 * 1024 * 1024
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            placement: Placement::default(),
            workers: default_workers(),
            request_timeout_ms: default_request_timeout(),
            max_body_bytes: default_max_body(),
            keys_file: None,
            open_metrics: true,
            rate_limit_per_sec: 0.0,
            rate_limit_burst: default_burst(),
            max_concurrency: default_max_concurrency(),
            tls_cert: None,
            tls_key: None,
            allow_plain_http: false,
            cors_origins: Vec::new(),
            jwt: None,
        }
    }
}

/// `[[inference]]`: one model pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferencePool {
    /// Model id in the API.
    pub name: String,
    /// `embedding` or `chat`.
    pub kind: InferenceKind,
    /// Model folder (or .gguf file), relative to the file's directory.
    pub model: PathBuf,
    /// Worker actors.
    #[serde(default = "one")]
    pub replicas: usize,
    /// Largest dynamic batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Longest wait to fill a batch.
    #[serde(default = "default_max_wait")]
    pub max_wait_ms: u64,
    /// Queued requests beyond which the pool answers 429.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Where the pool runs.
    #[serde(default)]
    pub placement: Placement,
}

fn one() -> usize {
    1
}
fn default_max_batch() -> usize {
    32
}
fn default_max_wait() -> u64 {
    5
}
fn default_queue() -> usize {
    1024
}
fn default_device() -> String {
    "cpu".into()
}

/// Inference pool kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceKind {
    /// Sentence embeddings.
    Embedding,
    /// Chat completion.
    Chat,
}

/// `[[collection]]`: a vector collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    /// Collection name.
    pub name: String,
    /// Vector dimension.
    pub dim: usize,
    /// `cosine`, `dot` or `euclid`.
    #[serde(default)]
    pub distance: DistanceName,
    /// Shard count.
    #[serde(default = "one")]
    pub shards: usize,
    /// Replicas per shard.
    #[serde(default = "one")]
    pub replication: usize,
    /// HNSW links per node.
    #[serde(default = "default_m")]
    pub m: usize,
    /// HNSW build beam width.
    #[serde(default = "default_ef_construct")]
    pub ef_construct: usize,
    /// Default search beam width.
    #[serde(default = "default_ef")]
    pub ef: usize,
    /// Embedding pool used for text points and queries.
    pub embed_with: Option<String>,
    /// WAL fsync policy: `always`, `group` or `none`.
    #[serde(default)]
    pub fsync: FsyncName,
    /// Group-commit window for `fsync = "group"`.
    #[serde(default = "default_group_commit")]
    pub group_commit_ms: u64,
    /// Where shards run.
    #[serde(default)]
    pub placement: Placement,
}

fn default_m() -> usize {
    16
}
fn default_ef_construct() -> usize {
    200
}
fn default_ef() -> usize {
    64
}
fn default_group_commit() -> u64 {
    5
}

/// Distance names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistanceName {
    /// 1 - cosine similarity.
    #[default]
    Cosine,
    /// Negative dot product.
    Dot,
    /// Euclidean (L2).
    Euclid,
}

/// WAL fsync policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncName {
    /// Every write is fsynced before it is acknowledged.
    #[default]
    Always,
    /// Writes within a short window share one fsync.
    Group,
    /// Never fsync (benchmarks only).
    None,
}

/// `[gpu]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpu {
    /// Where the device manager runs (default: all nodes).
    #[serde(default)]
    pub placement: Placement,
    /// Seconds between device health checks.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: u64,
}

fn default_health_interval() -> u64 {
    10
}

impl Default for Gpu {
    fn default() -> Self {
        Self {
            placement: Placement::default(),
            health_interval_secs: default_health_interval(),
        }
    }
}

/// `[raft]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raft {
    /// Initial voters (node ids).
    pub voters: Vec<String>,
    /// Election timeout lower bound.
    #[serde(default = "default_election")]
    pub election_timeout_ms: u64,
    /// Leader heartbeat interval.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: u64,
    /// Log entries between snapshots.
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// How long a node stays dead before the replicas it held are placed on other nodes.
    #[serde(default = "default_replace_dead_after")]
    pub replace_dead_after_ms: u64,
}

fn default_replace_dead_after() -> u64 {
    30_000
}

fn default_election() -> u64 {
    300
}
fn default_heartbeat() -> u64 {
    100
}
fn default_snapshot_every() -> u64 {
    5_000
}

/// `[telemetry]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// OTLP collector endpoint; none disables span export.
    pub otlp_endpoint: Option<String>,
    /// Serve `/metrics`.
    #[serde(default = "yes")]
    pub prometheus: bool,
    /// Fraction of traces sampled.
    #[serde(default = "default_sampling")]
    pub sampling_ratio: f64,
    /// `text` or `json` log lines.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Finished spans waiting for export at most, per thread that records
    /// spans; more are dropped and counted.
    #[serde(default = "default_queue_size")]
    pub queue_size: usize,
    /// Spans per export request at most (OpenTelemetry's
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    #[serde(default = "default_max_export_batch_size")]
    pub max_export_batch_size: usize,
    /// `service.name` of exported spans (default `abi-node`).
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn default_queue_size() -> usize {
    2048
}
/// Four times OpenTelemetry's 512: each export request costs the node and the
/// receiver a fixed amount (HTTP, system calls, wake-ups) whatever it carries, and
/// at 2,048 spans the receiver's CPU per span halved in `scripts/bench-telemetry.sh`.
fn default_max_export_batch_size() -> usize {
    2048
}
fn default_service_name() -> String {
    "abi-node".into()
}

fn yes() -> bool {
    true
}
fn default_sampling() -> f64 {
    1.0
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            prometheus: true,
            sampling_ratio: default_sampling(),
            log_format: LogFormat::Text,
            queue_size: default_queue_size(),
            max_export_batch_size: default_max_export_batch_size(),
            service_name: default_service_name(),
        }
    }
}

/// Log line formats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Topology {
    /// All declared nodes (`[node]` and `[[nodes]]`).
    pub fn declared_nodes(&self) -> Vec<&NodeSpec> {
        self.node.iter().chain(self.nodes.iter()).collect()
    }
}
