//! The device manager actor on a real node with real plugins (the cpu cdylib and a C plugin).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use abi_gpu::{ManagerConfig, PluginConfig, child_spec_with};
use abi_protocol::gpu::{Compute, ComputeOp, GpuError, Lease, ListDevices, ListLeases, Release};
use abi_protocol::{NodeId, health};
use abi_runtime::{Call, ChildSpec, Node, Started, Strategy, SupervisorSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef};

const T: Duration = Duration::from_secs(10);

fn plugin_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let deps = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("deps")
        .to_path_buf();
    let cpu = ["libabi_plugin_cpu.so"]
        .iter()
        .map(|n| deps.join(n))
        .find(|p| p.exists())
        .or_else(|| {
            let p = deps.parent().map(|d| d.join("libabi_plugin_cpu.so"))?;
            p.exists().then_some(p)
        })
        .expect("cpu plugin cdylib built");
    std::fs::copy(&cpu, tmp.path().join("libabi_plugin_cpu.so")).expect("copy cpu plugin");
    compile_c(tmp.path());
    tmp
}

fn compile_c(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/c_plugin.c");
    let out = dir.join("libc_ref.so");
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-std=c11", "-I"])
        .arg(abi_sdk::C_HEADER_DIR)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("cc");
    assert!(st.success());
    out
}

/// A trivial addressable actor that plays a lease holder.
struct Holder;
impl Actor for Holder {
    type Msg = Call<health::Check>;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        call: Call<health::Check>,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        call.reply(health::Report {
            ready: true,
            detail: "holder".into(),
        });
        Ok(())
    }
}

fn holder_spec() -> ChildSpec {
    ChildSpec::worker("holder", |ctx| async move {
        let r = ctx.spawn(Holder, ()).await?;
        Ok(Started::new(r).serves::<health::Check>())
    })
    .restart(abi_runtime::Restart::Temporary)
}

