//! The safe trait a Rust plugin implements; [`crate::export_backend!`] turns it into the C table.

use crate::device::DeviceInfo;
use crate::error::BackendError;
use crate::op::Op;

/// A hardware backend implemented in safe Rust.
///
/// The SDK's glue validates every argument before calling in: pointers are non-null, the op's
/// dimensions are valid, each buffer is large enough for the op (`Op::input_elems` /
/// `Op::output_elems` times 4 bytes) and belongs to the context, and upload/download ranges lie
/// inside the buffer. Calls on one context are serialised by the glue, and panics are caught.
pub trait Backend: Send + Sync + Sized + 'static {
    /// Per-device state (queues, handles).
    type Context: Send;
    /// A device allocation.
    type Buffer: Send;

    /// Called once when the host initialises the plugin.
    fn init() -> Result<Self, BackendError>;

    /// The devices this backend drives (empty is valid, e.g. no driver present).
    fn devices(&self) -> Vec<DeviceInfo>;

    /// Opens a context on device `device` (an index into [`Backend::devices`]).
    fn create_context(&self, device: u32) -> Result<Self::Context, BackendError>;

    /// Allocates `bytes` bytes (contents unspecified until written).
    fn alloc(&self, ctx: &mut Self::Context, bytes: u64) -> Result<Self::Buffer, BackendError>;

    /// Writes `data` at byte `offset` (range already checked).
    fn upload(
        &self,
        ctx: &mut Self::Context,
        buf: &mut Self::Buffer,
        offset: u64,
        data: &[u8],
    ) -> Result<(), BackendError>;

    /// Reads `out.len()` bytes at byte `offset` (range already checked).
    fn download(
        &self,
        ctx: &mut Self::Context,
        buf: &Self::Buffer,
        offset: u64,
        out: &mut [u8],
    ) -> Result<(), BackendError>;

    /// Runs `op`; inputs and outputs are in the order the op defines.
    fn run(
        &self,
        ctx: &mut Self::Context,
        op: &Op,
        inputs: &[&Self::Buffer],
        outputs: &mut [&mut Self::Buffer],
    ) -> Result<(), BackendError>;

    /// Proves the device works with a tiny real computation: by default a 4-element vector_add
    /// whose result is checked.
    fn health_check(&self, ctx: &mut Self::Context) -> Result<(), BackendError> {
        let a: [f32; 4] = [1.0, 2.0, 3.0, 4.0];
        let b: [f32; 4] = [10.0, 20.0, 30.0, 40.0];
        let mut ba = self.alloc(ctx, 16)?;
        let mut bb = self.alloc(ctx, 16)?;
        let mut bc = self.alloc(ctx, 16)?;
        self.upload(ctx, &mut ba, 0, &crate::bytes::f32_to_bytes(&a))?;
        self.upload(ctx, &mut bb, 0, &crate::bytes::f32_to_bytes(&b))?;
        self.run(ctx, &Op::VectorAdd { n: 4 }, &[&ba, &bb], &mut [&mut bc])?;
        let mut out = [0u8; 16];
        self.download(ctx, &bc, 0, &mut out)?;
        let got = crate::bytes::bytes_to_f32(&out);
        if got == [11.0, 22.0, 33.0, 44.0] {
            Ok(())
        } else {
            Err(BackendError::device(format!(
                "health check: vector_add gave {got:?}, expected [11, 22, 33, 44]"
            )))
        }
    }
}
