//! GPU device manager: the messages understood by the `gpu` actor.
//!
//! The manager owns every loaded backend plugin and its devices. Callers list devices, run
//! compute ops (with fallback to the `cpu` backend when the requested one is absent), and
//! lease devices with memory accounting; a lease is released by its holder or, when the holder
//! actor is gone, by the manager's periodic sweep.

use serde::{Deserialize, Serialize};

use crate::{ActorPath, Request};

/// Path (under the node) of the device manager.
pub const MANAGER_PATH: &str = crate::paths::GPU;

/// One device of one backend, as `GET /v1/devices` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Backend (plugin) name, e.g. `cpu`, `wgpu`, `cuda`.
    pub backend: String,
    /// Stable id `backend:index`, e.g. `wgpu:0`.
    pub id: String,
    /// Device index within its backend.
    pub index: u32,
    /// Human-readable name.
    pub name: String,
    /// `cpu`, `gpu`, `software_gpu` or `unknown`.
    pub kind: String,
    /// Total memory in bytes (as the plugin reports it).
    pub memory_total: u64,
    /// Free memory in bytes (plugin's figure at the last health check).
    pub memory_free: u64,
    /// Bytes currently leased out through the manager.
    pub memory_leased: u64,
    /// Op names the device runs.
    pub ops: Vec<String>,
    /// Result of the last health check.
    pub healthy: bool,
    /// Why the last health check failed, if it did.
    pub last_error: Option<String>,
    /// Plugin version and ABI version, e.g. `0.1.0 (abi 2)`.
    pub plugin: String,
}

/// Lists every device of every loaded backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListDevices;

impl Request for ListDevices {
    type Reply = Vec<DeviceEntry>;
    const TYPE: &'static str = "gpu.list_devices";
}

/// An op with its operands (row-major f32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ComputeOp {
    /// `a + b`.
    VectorAdd {
        /// Left operand.
        a: Vec<f32>,
        /// Right operand (same length).
        b: Vec<f32>,
    },
    /// `a[m x k] x b[k x n]`.
    Matmul {
        /// Rows of a.
        m: u32,
        /// Columns of a = rows of b.
        k: u32,
        /// Columns of b.
        n: u32,
        /// Left matrix, m*k values.
        a: Vec<f32>,
        /// Right matrix, k*n values.
        b: Vec<f32>,
    },
    /// Sum of `x`.
    ReduceSum {
        /// Values.
        x: Vec<f32>,
    },
    /// `sum a[i] * b[i]`.
    Dot {
        /// Left operand.
        a: Vec<f32>,
        /// Right operand (same length).
        b: Vec<f32>,
    },
    /// Row-wise softmax of a `rows x cols` matrix.
    Softmax {
        /// Rows.
        rows: u32,
        /// Columns.
        cols: u32,
        /// rows*cols values.
        x: Vec<f32>,
    },
    /// The `k` best of `vectors` for each query under `metric`.
    DistanceTopk {
        /// Vector dimension.
        dim: u32,
        /// Results per query.
        k: u32,
        /// `cosine`, `dot` or `l2`.
        metric: String,
        /// queries*dim values.
        queries: Vec<f32>,
        /// n*dim values.
        vectors: Vec<f32>,
    },
}

impl ComputeOp {
    /// Snake-case op name (`vector_add`, `matmul`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            ComputeOp::VectorAdd { .. } => "vector_add",
            ComputeOp::Matmul { .. } => "matmul",
            ComputeOp::ReduceSum { .. } => "reduce_sum",
            ComputeOp::Dot { .. } => "dot",
            ComputeOp::Softmax { .. } => "softmax",
            ComputeOp::DistanceTopk { .. } => "distance_topk",
        }
    }
}

/// Runs one op on a backend's device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compute {
    /// Preferred backend; `None` = `cpu`. If it is not loaded (or has no device that runs the
    /// op), the manager falls back to `cpu` and says so in the result.
    pub backend: Option<String>,
    /// Device index within the backend (default 0).
    pub device: Option<u32>,
    /// The op and its operands.
    pub op: ComputeOp,
}

/// What a [`Compute`] produced and where it ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeResult {
    /// Backend that ran the op.
    pub backend: String,
    /// Device name.
    pub device: String,
    /// Device id `backend:index`.
    pub device_id: String,
    /// True when the requested backend was absent and `cpu` ran it instead.
    pub fallback: bool,
    /// First output (c, y, scores), row-major.
    pub values: Vec<f32>,
    /// distance_topk indices (else empty).
    pub indices: Vec<u32>,
    /// Wall time inside the plugin (upload + run + download), microseconds.
    pub elapsed_us: u64,
}

/// Why a GPU request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuError {
    /// Bad operands (shapes, lengths, unknown metric).
    InvalidInput(String),
    /// Neither the requested backend nor the `cpu` fallback is available.
    NoDevice(String),
    /// The backend reported an error.
    Backend {
        /// Backend name.
        backend: String,
        /// Its message.
        message: String,
    },
    /// A lease asked for more memory than is free on every candidate device.
    InsufficientMemory {
        /// Bytes asked.
        requested: u64,
        /// Most bytes available on one device.
        available: u64,
    },
    /// No lease with this id.
    UnknownLease(u64),
}

impl std::fmt::Display for GpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GpuError::InvalidInput(m) => write!(f, "invalid input: {m}"),
            GpuError::NoDevice(m) => write!(f, "no device: {m}"),
            GpuError::Backend { backend, message } => write!(f, "backend {backend}: {message}"),
            GpuError::InsufficientMemory {
                requested,
                available,
            } => write!(
                f,
                "insufficient device memory: requested {requested} bytes, at most {available} free"
            ),
            GpuError::UnknownLease(id) => write!(f, "unknown lease {id}"),
        }
    }
}

impl std::error::Error for GpuError {}

impl Request for Compute {
    type Reply = Result<ComputeResult, GpuError>;
    const TYPE: &'static str = "gpu.compute";
}

/// Reserves device memory for an actor (inference worker, shard) until released or until the
/// holder is gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The actor that holds the lease; when it is no longer registered the lease is released.
    pub holder: ActorPath,
    /// Backend wanted (`None` = any, preferring hardware GPUs).
    pub backend: Option<String>,
    /// Device index within the backend (`None` = the one with the most free memory).
    pub device: Option<u32>,
    /// Bytes to reserve.
    pub memory: u64,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// Id to release it with.
    pub lease_id: u64,
    /// Backend of the leased device.
    pub backend: String,
    /// Device id `backend:index`.
    pub device_id: String,
    /// Device name.
    pub device: String,
}

impl Request for Lease {
    type Reply = Result<LeaseGrant, GpuError>;
    const TYPE: &'static str = "gpu.lease";
}

/// Returns a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// From [`LeaseGrant::lease_id`].
    pub lease_id: u64,
}

impl Request for Release {
    type Reply = Result<(), GpuError>;
    const TYPE: &'static str = "gpu.release";
}

/// One outstanding lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Lease id.
    pub lease_id: u64,
    /// Holder actor.
    pub holder: ActorPath,
    /// Device id `backend:index`.
    pub device_id: String,
    /// Bytes reserved.
    pub memory: u64,
}

/// Lists outstanding leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListLeases;

impl Request for ListLeases {
    type Reply = Vec<LeaseInfo>;
    const TYPE: &'static str = "gpu.list_leases";
}
