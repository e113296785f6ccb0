//! The cuda plugin: zero devices (not an error) without a driver; the full conformance suite
//! on every device where there is one.

use abi_sdk::host::Plugin;

#[test]
fn cuda_plugin_reports_devices_or_none_and_passes_conformance() {
    // SAFETY: the plugin's own entry, linked into this test binary.
    let p = unsafe { Plugin::from_entry(abi_plugin_cuda::abi_plugin_entry) }.expect("table");
    p.init().expect("init never fails, even without a driver");
    let devices = p.devices().expect("devices");
    eprintln!("cuda devices: {devices:?}");
    for (i, _) in devices.iter().enumerate() {
        let ctx = p.create_context(i as u32).expect("context");
        let report = abi_sdk::testing::run_all(&ctx, 3);
        eprintln!("skipped: {:?}", report.skipped);
        report.assert_ok();
    }
}
