//! The `cpu` backend plugin: one device (the host CPU), SIMD kernels chosen at run time, gemm
//! matmul, rayon threads. Built as a cdylib for the loader and as an rlib for in-process tests.

pub mod kernels;

use abi_sdk::{Backend, BackendError, DeviceInfo, DeviceKind, Op, OpKind};

/// The CPU backend (stateless: all state lives in buffers).
#[derive(Debug)]
pub struct CpuBackend {
    name: String,
}

/// A CPU buffer: f32-aligned storage of at least the requested bytes.
#[derive(Debug)]
pub struct CpuBuffer {
    data: Vec<f32>,
    bytes: usize,
}

impl CpuBuffer {
    fn f32s(&self, elems: usize) -> &[f32] {
        &self.data[..elems]
    }
    fn f32s_mut(&mut self, elems: usize) -> &mut [f32] {
        &mut self.data[..elems]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        let b = self.bytes;
        &mut bytemuck::cast_slice_mut::<f32, u8>(&mut self.data)[..b]
    }
    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<f32, u8>(&self.data)[..self.bytes]
    }
}

fn cpu_name() -> String {
    let threads = rayon::current_num_threads();
    let mut feats = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            feats.push("avx512f");
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            feats.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            feats.push("fma");
        }
    }
    format!("host cpu ({threads} threads; {})", feats.join(","))
}

fn total_memory() -> u64 {
    // Linux: MemTotal / MemAvailable from /proc/meminfo; elsewhere report unknown (0).
    meminfo("MemTotal:").unwrap_or(0)
}

fn free_memory() -> u64 {
    meminfo("MemAvailable:").unwrap_or(0)
}

fn meminfo(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Backend for CpuBackend {
    type Context = ();
    type Buffer = CpuBuffer;

    fn init() -> Result<Self, BackendError> {
        Ok(CpuBackend { name: cpu_name() })
    }

    fn devices(&self) -> Vec<DeviceInfo> {
        vec![DeviceInfo {
            name: self.name.clone(),
            kind: DeviceKind::Cpu,
            memory_total: total_memory(),
            memory_free: free_memory(),
            capabilities: OpKind::all_bits(),
        }]
    }

    fn create_context(&self, device: u32) -> Result<(), BackendError> {
        if device == 0 {
            Ok(())
        } else {
            Err(BackendError::invalid(format!(
                "cpu backend has one device (0), not {device}"
            )))
        }
    }

    fn alloc(&self, _: &mut (), bytes: u64) -> Result<CpuBuffer, BackendError> {
        let bytes = usize::try_from(bytes).map_err(|_| BackendError::oom("size overflows"))?;
        let elems = bytes.div_ceil(4);
        let mut data = Vec::new();
        data.try_reserve_exact(elems)
            .map_err(|e| BackendError::oom(format!("cannot allocate {bytes} bytes: {e}")))?;
        data.resize(elems, 0.0);
        Ok(CpuBuffer { data, bytes })
    }

    fn upload(
        &self,
        _: &mut (),
        buf: &mut CpuBuffer,
        off: u64,
        d: &[u8],
    ) -> Result<(), BackendError> {
        let off = off as usize; // range checked by the SDK glue
        buf.bytes_mut()[off..off + d.len()].copy_from_slice(d);
        Ok(())
    }

    fn download(
        &self,
        _: &mut (),
        buf: &CpuBuffer,
        off: u64,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        let off = off as usize;
        out.copy_from_slice(&buf.bytes()[off..off + out.len()]);
        Ok(())
    }

    fn run(
        &self,
        _: &mut (),
        op: &Op,
        inputs: &[&CpuBuffer],
        outputs: &mut [&mut CpuBuffer],
    ) -> Result<(), BackendError> {
        let ie = op.input_elems();
        let oe = op.output_elems();
        match *op {
            Op::VectorAdd { .. } => kernels::vector_add(
                inputs[0].f32s(ie[0]),
                inputs[1].f32s(ie[1]),
                outputs[0].f32s_mut(oe[0]),
            ),
            Op::Matmul { m, k, n } => kernels::matmul(
                inputs[0].f32s(ie[0]),
                inputs[1].f32s(ie[1]),
                outputs[0].f32s_mut(oe[0]),
                m,
                k,
                n,
            ),
            Op::ReduceSum { .. } => {
                outputs[0].f32s_mut(1)[0] = kernels::reduce_sum(inputs[0].f32s(ie[0]))
            }
            Op::Dot { .. } => {
                outputs[0].f32s_mut(1)[0] =
                    kernels::dot(inputs[0].f32s(ie[0]), inputs[1].f32s(ie[1]))
            }
            Op::Softmax { cols, .. } => {
                kernels::softmax(inputs[0].f32s(ie[0]), outputs[0].f32s_mut(oe[0]), cols)
            }
            Op::DistanceTopk {
                dim, n, k, metric, ..
            } => {
                let (s, i) = outputs.split_at_mut(1);
                let idx: &mut [u32] = bytemuck::cast_slice_mut(i[0].f32s_mut(oe[1]));
                kernels::distance_topk(
                    inputs[0].f32s(ie[0]),
                    inputs[1].f32s(ie[1]),
                    dim,
                    n,
                    k,
                    metric,
                    s[0].f32s_mut(oe[0]),
                    idx,
                );
            }
        }
        Ok(())
    }
}

abi_sdk::export_backend!(
    CpuBackend,
    name = "cpu",
    version = env!("CARGO_PKG_VERSION")
);
