//! Everything that calls into CUDA (the crate's only `unsafe` module): library probing,
//! contexts, buffers, kernel launches and cuBLAS sgemm.

use std::collections::HashMap;
use std::sync::Arc;

use abi_sdk::{BackendError, DeviceInfo, DeviceKind, Metric, Op, OpKind};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
};

use crate::kernels::{BLOCK, NAMES, SOURCE};

/// Which CUDA libraries could be loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Libs {
    /// libcuda (driver).
    pub driver: bool,
    /// libnvrtc (kernel compiler).
    pub nvrtc: bool,
    /// libcublas.
    pub cublas: bool,
}

/// Probes the libraries first: with dynamic loading, the first call into a missing library
/// panics, so nothing else is called unless its library is present.
pub fn probe() -> Libs {
    // SAFETY: these only try to dlopen the libraries and report whether that worked.
    unsafe {
        Libs {
            driver: cudarc::driver::sys::is_culib_present(),
            nvrtc: cudarc::nvrtc::sys::is_culib_present(),
            cublas: cudarc::cublas::sys::is_culib_present(),
        }
    }
}

fn derr(what: &str, e: impl std::fmt::Debug) -> BackendError {
    BackendError::device(format!("{what}: {e:?}"))
}

/// The devices the driver reports (none when the driver is absent or has no device).
pub fn enumerate(libs: Libs) -> Vec<(usize, DeviceInfo)> {
    if !libs.driver {
        return Vec::new();
    }
    let Ok(count) = CudaContext::device_count() else {
        return Vec::new();
    };
    let mut caps = 0u64;
    if libs.cublas {
        caps |= OpKind::Matmul.bit();
    }
    if libs.nvrtc {
        caps |= OpKind::ALL
            .iter()
            .filter(|k| **k != OpKind::Matmul)
            .fold(0, |acc, k| acc | k.bit());
    }
    (0..count.max(0) as usize)
        .filter_map(|i| {
            let ctx = CudaContext::new(i).ok()?;
            let name = ctx.name().unwrap_or_else(|_| format!("cuda device {i}"));
            let total = ctx.total_mem().unwrap_or(0) as u64;
            let free = ctx.mem_get_info().map(|(f, _)| f as u64).unwrap_or(0);
            Some((
                i,
                DeviceInfo {
                    name,
                    kind: DeviceKind::Gpu,
                    memory_total: total,
                    memory_free: free,
                    capabilities: caps,
                },
            ))
        })
        .collect()
}

/// A device buffer (f32 storage; u32 indices share it bit for bit).
#[derive(Debug)]
pub struct CudaBuf {
    data: CudaSlice<f32>,
}

/// A context on one device: its stream, compiled kernels and cuBLAS handle (both lazy).
pub struct CudaCtx {
    stream: Arc<CudaStream>,
    funcs: Option<HashMap<&'static str, CudaFunction>>,
    blas: Option<CudaBlas>,
    libs: Libs,
}

impl std::fmt::Debug for CudaCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaCtx").field("libs", &self.libs).finish()
    }
}

fn cfg1(blocks: u64) -> Result<LaunchConfig, BackendError> {
    let blocks = u32::try_from(blocks.max(1))
        .ok()
        .filter(|b| *b <= i32::MAX as u32)
        .ok_or_else(|| BackendError::unsupported("grid too large"))?;
    Ok(LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    })
}

fn u32_of(v: usize, what: &str) -> Result<u32, BackendError> {
    u32::try_from(v).map_err(|_| BackendError::unsupported(format!("{what} {v} exceeds u32")))
}

impl CudaCtx {
    /// Opens device `ordinal`'s primary context.
    pub fn new(ordinal: usize, libs: Libs) -> Result<Self, BackendError> {
        let ctx = CudaContext::new(ordinal).map_err(|e| derr("cuda context", e))?;
        let stream = ctx.default_stream();
        Ok(Self {
            stream,
            funcs: None,
            blas: None,
            libs,
        })
    }

    fn func(&mut self, name: &'static str) -> Result<CudaFunction, BackendError> {
        if self.funcs.is_none() {
            if !self.libs.nvrtc {
                return Err(BackendError::unsupported(
                    "libnvrtc not found: only matmul runs",
                ));
            }
            let ptx = cudarc::nvrtc::compile_ptx(SOURCE).map_err(|e| derr("nvrtc", e))?;
            let module = self
                .stream
                .context()
                .load_module(ptx)
                .map_err(|e| derr("load module", e))?;
            let mut m = HashMap::new();
            for n in NAMES {
                m.insert(n, module.load_function(n).map_err(|e| derr(n, e))?);
            }
            self.funcs = Some(m);
        }
        self.funcs
            .as_ref()
            .and_then(|m| m.get(name).cloned())
            .ok_or_else(|| BackendError::unsupported(format!("no kernel {name}")))
    }

