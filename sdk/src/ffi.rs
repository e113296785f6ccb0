//! The raw C ABI, field for field the same as `sdk/include/abi_plugin.h`.
//!
//! Only plain data and function pointers live here; everything that dereferences them is in
//! [`crate::boundary`].

use std::ffi::c_char;

/// The newest ABI version this crate speaks (and the one plugins built with it report).
pub const ABI_VERSION: u32 = 2;
/// The oldest ABI version a host built with this crate still loads.
pub const ABI_VERSION_MIN: u32 = 1;
/// Name of the symbol every plugin exports.
pub const ENTRY_SYMBOL: &str = "abi_plugin_entry";

/// Status code returned by every fallible entry (`ABI_OK` = 0).
pub type AbiStatus = i32;
/// Success.
pub const ABI_OK: AbiStatus = 0;
/// Bad sizes, null pointers, unknown op.
pub const ABI_ERR_INVALID_ARGUMENT: AbiStatus = 1;
/// Allocation failed.
pub const ABI_ERR_OUT_OF_MEMORY: AbiStatus = 2;
/// Op or device feature not provided.
pub const ABI_ERR_UNSUPPORTED: AbiStatus = 3;
/// Device or driver failure.
pub const ABI_ERR_DEVICE: AbiStatus = 4;
/// The plugin caught a panic.
pub const ABI_ERR_PANIC: AbiStatus = 5;
/// `init` was not called or failed.
pub const ABI_ERR_NOT_INITIALIZED: AbiStatus = 6;

/// Device kind: host CPU.
pub const ABI_DEVICE_CPU: u32 = 0;
/// Device kind: hardware GPU.
pub const ABI_DEVICE_GPU: u32 = 1;
/// Device kind: software rasteriser posing as a GPU (lavapipe).
pub const ABI_DEVICE_SOFTWARE_GPU: u32 = 2;

/// `c[n] = a[n] + b[n]`.
pub const ABI_OP_VECTOR_ADD: u32 = 0;
/// `c[m*n] = a[m*k] x b[k*n]`, row-major.
pub const ABI_OP_MATMUL: u32 = 1;
/// `y[1] = sum x[n]`.
pub const ABI_OP_REDUCE_SUM: u32 = 2;
/// `y[1] = sum a[i]*b[i]`.
pub const ABI_OP_DOT: u32 = 3;
/// Row-wise softmax of an `m x n` matrix.
pub const ABI_OP_SOFTMAX: u32 = 4;
/// Batched top-k by cosine/dot/l2 of `m` queries against `n` vectors of dimension `k`.
pub const ABI_OP_DISTANCE_TOPK: u32 = 5;
/// Number of ops defined by this ABI version.
pub const ABI_OP_COUNT: u32 = 6;

/// Cosine similarity (best = highest).
pub const ABI_METRIC_COSINE: u32 = 0;
/// Dot product (best = highest).
pub const ABI_METRIC_DOT: u32 = 1;
/// Squared euclidean distance (best = lowest).
pub const ABI_METRIC_L2: u32 = 2;

/// Length of [`AbiDeviceInfo::name`].
pub const DEVICE_NAME_LEN: usize = 128;

/// `abi_device_info`: one device as the plugin reports it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AbiDeviceInfo {
    /// Set by the host to the size it knows.
    pub struct_size: u32,
    /// `ABI_DEVICE_*`.
    pub kind: u32,
    /// NUL-terminated UTF-8.
    pub name: [c_char; DEVICE_NAME_LEN],
    /// Bytes.
    pub memory_total: u64,
    /// Bytes, best effort.
    pub memory_free: u64,
    /// Bit `1 << ABI_OP_*` per supported op.
    pub capabilities: u64,
}

