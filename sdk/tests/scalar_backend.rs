//! The SDK's glue and conformance suite, exercised through a scalar in-process backend that is
//! exported with `export_backend!` and loaded back through `host::Plugin` (the same C path a
//! loaded .so takes).

use abi_sdk::bytes::{bytes_to_f32, f32_to_bytes, u32_to_bytes};
use abi_sdk::host::Plugin;
use abi_sdk::{Backend, BackendError, DeviceInfo, DeviceKind, ErrorKind, Op, OpKind, reference};

struct Scalar;

impl Backend for Scalar {
    type Context = ();
    type Buffer = Vec<u8>;

    fn init() -> Result<Self, BackendError> {
        Ok(Scalar)
    }

    fn devices(&self) -> Vec<DeviceInfo> {
        vec![DeviceInfo {
            name: "scalar reference".into(),
            kind: DeviceKind::Cpu,
            memory_total: 1 << 30,
            memory_free: 1 << 30,
            capabilities: OpKind::all_bits(),
        }]
    }

    fn create_context(&self, device: u32) -> Result<(), BackendError> {
        if device == 0 {
            Ok(())
        } else {
            Err(BackendError::invalid(format!("no device {device}")))
        }
    }

    fn alloc(&self, _: &mut (), bytes: u64) -> Result<Vec<u8>, BackendError> {
        Ok(vec![0; bytes as usize])
    }

    fn upload(&self, _: &mut (), b: &mut Vec<u8>, off: u64, d: &[u8]) -> Result<(), BackendError> {
        b[off as usize..off as usize + d.len()].copy_from_slice(d);
        Ok(())
    }

    fn download(
        &self,
        _: &mut (),
        b: &Vec<u8>,
        off: u64,
        o: &mut [u8],
    ) -> Result<(), BackendError> {
        o.copy_from_slice(&b[off as usize..off as usize + o.len()]);
        Ok(())
    }

    fn run(
        &self,
        _: &mut (),
        op: &Op,
        inputs: &[&Vec<u8>],
        outputs: &mut [&mut Vec<u8>],
    ) -> Result<(), BackendError> {
        let ins: Vec<Vec<f32>> = inputs
            .iter()
            .zip(op.input_elems())
            .map(|(b, n)| bytes_to_f32(&b[..n * 4]))
            .collect();
        let (first, second): (Vec<f32>, Option<Vec<u32>>) = match *op {
            Op::VectorAdd { .. } => (reference::vector_add(&ins[0], &ins[1]), None),
            Op::Matmul { m, k, n } => (reference::matmul(&ins[0], &ins[1], m, k, n), None),
            Op::ReduceSum { .. } => (vec![reference::reduce_sum(&ins[0])], None),
            Op::Dot { .. } => (vec![reference::dot(&ins[0], &ins[1])], None),
            Op::Softmax { rows, cols } => (reference::softmax(&ins[0], rows, cols), None),
            Op::DistanceTopk { dim, k, metric, .. } => {
                if dim == 13 {
                    panic!("deliberate panic for the test");
                }
                let (s, i) = reference::distance_topk(&ins[0], &ins[1], dim, k, metric);
                (s, Some(i))
            }
        };
        let b = f32_to_bytes(&first);
        outputs[0][..b.len()].copy_from_slice(&b);
        if let Some(i) = second {
            let b = u32_to_bytes(&i);
            outputs[1][..b.len()].copy_from_slice(&b);
        }
        Ok(())
    }
}

abi_sdk::export_backend!(Scalar, name = "scalar", version = "9.9.9");

fn plugin() -> Plugin {
    // SAFETY: the entry is this test binary's own, statically linked.
    let p = unsafe { Plugin::from_entry(abi_plugin_entry) }.expect("valid table");
    p.init().expect("init");
    p
}

#[test]
fn descriptor_fields_round_trip() {
    let p = plugin();
    assert_eq!(p.name(), "scalar");
    assert_eq!(p.version(), "9.9.9");
    assert_eq!(p.abi_version(), abi_sdk::ffi::ABI_VERSION);
    assert_eq!(
        p.struct_size() as usize,
        size_of::<abi_sdk::ffi::AbiBackend>()
    );
    assert!(p.has_health_check());
    let d = p.devices().expect("devices");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].name, "scalar reference");
    assert_eq!(d[0].op_names().len(), 6);
}

#[test]
fn scalar_backend_passes_conformance() {
    let ctx = plugin().create_context(0).expect("context");
    let report = abi_sdk::testing::run_all(&ctx, 42);
    report.assert_ok();
    assert!(report.skipped.is_empty());
}

#[test]
fn panic_in_op_becomes_error_code_with_message() {
    let ctx = plugin().create_context(0).expect("context");
    let op = Op::DistanceTopk {
        queries: 1,
        dim: 13,
        n: 2,
        k: 1,
        metric: abi_sdk::Metric::Dot,
    };
    let err = ctx
        .run_host(&op, &[&[0.0; 13], &[0.0; 26]])
        .expect_err("must fail");
    assert_eq!(err.kind, ErrorKind::Panic);
    assert!(err.message.contains("deliberate panic"), "{}", err.message);
    // The context keeps working after a caught panic.
    let ok = ctx
        .run_host(&Op::VectorAdd { n: 1 }, &[&[1.0], &[2.0]])
        .expect("works after panic");
    assert_eq!(ok.values, vec![3.0]);
}

#[test]
fn bad_device_index_is_a_clear_error() {
    let err = plugin().create_context(7).expect_err("no device 7");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("no device 7"));
}

#[test]
fn buffers_from_another_context_are_refused() {
    let p = plugin();
    let a = p.create_context(0).expect("ctx a");
    let b = p.create_context(0).expect("ctx b");
    let buf = b.alloc(16).expect("alloc");
    let err = a.upload(&buf, 0, &[0; 4]).expect_err("foreign buffer");
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}