    /// Allocates at least `bytes` bytes.
    pub fn alloc(&mut self, bytes: u64) -> Result<CudaBuf, BackendError> {
        let elems =
            usize::try_from(bytes.div_ceil(4)).map_err(|_| BackendError::oom("size overflows"))?;
        let data = self
            .stream
            .alloc_zeros::<f32>(elems)
            .map_err(|e| BackendError::oom(format!("cuMemAlloc of {bytes} bytes: {e:?}")))?;
        Ok(CudaBuf { data })
    }

    /// Host -> device at a 4-byte aligned offset.
    pub fn upload(
        &mut self,
        buf: &mut CudaBuf,
        offset: u64,
        data: &[u8],
    ) -> Result<(), BackendError> {
        if data.is_empty() {
            return Ok(());
        }
        if !offset.is_multiple_of(4) || !data.len().is_multiple_of(4) {
            return Err(BackendError::invalid(
                "cuda backend: upload offset and length must be multiples of 4",
            ));
        }
        let host = abi_sdk::bytes::bytes_to_f32(data);
        let start = (offset / 4) as usize;
        let mut view = buf.data.slice_mut(start..start + host.len());
        self.stream
            .memcpy_htod(&host, &mut view)
            .map_err(|e| derr("memcpy htod", e))
    }

    /// Device -> host (any byte range: the aligned superset is read and sliced).
    pub fn download(
        &mut self,
        buf: &CudaBuf,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        if out.is_empty() {
            return Ok(());
        }
        let start = (offset / 4) as usize;
        let end = ((offset + out.len() as u64).div_ceil(4) as usize).min(buf.data.len());
        let mut host = vec![0f32; end - start];
        self.stream
            .memcpy_dtoh(&buf.data.slice(start..end), &mut host)
            .map_err(|e| derr("memcpy dtoh", e))?;
        self.stream
            .synchronize()
            .map_err(|e| derr("synchronize", e))?;
        let bytes = abi_sdk::bytes::f32_to_bytes(&host);
        let skip = (offset - start as u64 * 4) as usize;
        out.copy_from_slice(&bytes[skip..skip + out.len()]);
        Ok(())
    }

