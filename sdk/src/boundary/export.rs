//! Plugin-side glue: C entry points, generic over a [`Backend`], each wrapped in `catch_unwind`.

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Mutex, OnceLock};

use crate::backend::Backend;
use crate::error::{BackendError, ErrorKind};
use crate::ffi::{self, AbiBackend, AbiBuffer, AbiContext, AbiDeviceInfo, AbiOp, AbiStatus};
use crate::op::Op;

/// Where the macro keeps the one initialised instance of a backend (or why init failed).
pub trait Exported: Backend {
    /// The plugin's process-wide slot.
    fn slot() -> &'static OnceLock<Result<Self, String>>;
}

/// A descriptor that can live in a `static` (raw pointers are plain static data here).
#[repr(transparent)]
pub struct StaticDescriptor(pub AbiBackend);

// SAFETY: the descriptor holds only pointers to static NUL-terminated strings and function
// pointers, all immutable for the life of the library.
unsafe impl Sync for StaticDescriptor {}

impl StaticDescriptor {
    /// Pointer handed to the host.
    pub fn as_ptr(&'static self) -> *const AbiBackend {
        &self.0
    }
}

/// Builds the full (current version) table for `B`. `name` and `version` must end with NUL.
pub const fn descriptor<B: Exported>(
    name: &'static str,
    version: &'static str,
) -> StaticDescriptor {
    StaticDescriptor(AbiBackend {
        struct_size: size_of::<AbiBackend>() as u32,
        abi_version: ffi::ABI_VERSION,
        name: name.as_ptr() as *const c_char,
        version: version.as_ptr() as *const c_char,
        init: Some(init::<B>),
        device_count: Some(device_count::<B>),
        device_info: Some(device_info::<B>),
        context_create: Some(context_create::<B>),
        context_destroy: Some(context_destroy::<B>),
        buffer_alloc: Some(buffer_alloc::<B>),
        buffer_free: Some(buffer_free::<B>),
        buffer_upload: Some(buffer_upload::<B>),
        buffer_download: Some(buffer_download::<B>),
        run_op: Some(run_op::<B>),
        last_error: Some(last_error),
        health_check: Some(health_check::<B>),
    })
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(c));
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning errors and panics into a status code plus last-error message.
fn guard(f: impl FnOnce() -> Result<(), BackendError>) -> AbiStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ffi::ABI_OK,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.kind.status()
        }
        Err(p) => {
            set_last_error(&format!("plugin panicked: {}", panic_message(&*p)));
            ffi::ABI_ERR_PANIC
        }
    }
}

fn backend<B: Exported>() -> Result<&'static B, BackendError> {
    match B::slot().get() {
        Some(Ok(b)) => Ok(b),
        Some(Err(msg)) => Err(BackendError::new(
            ErrorKind::NotInitialized,
            format!("init failed earlier: {msg}"),
        )),
        None => Err(BackendError::new(
            ErrorKind::NotInitialized,
            "init() has not been called",
        )),
    }
}

/// A context as the glue keeps it: the backend's state behind a lock (calls on one context are
/// serialised even if a host forgets to).
struct Ctx<B: Backend> {
    inner: Mutex<B::Context>,
}

/// A buffer as the glue keeps it: its owner context and size, for validation.
struct Buf<B: Backend> {
    owner: usize,
    len: u64,
    inner: B::Buffer,
}

unsafe extern "C" fn init<B: Exported>() -> AbiStatus {
    guard(|| {
        let slot = B::slot();
        // A panic inside B::init() propagates out of get_or_init (leaving the slot empty) and is
        // caught by guard; record it so later calls report the reason.
        let r = catch_unwind(AssertUnwindSafe(|| {
            slot.get_or_init(|| B::init().map_err(|e| e.message))
        }));
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(msg)) => Err(BackendError::device(format!("init failed: {msg}"))),
            Err(p) => {
                let msg = format!("init panicked: {}", panic_message(&*p));
                let _ = slot.set(Err(msg.clone()));
                Err(BackendError::new(ErrorKind::Panic, msg))
            }
        }
    })
}

