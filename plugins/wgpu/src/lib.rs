//! The `wgpu` backend plugin: every op as a WGSL compute shader on each Vulkan adapter wgpu
//! finds (including Mesa's lavapipe software rasteriser, which is what CI runs on).
//!
//! Environment: `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` (substring filter) as read by wgpu.

mod gpu;
mod shaders;

use abi_sdk::{Backend, BackendError, DeviceInfo, DeviceKind, Op, OpKind};

pub use gpu::{GpuBuffer, GpuContext};

/// The wgpu backend: the instance and the adapters it exposes as devices.
pub struct WgpuBackend {
    _instance: wgpu::Instance,
    adapters: Vec<(wgpu::Adapter, DeviceInfo)>,
}

impl std::fmt::Debug for WgpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuBackend")
            .field(
                "devices",
                &self.adapters.iter().map(|a| &a.1.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn host_memory(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with(key))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

fn describe(adapter: &wgpu::Adapter) -> DeviceInfo {
    let info = adapter.get_info();
    let limits = adapter.limits();
    let kind = match info.device_type {
        wgpu::DeviceType::Cpu => DeviceKind::SoftwareGpu,
        _ => DeviceKind::Gpu,
    };
    // wgpu exposes no memory query: a software adapter uses host memory; for hardware the
    // largest allocatable buffer is the best figure available.
    let (total, free) = if kind == DeviceKind::SoftwareGpu {
        (host_memory("MemTotal:"), host_memory("MemAvailable:"))
    } else {
        (limits.max_buffer_size, limits.max_buffer_size)
    };
    DeviceInfo {
        name: format!("{} ({:?}, {})", info.name, info.backend, info.driver),
        kind,
        memory_total: total,
        memory_free: free,
        capabilities: OpKind::all_bits(),
    }
}

impl Backend for WgpuBackend {
    type Context = GpuContext;
    type Buffer = GpuBuffer;

    fn init() -> Result<Self, BackendError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let wanted = std::env::var("WGPU_ADAPTER_NAME")
            .ok()
            .map(|s| s.to_lowercase());
        let adapters: Vec<(wgpu::Adapter, DeviceInfo)> =
            pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
                .into_iter()
                .filter(|a| {
                    let info = a.get_info();
                    // Compute only: skip the GL backend (no storage buffers on many drivers).
                    info.backend != wgpu::Backend::Gl
                        && wanted
                            .as_deref()
                            .is_none_or(|w| info.name.to_lowercase().contains(w))
                })
                .map(|a| {
                    let d = describe(&a);
                    (a, d)
                })
                .collect();
        Ok(WgpuBackend {
            _instance: instance,
            adapters,
        })
    }

    fn devices(&self) -> Vec<DeviceInfo> {
        self.adapters.iter().map(|(_, d)| d.clone()).collect()
    }

    fn create_context(&self, device: u32) -> Result<GpuContext, BackendError> {
        let (adapter, info) = self
            .adapters
            .get(device as usize)
            .ok_or_else(|| BackendError::invalid(format!("no wgpu device {device}")))?;
        GpuContext::new(adapter, &info.name)
    }

    fn alloc(&self, ctx: &mut GpuContext, bytes: u64) -> Result<GpuBuffer, BackendError> {
        ctx.alloc(bytes)
    }

    fn upload(
        &self,
        ctx: &mut GpuContext,
        buf: &mut GpuBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), BackendError> {
        ctx.upload(buf, offset, data)
    }

    fn download(
        &self,
        ctx: &mut GpuContext,
        buf: &GpuBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        ctx.download(buf, offset, out)
    }

    fn run(
        &self,
        ctx: &mut GpuContext,
        op: &Op,
        inputs: &[&GpuBuffer],
        outputs: &mut [&mut GpuBuffer],
    ) -> Result<(), BackendError> {
        ctx.run(op, inputs, outputs)
    }
}

abi_sdk::export_backend!(
    WgpuBackend,
    name = "wgpu",
    version = env!("CARGO_PKG_VERSION")
);
