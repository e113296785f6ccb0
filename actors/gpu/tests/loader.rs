//! Loader tests with real files: a C plugin compiled from the header alone, real broken
//! libraries (truncated, wrong version, missing symbol, not a library, panicking init), pins,
//! required plugins and duplicate backends.

use std::path::{Path, PathBuf};
use std::process::Command;

use abi_gpu::{LoadError, PluginConfig, PluginError, inspect, load_all, load_plugin};
use abi_sdk::ErrorKind;
use abi_sdk::host::TableError;

/// target/<profile>/deps, where cargo puts the cdylibs of our dev-dependencies.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent().expect("deps dir").to_path_buf()
}

fn built_lib(stem: &str) -> PathBuf {
    let name = format!(
        "{}{stem}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let deps = deps_dir();
    for dir in [
        deps.clone(),
        deps.parent().expect("profile dir").to_path_buf(),
    ] {
        let p = dir.join(&name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} not built in {}", deps.display());
}

/// Compiles tests/fixtures/c_plugin.c with the system C compiler against the SDK header only.
fn compile_c(dir: &Path, file: &str, defines: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/c_plugin.c");
    let out = dir.join(file);
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-shared", "-fPIC", "-std=c11", "-Wall", "-Werror", "-I"])
        .arg(abi_sdk::C_HEADER_DIR)
        .arg("-o")
        .arg(&out)
        .arg(&src);
    for d in defines {
        cmd.arg(format!("-D{d}"));
    }
    let st = cmd.status().expect("run the system C compiler (cc)");
    assert!(st.success(), "cc failed for {file}");
    out
}

fn err_of(r: Result<abi_gpu::LoadedPlugin, PluginError>) -> PluginError {
    match r {
        Ok(lp) => panic!("expected a load failure, loaded {:?}", lp.plugin),
        Err(e) => e,
    }
}

#[test]
fn c_plugin_built_from_header_loads_and_runs_vector_add() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let so = compile_c(tmp.path(), "libc_ref_ok.so", &[]);
    let lp = load_plugin(&so, None).expect("C plugin loads");
    assert_eq!(lp.plugin.name(), "c-ref");
    assert_eq!(lp.plugin.abi_version(), abi_sdk::ffi::ABI_VERSION);
    assert_eq!(lp.devices.len(), 1);
    assert_eq!(lp.devices[0].name, "c reference device");
    let ctx = lp.plugin.create_context(0).expect("context");
    let out = ctx
        .run_host(
            &abi_sdk::Op::VectorAdd { n: 3 },
            &[&[1.0, 2.0, 3.0], &[0.5, 0.25, -3.0]],
        )
        .expect("vector_add");
    assert_eq!(out.values, vec![1.5, 2.25, 0.0]);
    // The conformance suite: vector_add at every size, the error paths; other ops skipped.
    let report = abi_sdk::testing::run_all(&ctx, 5);
    report.assert_ok();
    assert_eq!(report.skipped.len(), 5, "{:?}", report.skipped);
    // An op it does not implement is a clean Unsupported error with the plugin's message.
    let err = ctx
        .run_host(&abi_sdk::Op::Dot { n: 1 }, &[&[1.0], &[1.0]])
        .expect_err("dot unsupported");
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert_eq!(err.message, "only vector_add");
}

#[test]
fn header_sizes_match_rust_types() {
    // The C compiler's view of the layout must equal the Rust one.
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path().join("sizes.c");
    std::fs::write(
        &src,
        r#"#include <stdio.h>
#include "abi_plugin.h"
int main(void) {
  printf("%zu %zu %zu %zu %zu %zu %zu\n", sizeof(abi_backend), (size_t)ABI_BACKEND_V1_SIZE,
         sizeof(abi_device_info), sizeof(abi_op), offsetof(abi_backend, run_op),
         offsetof(abi_device_info, memory_total), offsetof(abi_op, top_k));
  return 0;
}"#,
    )
    .expect("write");
    let exe = tmp.path().join("sizes");
    let st = Command::new("cc")
        .arg("-I")
        .arg(abi_sdk::C_HEADER_DIR)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success());
    let out = Command::new(&exe).output().expect("run sizes");
    let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
    use abi_sdk::ffi::*;
    let want = format!(
        "{} {} {} {} {} {} {}",
        size_of::<AbiBackend>(),
        ABI_BACKEND_V1_SIZE,
        size_of::<AbiDeviceInfo>(),
        size_of::<AbiOp>(),
        std::mem::offset_of!(AbiBackend, run_op),
        std::mem::offset_of!(AbiDeviceInfo, memory_total),
        std::mem::offset_of!(AbiOp, top_k),
    );
    assert_eq!(got, want);
}

#[test]
fn older_v1_plugin_loads_by_struct_size() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let so = compile_c(tmp.path(), "libc_ref_v1.so", &["ABI_TEST_V1"]);
    let lp = load_plugin(&so, None).expect("v1 plugin loads");
    assert_eq!(lp.plugin.abi_version(), 1);
    assert_eq!(
        lp.plugin.struct_size() as usize,
        abi_sdk::ffi::ABI_BACKEND_V1_SIZE
    );
    assert!(!lp.plugin.has_health_check());
    let ctx = lp.plugin.create_context(0).expect("context");
    ctx.health_check()
        .expect("host falls back to a checked vector_add");
}

#[test]
fn newer_abi_version_is_refused_with_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let so = compile_c(tmp.path(), "libc_ref_v99.so", &["ABI_TEST_VERSION=99u"]);
    let err = err_of(load_plugin(&so, None));
    assert!(
        matches!(
            err,
            PluginError::Table(TableError::Version { found: 99, .. })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("abi_version 99"), "{err}");
}