unsafe extern "C" fn device_count<B: Exported>() -> u32 {
    catch_unwind(|| match backend::<B>() {
        Ok(b) => u32::try_from(b.devices().len()).unwrap_or(u32::MAX),
        Err(e) => {
            set_last_error(&e.message);
            0
        }
    })
    .unwrap_or_else(|p| {
        set_last_error(&format!("plugin panicked: {}", panic_message(&*p)));
        0
    })
}

unsafe extern "C" fn device_info<B: Exported>(index: u32, out: *mut AbiDeviceInfo) -> AbiStatus {
    guard(|| {
        let b = backend::<B>()?;
        if out.is_null() {
            return Err(BackendError::invalid("device_info: out is null"));
        }
        // SAFETY: non-null; the host promises it points to at least `struct_size` bytes, which we
        // read first and respect below.
        let host_size = unsafe { (*out).struct_size } as usize;
        if host_size < size_of::<AbiDeviceInfo>() {
            return Err(BackendError::invalid(format!(
                "device_info: struct_size {host_size} < {}",
                size_of::<AbiDeviceInfo>()
            )));
        }
        let devices = b.devices();
        let d = devices
            .get(index as usize)
            .ok_or_else(|| BackendError::invalid(format!("no device {index}")))?;
        let mut rec = AbiDeviceInfo::empty();
        rec.kind = d.kind.code();
        rec.memory_total = d.memory_total;
        rec.memory_free = d.memory_free;
        rec.capabilities = d.capabilities;
        let mut end = d.name.len().min(ffi::DEVICE_NAME_LEN - 1);
        while !d.name.is_char_boundary(end) {
            end -= 1;
        }
        for (dst, src) in rec.name.iter_mut().zip(d.name.as_bytes()[..end].iter()) {
            *dst = *src as c_char;
        }
        // SAFETY: checked non-null and large enough above.
        unsafe { out.write(rec) };
        Ok(())
    })
}

unsafe extern "C" fn context_create<B: Exported>(
    device: u32,
    out: *mut *mut AbiContext,
) -> AbiStatus {
    guard(|| {
        let b = backend::<B>()?;
        if out.is_null() {
            return Err(BackendError::invalid("context_create: out is null"));
        }
        let ctx = b.create_context(device)?;
        let boxed = Box::new(Ctx::<B> {
            inner: Mutex::new(ctx),
        });
        // SAFETY: checked non-null.
        unsafe { out.write(Box::into_raw(boxed).cast::<AbiContext>()) };
        Ok(())
    })
}

unsafe extern "C" fn context_destroy<B: Exported>(ctx: *mut AbiContext) {
    let _ = catch_unwind(|| {
        if !ctx.is_null() {
            // SAFETY: the pointer came from context_create and the host destroys it once.
            drop(unsafe { Box::from_raw(ctx.cast::<Ctx<B>>()) });
        }
    });
}

/// # Safety
/// `ctx` must be null or come from `context_create` and be alive.
unsafe fn ctx_ref<'a, B: Backend>(ctx: *mut AbiContext) -> Result<&'a Ctx<B>, BackendError> {
    if ctx.is_null() {
        return Err(BackendError::invalid("context is null"));
    }
    // SAFETY: per the function contract.
    Ok(unsafe { &*ctx.cast::<Ctx<B>>() })
}

fn lock<B: Backend>(c: &Ctx<B>) -> std::sync::MutexGuard<'_, B::Context> {
    // A poisoned lock only means an earlier call panicked mid-way; the state is the backend's
    // own and it reported that panic already.
    c.inner.lock().unwrap_or_else(|p| p.into_inner())
}

unsafe extern "C" fn buffer_alloc<B: Exported>(
    ctx: *mut AbiContext,
    bytes: u64,
    out: *mut *mut AbiBuffer,
) -> AbiStatus {
    guard(|| {
        let b = backend::<B>()?;
        // SAFETY: host contract (live context).
        let c = unsafe { ctx_ref::<B>(ctx) }?;
        if out.is_null() {
            return Err(BackendError::invalid("buffer_alloc: out is null"));
        }
        if bytes == 0 {
            return Err(BackendError::invalid("buffer_alloc: zero bytes"));
        }
        let inner = b.alloc(&mut lock(c), bytes)?;
        let boxed = Box::new(Buf::<B> {
            owner: ctx as usize,
            len: bytes,
            inner,
        });
        // SAFETY: checked non-null.
        unsafe { out.write(Box::into_raw(boxed).cast::<AbiBuffer>()) };
        Ok(())
    })
}

