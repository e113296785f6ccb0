//! Host-side wrapper: validates a plugin's table and calls it safely.

use std::ffi::{CStr, c_char};
use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use crate::device::{DeviceInfo, DeviceKind};
use crate::error::{BackendError, ErrorKind};
use crate::ffi::{self, AbiBackend, AbiBuffer, AbiContext, AbiDeviceInfo, AbiPluginEntry};
use crate::op::Op;

/// Why a plugin table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The entry returned null.
    #[error("entry symbol returned a null descriptor")]
    Null,
    /// The entry panicked or the ABI version is outside what the host knows.
    #[error("plugin abi_version {found} is not supported by this host (supports {min}..={max})")]
    Version {
        /// Reported version.
        found: u32,
        /// Oldest supported.
        min: u32,
        /// Newest supported.
        max: u32,
    },
    /// struct_size too small for the declared version.
    #[error(
        "descriptor struct_size {found} is smaller than the {need} bytes ABI version {version} requires"
    )]
    StructSize {
        /// Reported size.
        found: u32,
        /// Required size.
        need: usize,
        /// Declared version.
        version: u32,
    },
    /// A mandatory function pointer or string is missing.
    #[error("descriptor field `{0}` is null")]
    MissingField(&'static str),
    /// name or version is not UTF-8.
    #[error("descriptor field `{0}` is not valid UTF-8")]
    BadString(&'static str),
}

struct PluginInner {
    table: AbiBackend,
    name: String,
    version: String,
    abi_version: u32,
    struct_size: u32,
}

// SAFETY: the table holds pointers to immutable static data and functions of a library that is
// never unloaded while a Plugin exists (the loader keeps it for the process lifetime); the ABI
// requires its entries to be callable from any thread.
unsafe impl Send for PluginInner {}
// SAFETY: as above; nothing in the table is mutated after validation.
unsafe impl Sync for PluginInner {}

/// A validated plugin table (cheap to clone).
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.name)
            .field("version", &self.inner.version)
            .field("abi_version", &self.inner.abi_version)
            .field("struct_size", &self.inner.struct_size)
            .finish()
    }
}

/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives the call.
unsafe fn read_cstr(p: *const c_char, field: &'static str) -> Result<String, TableError> {
    if p.is_null() {
        return Err(TableError::MissingField(field));
    }
    // SAFETY: per contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map(str::to_owned)
        .map_err(|_| TableError::BadString(field))
}

fn required_size(version: u32) -> usize {
    if version >= 2 {
        size_of::<AbiBackend>()
    } else {
        ffi::ABI_BACKEND_V1_SIZE
    }
}

