//! Where a pool's workers run their model: the CPU, or a CUDA device when the crate is built
//! with the `cuda` feature (candle's CUDA backend).

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{EngineError, Result};

/// A device named in the topology: `cpu` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// The host CPU (candle's CPU backend plus this crate's SIMD kernels).
    #[default]
    Cpu,
    /// CUDA device `N` (candle's CUDA backend, cuBLAS and its quantized kernels).
    Cuda(u32),
}

impl DeviceSpec {
    /// True when this build can run on the device (CUDA needs the `cuda` feature).
    pub fn available_in_build(self) -> bool {
        match self {
            DeviceSpec::Cpu => true,
            DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
        }
    }

    /// Checks the build supports the device; the message says how to get one that does.
    pub fn check_build(self) -> std::result::Result<(), String> {
        if self.available_in_build() {
            Ok(())
        } else {
            Err(format!(
                "device \"{self}\" is not available: this build runs inference on the CPU only \
                 (build abi-node with `--features cuda` for CUDA devices)"
            ))
        }
    }

    /// Opens the candle device (creates the CUDA context and streams for `cuda:N`).
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(n) => Device::new_cuda(n as usize).map_err(|e| EngineError::Device {
                device: self.to_string(),
                reason: e.to_string(),
            }),
            #[cfg(not(feature = "cuda"))]
            DeviceSpec::Cuda(_) => Err(EngineError::Device {
                device: self.to_string(),
                reason: "this build has no CUDA backend (build with `--features cuda`)".into(),
            }),
        }
    }

    /// The GPU manager backend that leases this device's memory (`None` for the CPU).
    pub fn backend(self) -> Option<(&'static str, u32)> {
        match self {
            DeviceSpec::Cpu => None,
            DeviceSpec::Cuda(n) => Some(("cuda", n)),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "cpu" {
            return Ok(DeviceSpec::Cpu);
        }
        if let Some(n) = s.strip_prefix("cuda:") {
            return n.parse::<u32>().map(DeviceSpec::Cuda).map_err(|_| {
                format!("device {s:?}: the CUDA device index must be a number, e.g. \"cuda:0\"")
            });
        }
        if s == "cuda" {
            return Ok(DeviceSpec::Cuda(0));
        }
        Err(format!(
            "unknown device {s:?} (expected \"cpu\" or \"cuda:N\")"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda:1".parse(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::Cuda(3).to_string(), "cuda:3");
        assert!(matches!("cuda:x".parse::<DeviceSpec>(), Err(e) if e.contains("number")));
        assert!(matches!("tpu:0".parse::<DeviceSpec>(), Err(e) if e.contains("unknown device")));
    }

    #[test]
    fn cuda_needs_the_feature() {
        assert_eq!(
            DeviceSpec::Cuda(0).available_in_build(),
            cfg!(feature = "cuda")
        );
        assert!(DeviceSpec::Cpu.check_build().is_ok());
    }
}