unsafe extern "C" fn buffer_free<B: Exported>(ctx: *mut AbiContext, buf: *mut AbiBuffer) {
    let _ = catch_unwind(|| {
        if buf.is_null() || ctx.is_null() {
            return;
        }
        // SAFETY: the host hands back a live context, serialising with other calls through it.
        let c = unsafe { &*ctx.cast::<Ctx<B>>() };
        let _g = lock(c);
        // SAFETY: the buffer came from buffer_alloc and is freed once.
        drop(unsafe { Box::from_raw(buf.cast::<Buf<B>>()) });
    });
}

fn check_range(len: u64, offset: u64, n: u64) -> Result<(), BackendError> {
    match offset.checked_add(n) {
        Some(end) if end <= len => Ok(()),
        _ => Err(BackendError::invalid(format!(
            "range {offset}..{offset}+{n} outside buffer of {len} bytes"
        ))),
    }
}

unsafe extern "C" fn buffer_upload<B: Exported>(
    ctx: *mut AbiContext,
    buf: *mut AbiBuffer,
    offset: u64,
    src: *const u8,
    len: u64,
) -> AbiStatus {
    guard(|| {
        let b = backend::<B>()?;
        // SAFETY: host contract (live context).
        let c = unsafe { ctx_ref::<B>(ctx) }?;
        if buf.is_null() || (src.is_null() && len > 0) {
            return Err(BackendError::invalid("buffer_upload: null pointer"));
        }
        let mut guard = lock(c);
        // SAFETY: live buffer; exclusive because all access goes through the context lock held.
        let bufr = unsafe { &mut *buf.cast::<Buf<B>>() };
        if bufr.owner != ctx as usize {
            return Err(BackendError::invalid("buffer belongs to another context"));
        }
        check_range(bufr.len, offset, len)?;
        let n = usize::try_from(len).map_err(|_| BackendError::invalid("len too large"))?;
        let data = if n == 0 {
            &[][..]
        } else {
            // SAFETY: the host promises `src` points to `len` readable bytes.
            unsafe { std::slice::from_raw_parts(src, n) }
        };
        b.upload(&mut guard, &mut bufr.inner, offset, data)
    })
}

unsafe extern "C" fn buffer_download<B: Exported>(
    ctx: *mut AbiContext,
    buf: *const AbiBuffer,
    offset: u64,
    dst: *mut u8,
    len: u64,
) -> AbiStatus {
    guard(|| {
        let b = backend::<B>()?;
        // SAFETY: host contract (live context).
        let c = unsafe { ctx_ref::<B>(ctx) }?;
        if buf.is_null() || (dst.is_null() && len > 0) {
            return Err(BackendError::invalid("buffer_download: null pointer"));
        }
        let mut guard = lock(c);
        // SAFETY: live buffer, read under the context lock.
        let bufr = unsafe { &*buf.cast::<Buf<B>>() };
        if bufr.owner != ctx as usize {
            return Err(BackendError::invalid("buffer belongs to another context"));
        }
        check_range(bufr.len, offset, len)?;
        let n = usize::try_from(len).map_err(|_| BackendError::invalid("len too large"))?;
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the host promises `dst` points to `len` writable bytes not aliasing the buffer.
        let out = unsafe { std::slice::from_raw_parts_mut(dst, n) };
        b.download(&mut guard, &bufr.inner, offset, out)
    })
}