impl Plugin {
    /// Calls an entry function and validates the table it returns.
    ///
    /// # Safety
    /// `entry` must be a plugin's `abi_plugin_entry` following the ABI, from a library that stays
    /// loaded for as long as the returned Plugin or anything made from it lives.
    pub unsafe fn from_entry(entry: AbiPluginEntry) -> Result<Self, TableError> {
        // SAFETY: per contract; the entry only returns a pointer to static data.
        let ptr = unsafe { entry() };
        if ptr.is_null() {
            return Err(TableError::Null);
        }
        // Read the two leading u32s first: they say how much more we may read.
        // SAFETY: every version of the descriptor starts with these two fields.
        let (struct_size, abi_version) = unsafe { ((*ptr).struct_size, (*ptr).abi_version) };
        if !(ffi::ABI_VERSION_MIN..=ffi::ABI_VERSION).contains(&abi_version) {
            return Err(TableError::Version {
                found: abi_version,
                min: ffi::ABI_VERSION_MIN,
                max: ffi::ABI_VERSION,
            });
        }
        let need = required_size(abi_version);
        if (struct_size as usize) < need {
            return Err(TableError::StructSize {
                found: struct_size,
                need,
                version: abi_version,
            });
        }
        // Copy only the bytes the plugin has; later fields stay zero (= None).
        let copy = (struct_size as usize).min(size_of::<AbiBackend>());
        let mut table = MaybeUninit::<AbiBackend>::zeroed();
        // SAFETY: the plugin promises `struct_size` readable bytes at ptr; we copy at most that
        // many into a zeroed table, and all-zero is a valid AbiBackend (nulls and Nones).
        let table = unsafe {
            std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), table.as_mut_ptr().cast::<u8>(), copy);
            table.assume_init()
        };
        macro_rules! need {
            ($($f:ident),*) => { $( if table.$f.is_none() { return Err(TableError::MissingField(stringify!($f))); } )* };
        }
        need!(
            init,
            device_count,
            device_info,
            context_create,
            context_destroy,
            buffer_alloc,
            buffer_free,
            buffer_upload,
            buffer_download,
            run_op,
            last_error
        );
        // SAFETY: static strings per the ABI.
        let name = unsafe { read_cstr(table.name, "name") }?;
        // SAFETY: as above.
        let version = unsafe { read_cstr(table.version, "version") }?;
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                table,
                name,
                version,
                abi_version,
                struct_size,
            }),
        })
    }

    /// Backend name (e.g. `cpu`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// Plugin version string.
    pub fn version(&self) -> &str {
        &self.inner.version
    }
    /// ABI version the plugin was built against.
    pub fn abi_version(&self) -> u32 {
        self.inner.abi_version
    }
    /// Size of its table in bytes.
    pub fn struct_size(&self) -> u32 {
        self.inner.struct_size
    }
    /// True when the plugin provides its own health check (ABI v2+).
    pub fn has_health_check(&self) -> bool {
        self.inner.table.health_check.is_some()
    }

    fn last_error(&self) -> String {
        let Some(f) = self.inner.table.last_error else {
            return String::new();
        };
        let mut buf = vec![0u8; 1024];
        // SAFETY: we pass a writable buffer of the stated capacity.
        let n = unsafe { f(buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
        let n = n.min(buf.len() - 1);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn check(&self, status: ffi::AbiStatus, what: &str) -> Result<(), BackendError> {
        if status == ffi::ABI_OK {
            return Ok(());
        }
        let msg = self.last_error();
        Err(BackendError::new(
            ErrorKind::from_status(status),
            if msg.is_empty() {
                format!("{what} failed with status {status}")
            } else {
                msg
            },
        ))
    }

    /// Runs the plugin's one-time init.
    pub fn init(&self) -> Result<(), BackendError> {
        let f = self.inner.table.init.expect("validated in from_entry");
        // SAFETY: validated table; init takes no arguments.
        let st = unsafe { f() };
        self.check(st, "init")
    }

    /// Lists the plugin's devices.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>, BackendError> {
        let count_fn = self
            .inner
            .table
            .device_count
            .expect("validated in from_entry");
        let info_fn = self
            .inner
            .table
            .device_info
            .expect("validated in from_entry");
        // SAFETY: validated table.
        let n = unsafe { count_fn() };
        let mut out = Vec::with_capacity(n as usize);
        for i in 0..n {
            let mut rec = AbiDeviceInfo::empty();
            // SAFETY: rec is a full, writable abi_device_info with struct_size set.
            let st = unsafe { info_fn(i, &mut rec) };
            self.check(st, "device_info")?;
            let bytes: Vec<u8> = rec
                .name
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8)
                .collect();
            out.push(DeviceInfo {
                name: String::from_utf8_lossy(&bytes).into_owned(),
                kind: DeviceKind::from_code(rec.kind),
                memory_total: rec.memory_total,
                memory_free: rec.memory_free,
                capabilities: rec.capabilities,
            });
        }
        Ok(out)
    }

    /// Opens a context on device `device`.
    pub fn create_context(&self, device: u32) -> Result<Context, BackendError> {
        let f = self
            .inner
            .table
            .context_create
            .expect("validated in from_entry");
        let mut ptr: *mut AbiContext = std::ptr::null_mut();
        // SAFETY: validated table; ptr is a valid out-pointer.
        let st = unsafe { f(device, &mut ptr) };
        self.check(st, "context_create")?;
        if ptr.is_null() {
            return Err(BackendError::device(
                "context_create returned a null context",
            ));
        }
        Ok(Context {
            inner: Arc::new(ContextInner {
                plugin: self.clone(),
                ptr,
                lock: Mutex::new(()),
                device,
            }),
        })
    }
}