fn config(dir: &Path, require: &[&str]) -> ManagerConfig {
    let mut cfg = ManagerConfig::new(PluginConfig {
        dirs: vec![dir.to_path_buf()],
        require: require.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
    cfg.sweep_interval = Duration::from_millis(50);
    cfg.health_interval = Duration::from_millis(200);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_compute_fallback_leases_and_health() {
    let dir = plugin_dir();
    let node = Node::new(NodeId::new("gpu-test").expect("id"), 1);
    let root = node
        .start_root(
            SupervisorSpec::new(Strategy::OneForOne)
                .child(child_spec_with(config(dir.path(), &["cpu"])))
                .child(holder_spec()),
        )
        .await
        .expect("root starts");
    let gpu = node.path("gpu").expect("path");

    // Devices: the cpu device and the C plugin's device, both health-checked.
    let devices = node.ask(&gpu, ListDevices, T).await.expect("list");
    let ids: Vec<&str> = devices.iter().map(|d| d.id.as_str()).collect();
    assert!(
        ids.contains(&"cpu:0") && ids.contains(&"c-ref:0"),
        "{ids:?}"
    );
    assert!(devices.iter().all(|d| d.healthy), "{devices:?}");
    let cpu = devices.iter().find(|d| d.backend == "cpu").expect("cpu");
    assert_eq!(cpu.kind, "cpu");
    assert_eq!(cpu.ops.len(), 6);

    // Compute on cpu.
    let r = node
        .ask(
            &gpu,
            Compute {
                backend: Some("cpu".into()),
                device: None,
                op: ComputeOp::Matmul {
                    m: 2,
                    k: 3,
                    n: 2,
                    a: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
                    b: vec![7.0, 8.0, 9.0, 10.0, 11.0, 12.0],
                },
            },
            T,
        )
        .await
        .expect("ask")
        .expect("matmul");
    assert_eq!(r.values, vec![58.0, 64.0, 139.0, 154.0]);
    assert_eq!((r.backend.as_str(), r.fallback), ("cpu", false));

    // The C plugin runs vector_add itself, but not dot: that falls back to cpu.
    let add = ComputeOp::VectorAdd {
        a: vec![1.0, 2.0],
        b: vec![3.0, 4.0],
    };
    let r = node
        .ask(
            &gpu,
            Compute {
                backend: Some("c-ref".into()),
                device: None,
                op: add.clone(),
            },
            T,
        )
        .await
        .expect("ask")
        .expect("vector_add");
    assert_eq!(
        (r.backend.as_str(), r.fallback, r.values),
        ("c-ref", false, vec![4.0, 6.0])
    );
    let r = node
        .ask(
            &gpu,
            Compute {
                backend: Some("c-ref".into()),
                device: None,
                op: ComputeOp::Dot {
                    a: vec![1.0, 2.0],
                    b: vec![3.0, 4.0],
                },
            },
            T,
        )
        .await
        .expect("ask")
        .expect("dot");
    assert_eq!(
        (r.backend.as_str(), r.fallback, r.values),
        ("cpu", true, vec![11.0])
    );

    // An absent backend falls back to cpu and says so.
    let r = node
        .ask(
            &gpu,
            Compute {
                backend: Some("wgpu".into()),
                device: None,
                op: add,
            },
            T,
        )
        .await
        .expect("ask")
        .expect("fallback");
    assert_eq!((r.backend.as_str(), r.fallback), ("cpu", true));

    // distance_topk with indices.
    let r = node
        .ask(
            &gpu,
            Compute {
                backend: None,
                device: None,
                op: ComputeOp::DistanceTopk {
                    dim: 2,
                    k: 2,
                    metric: "l2".into(),
                    queries: vec![0.0, 0.0],
                    vectors: vec![5.0, 5.0, 1.0, 0.0, 0.0, 2.0],
                },
            },
            T,
        )
        .await
        .expect("ask")
        .expect("topk");
    assert_eq!(r.indices, vec![1, 2]);
    assert_eq!(r.values, vec![1.0, 4.0]);

    // Bad shapes are refused before any backend sees them.
    let err = node
        .ask(
            &gpu,
            Compute {
                backend: None,
                device: None,
                op: ComputeOp::Softmax {
                    rows: 2,
                    cols: 2,
                    x: vec![1.0],
                },
            },
            T,
        )
        .await
        .expect("ask")
        .expect_err("bad shape");
    assert!(matches!(err, GpuError::InvalidInput(_)), "{err:?}");

    // Leases: accounting, too-large requests, explicit release.
    let holder = node.path("holder").expect("holder path");
    let grant = node
        .ask(
            &gpu,
            Lease {
                holder: holder.clone(),
                backend: Some("cpu".into()),
                device: Some(0),
                memory: 1 << 20,
            },
            T,
        )
        .await
        .expect("ask")
        .expect("lease");
    assert_eq!(grant.device_id, "cpu:0");
    let devices = node.ask(&gpu, ListDevices, T).await.expect("list");
    let cpu = devices.iter().find(|d| d.backend == "cpu").expect("cpu");
    assert_eq!(cpu.memory_leased, 1 << 20);
    let too_big = node
        .ask(
            &gpu,
            Lease {
                holder: holder.clone(),
                backend: Some("cpu".into()),
                device: None,
                memory: u64::MAX,
            },
            T,
        )
        .await
        .expect("ask");
    assert!(
        matches!(too_big, Err(GpuError::InsufficientMemory { .. })),
        "{too_big:?}"
    );
    let no_such = node
        .ask(
            &gpu,
            Lease {
                holder: holder.clone(),
                backend: Some("cpu".into()),
                device: Some(7),
                memory: 1,
            },
            T,
        )
        .await
        .expect("ask");
    assert!(
        matches!(&no_such, Err(GpuError::NoDevice(m)) if m.contains("index 7")),
        "{no_such:?}"
    );
    node.ask(
        &gpu,
        Release {
            lease_id: grant.lease_id,
        },
        T,
    )
    .await
    .expect("ask")
    .expect("release");
    let again = node
        .ask(
            &gpu,
            Release {
                lease_id: grant.lease_id,
            },
            T,
        )
        .await
        .expect("ask");
    assert_eq!(again, Err(GpuError::UnknownLease(grant.lease_id)));

    // A lease whose holder dies is released by the sweep.
    let grant = node
        .ask(
            &gpu,
            Lease {
                holder: holder.clone(),
                backend: None,
                device: None,
                memory: 4096,
            },
            T,
        )
        .await
        .expect("ask")
        .expect("lease");
    assert_eq!(
        node.ask(&gpu, ListLeases, T).await.expect("leases").len(),
        1
    );
    root.supervisor()
        .terminate_child("holder")
        .await
        .expect("stop holder");
    let mut released = false;
    for _ in 0..100 {
        if node
            .ask(&gpu, ListLeases, T)
            .await
            .expect("leases")
            .is_empty()
        {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        released,
        "lease {} not released after holder death",
        grant.lease_id
    );
    let devices = node.ask(&gpu, ListDevices, T).await.expect("list");
    assert!(devices.iter().all(|d| d.memory_leased == 0), "{devices:?}");

    // Readiness runs a real computation.
    let rep = node.ask(&gpu, health::Check, T).await.expect("check");
    assert!(rep.ready, "{}", rep.detail);
    assert!(rep.detail.contains("vector_add"), "{}", rep.detail);

    root.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_plugin_fails_start_up_with_the_reason() {
    let dir = plugin_dir();
    let node = Node::new(NodeId::new("gpu-test-req").expect("id"), 1);
    let r = node
        .start_root(
            SupervisorSpec::new(Strategy::OneForOne)
                .child(child_spec_with(config(dir.path(), &["cuda"]))),
        )
        .await;
    let err = r.expect_err("start-up must fail");
    let text = err.to_string();
    assert!(text.contains("required plugin `cuda`"), "{text}");
}

/// The three shipped plugins (cpu, wgpu, cuda) behind one manager: the cpu device and the
/// lavapipe device are listed (plus CUDA devices where a driver exists) and every listed device
/// computes correct results. Needs lavapipe (`mesa-vulkan-drivers`) unless
/// `ABI_WGPU_ALLOW_NO_ADAPTER=1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_three_plugins_list_their_devices_and_compute_on_each() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let deps = std::env::current_exe()
        .expect("exe")
        .parent()
        .expect("deps")
        .to_path_buf();
    for name in ["abi_plugin_cpu", "abi_plugin_wgpu", "abi_plugin_cuda"] {
        let file = format!("lib{name}.so");
        std::fs::copy(deps.join(&file), tmp.path().join(&file)).expect("copy plugin");
    }
    let node = Node::new(NodeId::new("gpu-three").expect("id"), 1);
    let root = node
        .start_root(
            SupervisorSpec::new(Strategy::OneForOne).child(child_spec_with(config(
                tmp.path(),
                &["cpu", "wgpu", "cuda"],
            ))),
        )
        .await
        .expect("root starts");
    let gpu = node.path("gpu").expect("path");
    let devices = node.ask(&gpu, ListDevices, T).await.expect("list");
    eprintln!("{devices:#?}");
    assert!(
        devices
            .iter()
            .any(|d| d.backend == "cpu" && d.kind == "cpu")
    );
    let software = devices
        .iter()
        .any(|d| d.backend == "wgpu" && d.kind == "software_gpu");
    assert!(
        software || std::env::var("ABI_WGPU_ALLOW_NO_ADAPTER").is_ok_and(|v| v == "1"),
        "no lavapipe device listed: {devices:?}"
    );
    for d in &devices {
        assert!(d.healthy, "{d:?}");
        let r = node
            .ask(
                &gpu,
                Compute {
                    backend: Some(d.backend.clone()),
                    device: Some(d.index),
                    op: ComputeOp::Matmul {
                        m: 2,
                        k: 2,
                        n: 3,
                        a: vec![1.0, 2.0, 3.0, 4.0],
                        b: vec![1.0, 0.0, -1.0, 0.5, 2.0, 1.0],
                    },
                },
                T,
            )
            .await
            .expect("ask")
            .expect("matmul");
        assert_eq!(
            (r.backend.as_str(), r.fallback),
            (d.backend.as_str(), false)
        );
        assert_eq!(r.values, vec![2.0, 4.0, 1.0, 5.0, 8.0, 1.0], "{}", d.id);
        let r = node
            .ask(
                &gpu,
                Compute {
                    backend: Some(d.backend.clone()),
                    device: Some(d.index),
                    op: ComputeOp::Softmax {
                        rows: 1,
                        cols: 2,
                        x: vec![0.0, 0.0],
                    },
                },
                T,
            )
            .await
            .expect("ask")
            .expect("softmax");
        assert_eq!(r.values, vec![0.5, 0.5], "{}", d.id);
    }
    root.shutdown(Duration::from_secs(5)).await;
}