unsafe extern "C" fn run_op<B: Exported>(
    ctx: *mut AbiContext,
    op: *const AbiOp,
    inputs: *const *mut AbiBuffer,
    n_inputs: u32,
    outputs: *const *mut AbiBuffer,
    n_outputs: u32,
) -> AbiStatus {
    guard(|| {
        let b = backend::<B>()?;
        // SAFETY: host contract (live context).
        let c = unsafe { ctx_ref::<B>(ctx) }?;
        if op.is_null() {
            return Err(BackendError::invalid("run_op: op is null"));
        }
        // SAFETY: non-null; we read the host's struct_size first and require the full struct.
        let size = unsafe { (*op).struct_size } as usize;
        if size < size_of::<AbiOp>() {
            return Err(BackendError::invalid(format!(
                "abi_op.struct_size {size} < {}",
                size_of::<AbiOp>()
            )));
        }
        // SAFETY: large enough per the check above.
        let parsed = Op::from_abi(unsafe { &*op })?;
        let want_in = parsed.input_elems();
        let want_out = parsed.output_elems();
        if n_inputs as usize != want_in.len() || n_outputs as usize != want_out.len() {
            return Err(BackendError::invalid(format!(
                "{} takes {} inputs and {} outputs, got {n_inputs} and {n_outputs}",
                parsed.kind().name(),
                want_in.len(),
                want_out.len()
            )));
        }
        if inputs.is_null() || outputs.is_null() {
            return Err(BackendError::invalid("run_op: null buffer array"));
        }
        // SAFETY: the host passes arrays of the stated lengths.
        let ins = unsafe { std::slice::from_raw_parts(inputs, want_in.len()) };
        // SAFETY: as above.
        let outs = unsafe { std::slice::from_raw_parts(outputs, want_out.len()) };
        for (i, p) in outs.iter().enumerate() {
            if p.is_null() {
                return Err(BackendError::invalid(format!("output {i} is null")));
            }
            if outs[..i].contains(p) || ins.contains(p) {
                return Err(BackendError::invalid(format!(
                    "output {i} aliases another buffer of the call"
                )));
            }
        }
        if ins.iter().any(|p| p.is_null()) {
            return Err(BackendError::invalid("an input buffer is null"));
        }
        let mut guard = lock(c);
        let mut in_refs: Vec<&B::Buffer> = Vec::with_capacity(ins.len());
        for (i, (&p, elems)) in ins.iter().zip(&want_in).enumerate() {
            // SAFETY: live buffers (host contract), only read here, under the context lock.
            let bufr = unsafe { &*p.cast::<Buf<B>>() };
            check_buf::<B>(bufr, ctx, *elems, "input", i)?;
            in_refs.push(&bufr.inner);
        }
        let mut out_refs: Vec<&mut B::Buffer> = Vec::with_capacity(outs.len());
        for (i, (&p, elems)) in outs.iter().zip(&want_out).enumerate() {
            // SAFETY: live buffers, checked above to be distinct from each other and from every
            // input, so this &mut is unique; accessed under the context lock.
            let bufr = unsafe { &mut *p.cast::<Buf<B>>() };
            check_buf::<B>(bufr, ctx, *elems, "output", i)?;
            out_refs.push(&mut bufr.inner);
        }
        b.run(&mut guard, &parsed, &in_refs, &mut out_refs)
    })
}

fn check_buf<B: Backend>(
    bufr: &Buf<B>,
    ctx: *mut AbiContext,
    elems: usize,
    what: &str,
    i: usize,
) -> Result<(), BackendError> {
    if bufr.owner != ctx as usize {
        return Err(BackendError::invalid(format!(
            "{what} {i} belongs to another context"
        )));
    }
    let need = elems as u64 * 4;
    if bufr.len < need {
        return Err(BackendError::invalid(format!(
            "{what} {i} holds {} bytes, op needs {need}",
            bufr.len
        )));
    }
    Ok(())
}

unsafe extern "C" fn health_check<B: Exported>(ctx: *mut AbiContext) -> AbiStatus {
    guard(|| {
        let b = backend::<B>()?;
        // SAFETY: host contract (live context).
        let c = unsafe { ctx_ref::<B>(ctx) }?;
        b.health_check(&mut lock(c))
    })
}

unsafe extern "C" fn last_error(buf: *mut c_char, cap: usize) -> usize {
    catch_unwind(|| {
        LAST_ERROR.with(|e| {
            let e = e.borrow();
            let Some(msg) = e.as_ref() else { return 0 };
            let bytes = msg.as_bytes();
            if !buf.is_null() && cap > 0 {
                let n = bytes.len().min(cap - 1);
                // SAFETY: the host promises `cap` writable bytes at `buf`; we write n + 1 <= cap.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            bytes.len()
        })
    })
    .unwrap_or(0)
}
