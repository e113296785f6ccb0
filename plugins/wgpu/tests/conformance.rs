//! The SDK conformance suite on every wgpu adapter (lavapipe in CI).
//!
//! Needs a Vulkan driver: `apt-get install -y mesa-vulkan-drivers libvulkan1`. With no adapter
//! the test fails unless `ABI_WGPU_ALLOW_NO_ADAPTER=1` says that is expected.

use abi_sdk::host::Plugin;

#[test]
fn wgpu_plugin_passes_conformance_on_every_adapter() {
    // SAFETY: the plugin's own entry, linked into this test binary.
    let p = unsafe { Plugin::from_entry(abi_plugin_wgpu::abi_plugin_entry) }.expect("table");
    p.init().expect("init");
    let devices = p.devices().expect("devices");
    if devices.is_empty() {
        assert!(
            std::env::var("ABI_WGPU_ALLOW_NO_ADAPTER").is_ok_and(|v| v == "1"),
            "no wgpu adapter: install mesa-vulkan-drivers (lavapipe) or set ABI_WGPU_ALLOW_NO_ADAPTER=1"
        );
        return;
    }
    for (i, d) in devices.iter().enumerate() {
        eprintln!("wgpu device {i}: {} ({})", d.name, d.kind.name());
        let ctx = p.create_context(i as u32).expect("context");
        let report = abi_sdk::testing::run_all(&ctx, 11);
        report.assert_ok();
        assert!(report.skipped.is_empty());
    }
}
