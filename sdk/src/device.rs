//! Safe description of a device.

use crate::ffi;
use crate::op::OpKind;

/// What sort of hardware a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// A hardware GPU.
    Gpu,
    /// A software implementation of a GPU API (e.g. lavapipe).
    SoftwareGpu,
    /// A code this version does not know.
    Unknown(u32),
}

impl DeviceKind {
    /// The `ABI_DEVICE_*` code.
    pub fn code(self) -> u32 {
        match self {
            DeviceKind::Cpu => ffi::ABI_DEVICE_CPU,
            DeviceKind::Gpu => ffi::ABI_DEVICE_GPU,
            DeviceKind::SoftwareGpu => ffi::ABI_DEVICE_SOFTWARE_GPU,
            DeviceKind::Unknown(c) => c,
        }
    }
    /// Parses an `ABI_DEVICE_*` code.
    pub fn from_code(c: u32) -> Self {
        match c {
            ffi::ABI_DEVICE_CPU => DeviceKind::Cpu,
            ffi::ABI_DEVICE_GPU => DeviceKind::Gpu,
            ffi::ABI_DEVICE_SOFTWARE_GPU => DeviceKind::SoftwareGpu,
            other => DeviceKind::Unknown(other),
        }
    }
    /// Stable lowercase name (`cpu`, `gpu`, `software_gpu`, `unknown`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::SoftwareGpu => "software_gpu",
            DeviceKind::Unknown(_) => "unknown",
        }
    }
}

/// One device of a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Human-readable name (at most 127 bytes cross the ABI).
    pub name: String,
    /// Kind of hardware.
    pub kind: DeviceKind,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Free memory in bytes (best effort).
    pub memory_free: u64,
    /// Bit `1 << op code` per supported op.
    pub capabilities: u64,
}

impl DeviceInfo {
    /// True when the device runs `op`.
    pub fn supports(&self, op: OpKind) -> bool {
        self.capabilities & op.bit() != 0
    }

    /// Names of the supported ops.
    pub fn op_names(&self) -> Vec<&'static str> {
        OpKind::ALL
            .into_iter()
            .filter(|k| self.supports(*k))
            .map(OpKind::name)
            .collect()
    }
}
