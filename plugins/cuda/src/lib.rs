//! The `cuda` backend plugin: cudarc with dynamic loading, so it builds where no CUDA toolkit
//! exists and reports zero devices (never an error, never a panic) where no driver is present.
//! Matmul runs on cuBLAS sgemm; the other ops are CUDA C kernels compiled with NVRTC.

mod device;
mod kernels;

use abi_sdk::{Backend, BackendError, DeviceInfo, Op};

pub use device::{CudaBuf, CudaCtx, Libs};

/// The CUDA backend: which libraries exist and the devices found at init.
#[derive(Debug)]
pub struct CudaBackend {
    libs: Libs,
    devices: Vec<(usize, DeviceInfo)>,
}

impl CudaBackend {
    /// Which CUDA libraries were found.
    pub fn libs(&self) -> Libs {
        self.libs
    }
}

impl Backend for CudaBackend {
    type Context = CudaCtx;
    type Buffer = CudaBuf;

    fn init() -> Result<Self, BackendError> {
        let libs = device::probe();
        let devices = device::enumerate(libs);
        Ok(CudaBackend { libs, devices })
    }

    fn devices(&self) -> Vec<DeviceInfo> {
        self.devices.iter().map(|(_, d)| d.clone()).collect()
    }

    fn create_context(&self, device: u32) -> Result<CudaCtx, BackendError> {
        let (ordinal, _) = self
            .devices
            .get(device as usize)
            .ok_or_else(|| BackendError::invalid(format!("no cuda device {device}")))?;
        CudaCtx::new(*ordinal, self.libs)
    }

    fn alloc(&self, ctx: &mut CudaCtx, bytes: u64) -> Result<CudaBuf, BackendError> {
        ctx.alloc(bytes)
    }

    fn upload(
        &self,
        ctx: &mut CudaCtx,
        b: &mut CudaBuf,
        off: u64,
        d: &[u8],
    ) -> Result<(), BackendError> {
        ctx.upload(b, off, d)
    }

    fn download(
        &self,
        ctx: &mut CudaCtx,
        b: &CudaBuf,
        off: u64,
        o: &mut [u8],
    ) -> Result<(), BackendError> {
        ctx.download(b, off, o)
    }

    fn run(
        &self,
        ctx: &mut CudaCtx,
        op: &Op,
        inputs: &[&CudaBuf],
        outputs: &mut [&mut CudaBuf],
    ) -> Result<(), BackendError> {
        ctx.run(op, inputs, outputs)
    }
}

abi_sdk::export_backend!(
    CudaBackend,
    name = "cuda",
    version = env!("CARGO_PKG_VERSION")
);