    /// Runs `op` on the stream.
    pub fn run(
        &mut self,
        op: &Op,
        inputs: &[&CudaBuf],
        outputs: &mut [&mut CudaBuf],
    ) -> Result<(), BackendError> {
        match *op {
            Op::VectorAdd { n } => {
                let f = self.func("vector_add")?;
                let n32 = u32_of(n, "n")?;
                let mut b = self.stream.launch_builder(&f);
                b.arg(&inputs[0].data)
                    .arg(&inputs[1].data)
                    .arg(&mut outputs[0].data)
                    .arg(&n32);
                // SAFETY: the kernel's signature is (const float*, const float*, float*, uint);
                // the SDK glue checked every buffer holds at least n f32.
                unsafe { b.launch(cfg1(n.div_ceil(BLOCK as usize) as u64)?) }
                    .map_err(|e| derr("launch vector_add", e))?;
            }
            Op::ReduceSum { n } | Op::Dot { n } => {
                let is_dot = matches!(op, Op::Dot { .. });
                let f = self.func(if is_dot { "dot" } else { "reduce_sum" })?;
                let n32 = u32_of(n, "n")?;
                let mut first = outputs[0].data.slice_mut(0..1);
                self.stream
                    .memset_zeros(&mut first)
                    .map_err(|e| derr("memset", e))?;
                let blocks = (n.div_ceil(BLOCK as usize) as u64).min(1024);
                let mut b = self.stream.launch_builder(&f);
                b.arg(&inputs[0].data);
                if is_dot {
                    b.arg(&inputs[1].data);
                }
                b.arg(&mut outputs[0].data).arg(&n32);
                // SAFETY: (const float* x[, const float* y], float* out, uint n); buffers hold
                // at least n inputs and one output, checked by the SDK glue.
                unsafe { b.launch(cfg1(blocks)?) }.map_err(|e| derr("launch reduce", e))?;
            }
            Op::Softmax { rows, cols } => {
                let f = self.func("softmax")?;
                let (r32, c32) = (u32_of(rows, "rows")?, u32_of(cols, "cols")?);
                let mut b = self.stream.launch_builder(&f);
                b.arg(&inputs[0].data)
                    .arg(&mut outputs[0].data)
                    .arg(&r32)
                    .arg(&c32);
                // SAFETY: (const float*, float*, uint rows, uint cols); rows*cols f32 each.
                unsafe { b.launch(cfg1(rows as u64)?) }.map_err(|e| derr("launch softmax", e))?;
            }
            Op::Matmul { m, k, n } => {
                if !self.libs.cublas {
                    return Err(BackendError::unsupported("libcublas not found"));
                }
                if self.blas.is_none() {
                    self.blas = Some(
                        CudaBlas::new(self.stream.clone()).map_err(|e| derr("cublas init", e))?,
                    );
                }
                let blas = self.blas.as_ref().expect("set above");
                let (mi, ki, ni) = (
                    i32::try_from(m).map_err(|_| BackendError::unsupported("m too large"))?,
                    i32::try_from(k).map_err(|_| BackendError::unsupported("k too large"))?,
                    i32::try_from(n).map_err(|_| BackendError::unsupported("n too large"))?,
                );
                // Row-major C = A x B is column-major C^T = B^T x A^T: swap operands and m/n.
                let cfg = GemmConfig {
                    transa: cublasOperation_t::CUBLAS_OP_N,
                    transb: cublasOperation_t::CUBLAS_OP_N,
                    m: ni,
                    n: mi,
                    k: ki,
                    alpha: 1.0f32,
                    lda: ni,
                    ldb: ki,
                    beta: 0.0f32,
                    ldc: ni,
                };
                // SAFETY: the glue checked a holds m*k, b holds k*n and c holds m*n f32; the
                // leading dimensions above match those row-major shapes.
                unsafe { blas.gemm(cfg, &inputs[1].data, &inputs[0].data, &mut outputs[0].data) }
                    .map_err(|e| derr("cublas sgemm", e))?;
            }
            Op::DistanceTopk {
                queries,
                dim,
                n,
                k,
                metric,
            } => {
                let fs = self.func("scores")?;
                let ft = self.func("topk")?;
                let metric_code: u32 = match metric {
                    Metric::Cosine => 0,
                    Metric::Dot => 1,
                    Metric::L2 => 2,
                };
                // Score rows for a batch of queries at a time (at most ~256 MiB of keys).
                let batch = ((256usize << 20) / (n * 4)).clamp(1, queries);
                let mut keys = self
                    .stream
                    .alloc_zeros::<f32>(batch * n)
                    .map_err(|e| BackendError::oom(format!("score buffer: {e:?}")))?;
                let (n32, d32, k32) = (u32_of(n, "n")?, u32_of(dim, "dim")?, u32_of(k, "k")?);
                let (s_out, i_out) = outputs.split_at_mut(1);
                let mut q0 = 0usize;
                while q0 < queries {
                    let qb = batch.min(queries - q0);
                    let (qb32, q032) = (u32_of(qb, "batch")?, u32_of(q0, "query")?);
                    let mut b = self.stream.launch_builder(&fs);
                    b.arg(&inputs[0].data)
                        .arg(&inputs[1].data)
                        .arg(&mut keys)
                        .arg(&n32)
                        .arg(&d32)
                        .arg(&qb32)
                        .arg(&metric_code)
                        .arg(&q032);
                    // SAFETY: scores(q, v, keys, n, dim, qb, metric, q0): q holds
                    // queries*dim, v n*dim (glue-checked), keys batch*n >= qb*n.
                    unsafe { b.launch(cfg1(((qb * n) as u64).div_ceil(u64::from(BLOCK)))?) }
                        .map_err(|e| derr("launch scores", e))?;
                    let mut b = self.stream.launch_builder(&ft);
                    b.arg(&keys)
                        .arg(&mut s_out[0].data)
                        .arg(&mut i_out[0].data)
                        .arg(&n32)
                        .arg(&k32)
                        .arg(&qb32)
                        .arg(&metric_code)
                        .arg(&q032);
                    // SAFETY: topk(keys, out_s, out_i, n, k, qb, metric, q0): outputs hold
                    // queries*k elements (glue-checked); rows q0..q0+qb are written.
                    unsafe { b.launch(cfg1(qb as u64)?) }.map_err(|e| derr("launch topk", e))?;
                    q0 += qb;
                }
                self.stream
                    .synchronize()
                    .map_err(|e| derr("synchronize", e))?;
            }
        }
        Ok(())
    }
}