#[test]
fn v2_claim_with_v1_size_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let so = compile_c(
        tmp.path(),
        "libc_ref_short.so",
        &["ABI_TEST_V1", "ABI_TEST_VERSION=2u"],
    );
    let err = err_of(load_plugin(&so, None));
    assert!(
        matches!(
            err,
            PluginError::Table(TableError::StructSize { version: 2, .. })
        ),
        "{err:?}"
    );
}

#[test]
fn missing_entry_symbol_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let so = compile_c(tmp.path(), "libc_ref_noentry.so", &["ABI_TEST_NO_ENTRY"]);
    let err = err_of(load_plugin(&so, None));
    assert!(matches!(err, PluginError::MissingSymbol(_)), "{err:?}");
    assert!(err.to_string().contains("abi_plugin_entry"), "{err}");
}

#[test]
fn truncated_library_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bytes = std::fs::read(built_lib("abi_plugin_cpu")).expect("read cpu plugin");
    let so = tmp.path().join("libabi_plugin_cpu.so");
    std::fs::write(&so, &bytes[..bytes.len() / 3]).expect("write truncated");
    let err = err_of(load_plugin(&so, None));
    assert!(matches!(err, PluginError::Corrupt(_)), "{err:?}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn a_text_file_named_like_a_library_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let so = tmp.path().join("libnot_a_library.so");
    std::fs::write(&so, "this is not an ELF file\n").expect("write");
    let err = err_of(load_plugin(&so, None));
    assert!(matches!(err, PluginError::Corrupt(_)), "{err:?}");
}

#[test]
fn panicking_init_is_reported_not_propagated() {
    let so = built_lib("abi_test_plugin_panic_init");
    let err = err_of(load_plugin(&so, None));
    match &err {
        PluginError::Init(e) => {
            assert_eq!(e.kind, ErrorKind::Panic);
            assert!(e.message.contains("fixture: init always panics"), "{e}");
        }
        other => panic!("expected Init error, got {other:?}"),
    }
}

#[test]
fn sha256_pins_are_enforced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let so = compile_c(tmp.path(), "libc_ref_pinned.so", &[]);
    let ok = load_plugin(&so, None).expect("unpinned load");
    let good = format!("sha256:{}", ok.sha256);
    load_plugin(&so, Some(&good)).expect("correct pin loads");
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        err_of(load_plugin(&so, Some(&wrong))),
        PluginError::PinMismatch { .. }
    ));
    assert!(matches!(
        err_of(load_plugin(&so, Some("sha256:xyz"))),
        PluginError::BadPin(_)
    ));
}

#[test]
fn load_all_keeps_good_plugins_and_reports_bad_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    compile_c(dir, "libc_ref.so", &[]);
    compile_c(dir, "libc_ref_v99.so", &["ABI_TEST_VERSION=99u"]);
    let cpu = std::fs::read(built_lib("abi_plugin_cpu")).expect("cpu plugin");
    std::fs::write(dir.join("libabi_plugin_cpu.so"), &cpu).expect("copy cpu");
    std::fs::write(dir.join("libabi_plugin_cpu_copy.so"), &cpu).expect("copy cpu again");
    std::fs::write(dir.join("libabi_plugin_cuda.so"), &cpu[..4096]).expect("truncated");
    std::fs::write(dir.join("README.txt"), "not a candidate").expect("txt");

    let cfg = PluginConfig {
        dirs: vec![dir.to_path_buf()],
        require: vec!["cpu".into()],
        ..Default::default()
    };
    let report = load_all(&cfg).expect("cpu is present");
    let mut names: Vec<&str> = report.loaded.iter().map(|l| l.plugin.name()).collect();
    names.sort();
    assert_eq!(names, vec!["c-ref", "cpu"]);
    assert_eq!(report.skipped.len(), 3, "{:?}", report.skipped);
    assert!(
        report
            .skipped
            .iter()
            .any(|s| matches!(s.reason, PluginError::Duplicate { .. }))
    );

    // A required backend that is only present as a broken file fails start-up with the reason.
    let cfg = PluginConfig {
        dirs: vec![dir.to_path_buf()],
        require: vec!["cpu".into(), "cuda".into()],
        ..Default::default()
    };
    match load_all(&cfg) {
        Err(LoadError::RequiredMissing { name, reason }) => {
            assert_eq!(name, "cuda");
            assert!(reason.contains("corrupt library"), "{reason}");
        }
        other => panic!("expected RequiredMissing, got {other:?}"),
    }
    // A required backend that is nowhere says where it looked.
    let cfg = PluginConfig {
        dirs: vec![dir.to_path_buf()],
        require: vec!["wgpu".into()],
        ..Default::default()
    };
    let err = load_all(&cfg).expect_err("wgpu absent");
    assert!(err.to_string().contains("no plugin provides it"), "{err}");
}

#[test]
fn inspect_prints_descriptor_and_devices() {
    let text = inspect(&built_lib("abi_plugin_cpu")).expect("inspect");
    for needle in [
        "backend:      cpu",
        "abi_version:  2",
        "struct_size:",
        "[0] host cpu",
        "matmul",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn plugin_config_parses_from_toml() {
    let cfg: PluginConfig = toml::from_str(
        r#"
dirs = ["/usr/lib/abi/plugins"]
require = ["cpu"]
pins = { "libabi_plugin_cuda.so" = "sha256:00" }
"#,
    )
    .expect("parse");
    assert_eq!(cfg.require, vec!["cpu"]);
    assert_eq!(cfg.pins.len(), 1);
    assert!(toml::from_str::<PluginConfig>("dirz = []").is_err());
}