struct ContextInner {
    plugin: Plugin,
    ptr: *mut AbiContext,
    /// Serialises every call on this context, as the ABI requires.
    lock: Mutex<()>,
    device: u32,
}

// SAFETY: the ABI allows a context to be used from any thread as long as calls are not
// concurrent, which `lock` guarantees.
unsafe impl Send for ContextInner {}
// SAFETY: as above.
unsafe impl Sync for ContextInner {}

impl Drop for ContextInner {
    fn drop(&mut self) {
        if let Some(f) = self.plugin.inner.table.context_destroy {
            // SAFETY: the context came from context_create; every Buffer holds an Arc to this,
            // so all buffers are already freed.
            unsafe { f(self.ptr) };
        }
    }
}

/// An open device context (cheap to clone; destroyed when the last clone and buffer go).
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("backend", &self.inner.plugin.name())
            .field("device", &self.inner.device)
            .finish()
    }
}

/// A device buffer; freed on drop.
pub struct Buffer {
    ctx: Arc<ContextInner>,
    ptr: *mut AbiBuffer,
    len: u64,
}

// SAFETY: the buffer is only touched through its context's lock.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer").field("len", &self.len).finish()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let _g = self.ctx.lock.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = self.ctx.plugin.inner.table.buffer_free {
            // SAFETY: allocated by buffer_alloc on this context, freed once.
            unsafe { f(self.ctx.ptr, self.ptr) };
        }
    }
}

impl Buffer {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// True for a zero-length buffer (never produced by `alloc`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The results of [`Context::run_host`]: f32 values and, for distance_topk, the indices.
#[derive(Debug, Clone, PartialEq)]
pub struct HostOutput {
    /// First output as f32 (c, y, or scores).
    pub values: Vec<f32>,
    /// Second output as u32 (distance_topk indices), else empty.
    pub indices: Vec<u32>,
}

impl Context {
    fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The plugin this context belongs to.
    pub fn plugin(&self) -> &Plugin {
        &self.inner.plugin
    }

    /// Device index.
    pub fn device(&self) -> u32 {
        self.inner.device
    }

    /// Allocates `bytes` on the device.
    pub fn alloc(&self, bytes: u64) -> Result<Buffer, BackendError> {
        let f = self.plugin().inner.table.buffer_alloc.expect("validated");
        let mut ptr: *mut AbiBuffer = std::ptr::null_mut();
        let _g = self.guard();
        // SAFETY: live context; ptr is a valid out-pointer.
        let st = unsafe { f(self.inner.ptr, bytes, &mut ptr) };
        self.plugin().check(st, "buffer_alloc")?;
        if ptr.is_null() {
            return Err(BackendError::device("buffer_alloc returned null"));
        }
        Ok(Buffer {
            ctx: self.inner.clone(),
            ptr,
            len: bytes,
        })
    }

    fn own(&self, buf: &Buffer) -> Result<(), BackendError> {
        if Arc::ptr_eq(&buf.ctx, &self.inner) {
            Ok(())
        } else {
            Err(BackendError::invalid("buffer belongs to another context"))
        }
    }

    /// Copies `data` into `buf` at byte `offset`.
    pub fn upload(&self, buf: &Buffer, offset: u64, data: &[u8]) -> Result<(), BackendError> {
        self.own(buf)?;
        let f = self.plugin().inner.table.buffer_upload.expect("validated");
        let _g = self.guard();
        // SAFETY: live context and buffer; data is readable for its length.
        let st = unsafe {
            f(
                self.inner.ptr,
                buf.ptr,
                offset,
                data.as_ptr(),
                data.len() as u64,
            )
        };
        self.plugin().check(st, "buffer_upload")
    }

