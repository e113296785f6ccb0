//! One wgpu device: buffers, pipelines (compiled on first use) and op encoding.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use abi_sdk::{BackendError, Metric, Op};

use crate::shaders::{self, BLOCK, MM_WG, REDUCE_SPAN, WG};

/// A device buffer (storage, copy source and destination).
#[derive(Debug)]
pub struct GpuBuffer {
    buf: wgpu::Buffer,
}

/// A device, its queue and its compiled pipelines.
pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    limits: wgpu::Limits,
    pipelines: HashMap<&'static str, wgpu::ComputePipeline>,
    /// Errors wgpu reports outside an error scope (would otherwise panic in its default handler).
    uncaptured: Arc<Mutex<Option<String>>>,
    name: String,
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuContext")
            .field("device", &self.name)
            .finish()
    }
}

/// Splits `groups` workgroups into a 2-D grid within the per-dimension limit.
fn grid(groups: u32, max_dim: u32) -> Result<(u32, u32), BackendError> {
    let groups = groups.max(1);
    let x = groups.min(max_dim);
    let y = groups.div_ceil(x);
    if y > max_dim {
        return Err(BackendError::unsupported(format!(
            "{groups} workgroups exceed this device's dispatch limit"
        )));
    }
    Ok((x, y))
}

fn u32_of(v: usize, what: &str) -> Result<u32, BackendError> {
    u32::try_from(v).map_err(|_| BackendError::unsupported(format!("{what} {v} exceeds u32")))
}