impl AbiDeviceInfo {
    /// An all-zero record with `struct_size` set, ready to be filled by a plugin.
    pub fn empty() -> Self {
        Self {
            struct_size: size_of::<Self>() as u32,
            kind: 0,
            name: [0; DEVICE_NAME_LEN],
            memory_total: 0,
            memory_free: 0,
            capabilities: 0,
        }
    }
}

/// `abi_op`: one operation invocation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiOp {
    /// `size_of::<AbiOp>()`.
    pub struct_size: u32,
    /// `ABI_OP_*`.
    pub kind: u32,
    /// First dimension (rows / queries).
    pub m: u64,
    /// Inner dimension (matmul k / vector dim).
    pub k: u64,
    /// Length / columns / number of vectors.
    pub n: u64,
    /// Results per query for distance_topk.
    pub top_k: u32,
    /// `ABI_METRIC_*`.
    pub metric: u32,
}

/// Opaque plugin-owned context (`abi_context`).
#[repr(C)]
pub struct AbiContext {
    _private: [u8; 0],
}

/// Opaque plugin-owned buffer (`abi_buffer`).
#[repr(C)]
pub struct AbiBuffer {
    _private: [u8; 0],
}

/// `abi_backend`: the descriptor and function table. Fields are only ever appended.
#[repr(C)]
pub struct AbiBackend {
    /// Size of this struct as the plugin was compiled.
    pub struct_size: u32,
    /// ABI version the plugin was compiled against.
    pub abi_version: u32,
    /// Static NUL-terminated backend name.
    pub name: *const c_char,
    /// Static NUL-terminated plugin version.
    pub version: *const c_char,
    /// One-time initialisation.
    pub init: Option<unsafe extern "C" fn() -> AbiStatus>,
    /// Number of devices.
    pub device_count: Option<unsafe extern "C" fn() -> u32>,
    /// Describe device `index`.
    pub device_info: Option<unsafe extern "C" fn(u32, *mut AbiDeviceInfo) -> AbiStatus>,
    /// Create a context on a device.
    pub context_create: Option<unsafe extern "C" fn(u32, *mut *mut AbiContext) -> AbiStatus>,
    /// Destroy a context (after its buffers).
    pub context_destroy: Option<unsafe extern "C" fn(*mut AbiContext)>,
    /// Allocate a device buffer of `bytes`.
    pub buffer_alloc:
        Option<unsafe extern "C" fn(*mut AbiContext, u64, *mut *mut AbiBuffer) -> AbiStatus>,
    /// Free a buffer.
    pub buffer_free: Option<unsafe extern "C" fn(*mut AbiContext, *mut AbiBuffer)>,
    /// Copy host bytes into a buffer at an offset.
    pub buffer_upload: Option<
        unsafe extern "C" fn(*mut AbiContext, *mut AbiBuffer, u64, *const u8, u64) -> AbiStatus,
    >,
    /// Copy buffer bytes at an offset out to the host.
    pub buffer_download: Option<
        unsafe extern "C" fn(*mut AbiContext, *const AbiBuffer, u64, *mut u8, u64) -> AbiStatus,
    >,
    /// Run an op.
    pub run_op: Option<
        unsafe extern "C" fn(
            *mut AbiContext,
            *const AbiOp,
            *const *mut AbiBuffer,
            u32,
            *const *mut AbiBuffer,
            u32,
        ) -> AbiStatus,
    >,
    /// Copy this thread's last error; returns its full length.
    pub last_error: Option<unsafe extern "C" fn(*mut c_char, usize) -> usize>,
    // ---- version 2 ----
    /// Run a tiny real computation on the context's device.
    pub health_check: Option<unsafe extern "C" fn(*mut AbiContext) -> AbiStatus>,
}

/// Size of a version-1 table (everything before `health_check`).
pub const ABI_BACKEND_V1_SIZE: usize = std::mem::offset_of!(AbiBackend, health_check);

/// Signature of the entry symbol.
pub type AbiPluginEntry = unsafe extern "C" fn() -> *const AbiBackend;
