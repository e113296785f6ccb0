//! The SDK conformance suite against the cpu plugin, called through its C entry point.

use abi_sdk::host::Plugin;

fn plugin() -> Plugin {
    // SAFETY: the plugin's own entry, linked into this test binary.
    let p = unsafe { Plugin::from_entry(abi_plugin_cpu::abi_plugin_entry) }.expect("valid table");
    p.init().expect("init");
    p
}

#[test]
fn cpu_plugin_passes_conformance() {
    let p = plugin();
    assert_eq!(p.name(), "cpu");
    let devices = p.devices().expect("devices");
    assert_eq!(devices.len(), 1);
    assert!(devices[0].memory_total > 0);
    let ctx = p.create_context(0).expect("context");
    for seed in [1, 2] {
        let report = abi_sdk::testing::run_all(&ctx, seed);
        report.assert_ok();
        assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    }
}

#[test]
fn large_inputs_take_the_parallel_paths() {
    let ctx = plugin().create_context(0).expect("context");
    let n = 300_000; // above the 64 Ki threshold for threaded kernels
    for op in [
        abi_sdk::Op::VectorAdd { n },
        abi_sdk::Op::ReduceSum { n },
        abi_sdk::Op::Dot { n },
        abi_sdk::Op::Softmax {
            rows: 100,
            cols: 3000,
        },
        abi_sdk::Op::DistanceTopk {
            queries: 2,
            dim: 8,
            n: 10_000,
            k: 7,
            metric: abi_sdk::Metric::L2,
        },
    ] {
        abi_sdk::testing::check_op(&ctx, &op, 99).unwrap_or_else(|e| panic!("{op:?}: {e}"));
    }
}