impl GpuContext {
    /// Opens the adapter's device with the adapter's own limits (never more).
    pub fn new(adapter: &wgpu::Adapter, name: &str) -> Result<Self, BackendError> {
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("abi-plugin-wgpu"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| BackendError::device(format!("request_device on {name}: {e}")))?;
        let uncaptured = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut g) = sink.lock() {
                *g = Some(e.to_string());
            }
        }));
        Ok(GpuContext {
            device,
            queue,
            limits,
            pipelines: HashMap::new(),
            uncaptured,
            name: name.to_string(),
        })
    }

    /// Runs `f` inside validation and out-of-memory error scopes and turns a captured error
    /// into a BackendError.
    fn scoped<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Self) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f(self);
        let verr = pollster::block_on(val.pop());
        let oerr = pollster::block_on(oom.pop());
        if let Some(e) = oerr {
            return Err(BackendError::oom(format!("{what}: {e}")));
        }
        if let Some(e) = verr {
            return Err(BackendError::device(format!("{what}: {e}")));
        }
        if let Some(e) = self.uncaptured.lock().ok().and_then(|mut g| g.take()) {
            return Err(BackendError::device(format!("{what}: {e}")));
        }
        r
    }

    /// Allocates `bytes` (rounded up to 4) of storage.
    pub fn alloc(&mut self, bytes: u64) -> Result<GpuBuffer, BackendError> {
        let size = bytes.div_ceil(4) * 4;
        if size > self.limits.max_buffer_size {
            return Err(BackendError::oom(format!(
                "{bytes} bytes exceed the device's max buffer size {}",
                self.limits.max_buffer_size
            )));
        }
        self.scoped("alloc", |c| {
            Ok(GpuBuffer {
                buf: c.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            })
        })
    }

    /// Writes `data` at `offset` (both multiples of 4, as for every f32/u32 transfer).
    pub fn upload(
        &mut self,
        buf: &mut GpuBuffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), BackendError> {
        if data.is_empty() {
            return Ok(());
        }
        if !offset.is_multiple_of(4) || !data.len().is_multiple_of(4) {
            return Err(BackendError::invalid(
                "wgpu backend: upload offset and length must be multiples of 4",
            ));
        }
        self.scoped("upload", |c| {
            c.queue.write_buffer(&buf.buf, offset, data);
            c.queue.submit([]);
            Ok(())
        })
    }

    /// Reads `out.len()` bytes at `offset` through a mapped staging buffer.
    pub fn download(
        &mut self,
        buf: &GpuBuffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), BackendError> {
        if out.is_empty() {
            return Ok(());
        }
        // Copies must be 4-byte aligned: read the aligned superset and slice it.
        let start = offset / 4 * 4;
        let end = (offset + out.len() as u64).div_ceil(4) * 4;
        let end = end.min(buf.buf.size());
        let size = end - start;
        self.scoped("download", |c| {
            let staging = c.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("staging"),
                size,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let mut enc = c.device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&buf.buf, start, &staging, 0, size);
            c.queue.submit([enc.finish()]);
            let slice = staging.slice(..);
            let (tx, rx) = std::sync::mpsc::channel();
            slice.map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            c.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| BackendError::device(format!("poll: {e}")))?;
            rx.recv()
                .map_err(|_| BackendError::device("map callback dropped"))?
                .map_err(|e| BackendError::device(format!("map: {e}")))?;
            {
                let view = slice
                    .get_mapped_range()
                    .map_err(|e| BackendError::device(format!("mapped range: {e}")))?;
                let skip = (offset - start) as usize;
                out.copy_from_slice(&view[skip..skip + out.len()]);
            }
            staging.unmap();
            Ok(())
        })
    }

    fn pipeline(&mut self, name: &'static str) -> Result<wgpu::ComputePipeline, BackendError> {
        if let Some(p) = self.pipelines.get(name) {
            return Ok(p.clone());
        }
        let src = shaders::source(name)
            .ok_or_else(|| BackendError::unsupported(format!("no kernel {name}")))?;
        let p = self.scoped(&format!("compile {name}"), |c| {
            let module = c.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            Ok(c.device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(name),
                    layout: None,
                    module: &module,
                    entry_point: Some("main"),
                    compilation_options: Default::default(),
                    cache: None,
                }))
        })?;
        self.pipelines.insert(name, p.clone());
        Ok(p)
    }

    fn params(&self, v: [u32; 8]) -> wgpu::Buffer {
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: 32,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buf, 0, bytemuck::cast_slice(&v));
        buf
    }

    fn temp(&self, elems: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("temp"),
            size: (elems * 4).max(4),
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        })
    }

    /// Records one dispatch of `pipe` with params and storage buffers bound at 1, 2, ...
    fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipe: &wgpu::ComputePipeline,
        params: [u32; 8],
        bufs: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) {
        let pbuf = self.params(params);
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: pbuf.as_entire_binding(),
        }];
        for (i, b) in bufs.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: i as u32 + 1,
                resource: b.as_entire_binding(),
            });
        }
        let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipe);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    fn check_binding(&self, bytes: u64, what: &str) -> Result<(), BackendError> {
        if bytes > self.limits.max_storage_buffer_binding_size {
            return Err(BackendError::unsupported(format!(
                "{what} of {bytes} bytes exceeds this device's storage binding limit {}",
                self.limits.max_storage_buffer_binding_size
            )));
        }
        Ok(())
    }

    /// Encodes and submits `op`; completion is observed by the next download.
    pub fn run(
        &mut self,
        op: &Op,
        inputs: &[&GpuBuffer],
        outputs: &mut [&mut GpuBuffer],
    ) -> Result<(), BackendError> {
        for b in inputs
            .iter()
            .map(|b| &b.buf)
            .chain(outputs.iter().map(|b| &b.buf))
        {
            self.check_binding(b.size(), "buffer")?;
        }
        let max_dim = self.limits.max_compute_workgroups_per_dimension;
        let name = op.kind().name();
        // Compile outside the recording scope (pipeline() has its own scope).
        let pipes: Vec<wgpu::ComputePipeline> = match op {
            Op::VectorAdd { .. } => vec![self.pipeline("vector_add")?],
            Op::Matmul { .. } => vec![self.pipeline("matmul")?],
            Op::ReduceSum { .. } => vec![self.pipeline("reduce")?],
            Op::Dot { .. } => vec![self.pipeline("dot")?, self.pipeline("reduce")?],
            Op::Softmax { .. } => vec![self.pipeline("softmax")?],
            Op::DistanceTopk { .. } => vec![self.pipeline("scores")?, self.pipeline("topk")?],
        };
        self.scoped(name, |c| {
            let mut enc = c.device.create_command_encoder(&Default::default());
            // Temporaries must outlive the submission.
            let mut keep: Vec<wgpu::Buffer> = Vec::new();
            match *op {
                Op::VectorAdd { n } => {
                    let n = u32_of(n, "n")?;
                    c.dispatch(
                        &mut enc,
                        &pipes[0],
                        [n, 0, 0, 0, 0, 0, 0, 0],
                        &[&inputs[0].buf, &inputs[1].buf, &outputs[0].buf],
                        grid(n.div_ceil(WG), max_dim)?,
                    );
                }
                Op::Matmul { m, k, n } => {
                    let (m, k, n) = (u32_of(m, "m")?, u32_of(k, "k")?, u32_of(n, "n")?);
                    let (gx, gy) = (
                        n.div_ceil(BLOCK).div_ceil(MM_WG),
                        m.div_ceil(BLOCK).div_ceil(MM_WG),
                    );
                    if gx > max_dim || gy > max_dim {
                        return Err(BackendError::unsupported(
                            "matrix too large for one dispatch",
                        ));
                    }
                    c.dispatch(
                        &mut enc,
                        &pipes[0],
                        [m, k, n, 0, 0, 0, 0, 0],
                        &[&inputs[0].buf, &inputs[1].buf, &outputs[0].buf],
                        (gx, gy),
                    );
                }
                Op::ReduceSum { n } | Op::Dot { n } => {
                    let is_dot = matches!(op, Op::Dot { .. });
                    let reduce = pipes.last().expect("reduce pipeline");
                    let mut len = u32_of(n, "n")?;
                    // None: the first pass reads the op's inputs.
                    let mut src: Option<wgpu::Buffer> = None;
                    loop {
                        let groups = len.div_ceil(REDUCE_SPAN);
                        let dst = if groups == 1 {
                            outputs[0].buf.clone()
                        } else {
                            let t = c.temp(u64::from(groups));
                            keep.push(t.clone());
                            t
                        };
                        let params = [len, 0, 0, 0, 0, 0, 0, 0];
                        let g = grid(groups, max_dim)?;
                        match &src {
                            None if is_dot => c.dispatch(
                                &mut enc,
                                &pipes[0],
                                params,
                                &[&inputs[0].buf, &inputs[1].buf, &dst],
                                g,
                            ),
                            None => {
                                c.dispatch(&mut enc, reduce, params, &[&inputs[0].buf, &dst], g)
                            }
                            Some(s) => c.dispatch(&mut enc, reduce, params, &[s, &dst], g),
                        }
                        if groups == 1 {
                            break;
                        }
                        src = Some(dst);
                        len = groups;
                    }
                }
                Op::Softmax { rows, cols } => {
                    let (r, cl) = (u32_of(rows, "rows")?, u32_of(cols, "cols")?);
                    c.dispatch(
                        &mut enc,
                        &pipes[0],
                        [r, cl, 0, 0, 0, 0, 0, 0],
                        &[&inputs[0].buf, &outputs[0].buf],
                        grid(r, max_dim)?,
                    );
                }
                Op::DistanceTopk {
                    queries,
                    dim,
                    n,
                    k,
                    metric,
                } => {
                    let row_bytes = n as u64 * 4;
                    c.check_binding(row_bytes, "one query's score row")?;
                    let max_rows = (c.limits.max_storage_buffer_binding_size / row_bytes).max(1);
                    let batch = (queries as u64).min(max_rows).min(1 << 16) as usize;
                    let metric_code = match metric {
                        Metric::Cosine => 0,
                        Metric::Dot => 1,
                        Metric::L2 => 2,
                    };
                    let (n32, d32, k32) = (u32_of(n, "n")?, u32_of(dim, "dim")?, u32_of(k, "k")?);
                    let keys = c.temp(batch as u64 * n as u64);
                    let (s_out, i_out) = outputs.split_at_mut(1);
                    let mut q0 = 0usize;
                    while q0 < queries {
                        let qb = batch.min(queries - q0);
                        let qb32 = u32_of(qb, "batch")?;
                        let q032 = u32_of(q0, "query")?;
                        let pairs = u32_of(qb * n, "queries x n")?;
                        c.dispatch(
                            &mut enc,
                            &pipes[0],
                            [n32, d32, qb32, metric_code, q032, 0, 0, 0],
                            &[&inputs[0].buf, &inputs[1].buf, &keys],
                            grid(pairs.div_ceil(WG), max_dim)?,
                        );
                        c.dispatch(
                            &mut enc,
                            &pipes[1],
                            [n32, k32, qb32, metric_code, q032, 0, 0, 0],
                            &[&keys, &s_out[0].buf, &i_out[0].buf],
                            grid(qb32, max_dim)?,
                        );
                        q0 += qb;
                    }
                    keep.push(keys);
                }
            }
            c.queue.submit([enc.finish()]);
            drop(keep);
            Ok(())
        })
    }
}