    /// Copies `out.len()` bytes of `buf` at `offset` into `out`.
    pub fn download(&self, buf: &Buffer, offset: u64, out: &mut [u8]) -> Result<(), BackendError> {
        self.own(buf)?;
        let f = self
            .plugin()
            .inner
            .table
            .buffer_download
            .expect("validated");
        let _g = self.guard();
        // SAFETY: live context and buffer; out is writable for its length.
        let st = unsafe {
            f(
                self.inner.ptr,
                buf.ptr,
                offset,
                out.as_mut_ptr(),
                out.len() as u64,
            )
        };
        self.plugin().check(st, "buffer_download")
    }

    /// Runs `op` on device buffers.
    pub fn run(
        &self,
        op: &Op,
        inputs: &[&Buffer],
        outputs: &[&Buffer],
    ) -> Result<(), BackendError> {
        for b in inputs.iter().chain(outputs) {
            self.own(b)?;
        }
        let raw = op.to_abi();
        let ins: Vec<*mut AbiBuffer> = inputs.iter().map(|b| b.ptr).collect();
        let outs: Vec<*mut AbiBuffer> = outputs.iter().map(|b| b.ptr).collect();
        let f = self.plugin().inner.table.run_op.expect("validated");
        let _g = self.guard();
        // SAFETY: live context and buffers; arrays of the stated lengths.
        let st = unsafe {
            f(
                self.inner.ptr,
                &raw,
                ins.as_ptr(),
                ins.len() as u32,
                outs.as_ptr(),
                outs.len() as u32,
            )
        };
        self.plugin().check(st, op.kind().name())
    }

    /// Runs the plugin's health check, or (ABI v1 plugins) a checked 4-element vector_add.
    pub fn health_check(&self) -> Result<(), BackendError> {
        if let Some(f) = self.plugin().inner.table.health_check {
            let _g = self.guard();
            // SAFETY: live context.
            let st = unsafe { f(self.inner.ptr) };
            return self.plugin().check(st, "health_check");
        }
        let out = self.run_host(
            &Op::VectorAdd { n: 4 },
            &[&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]],
        )?;
        if out.values == [11.0, 22.0, 33.0, 44.0] {
            Ok(())
        } else {
            Err(BackendError::device(format!(
                "health check: vector_add gave {:?}",
                out.values
            )))
        }
    }

    /// Uploads host inputs, runs `op`, downloads the outputs.
    pub fn run_host(&self, op: &Op, inputs: &[&[f32]]) -> Result<HostOutput, BackendError> {
        op.validate()?;
        let want_in = op.input_elems();
        if inputs.len() != want_in.len() {
            return Err(BackendError::invalid(format!(
                "{} takes {} inputs, got {}",
                op.kind().name(),
                want_in.len(),
                inputs.len()
            )));
        }
        let mut in_bufs = Vec::with_capacity(inputs.len());
        for (i, (data, want)) in inputs.iter().zip(&want_in).enumerate() {
            if data.len() != *want {
                return Err(BackendError::invalid(format!(
                    "input {i} has {} elements, {} needs {want}",
                    data.len(),
                    op.kind().name()
                )));
            }
            let b = self.alloc(*want as u64 * 4)?;
            self.upload(&b, 0, &crate::bytes::f32_to_bytes(data))?;
            in_bufs.push(b);
        }
        let want_out = op.output_elems();
        let mut out_bufs = Vec::with_capacity(want_out.len());
        for want in &want_out {
            out_bufs.push(self.alloc(*want as u64 * 4)?);
        }
        let in_refs: Vec<&Buffer> = in_bufs.iter().collect();
        let out_refs: Vec<&Buffer> = out_bufs.iter().collect();
        self.run(op, &in_refs, &out_refs)?;
        let mut bytes = vec![0u8; want_out[0] * 4];
        self.download(&out_bufs[0], 0, &mut bytes)?;
        let values = crate::bytes::bytes_to_f32(&bytes);
        let indices = if let Some(b) = out_bufs.get(1) {
            let mut bytes = vec![0u8; want_out[1] * 4];
            self.download(b, 0, &mut bytes)?;
            crate::bytes::bytes_to_u32(&bytes)
        } else {
            Vec::new()
        };
        Ok(HostOutput { values, indices })
    }
}
