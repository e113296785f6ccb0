//! Benchmark of every loaded backend device: matmul 1024^3 and 2048^3 GFLOP/s next to numpy
//! (OpenBLAS) measured in the same run, and vector_add GB/s next to a plain memcpy of the same
//! bytes. Not a test; run it in release:
//!
//! ```text
//! cargo build --release -p abi-plugin-cpu -p abi-plugin-wgpu -p abi-plugin-cuda
//! cargo build --release -p abi-gpu --bin abi-gpu-bench
//! target/release/abi-gpu-bench [PLUGIN_DIR...]
//! ```
//!
//! Timings are medians; each device run ends with a 4-byte download so asynchronous backends
//! (wgpu, cuda) are measured to completion. Operands live on the device (uploads not timed).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use abi_gpu::{PluginConfig, load_all};
use abi_sdk::Op;
use abi_sdk::host::{Buffer, Context};
use abi_sdk::testing::Rng;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn device_buf(ctx: &Context, data: &[f32]) -> Result<Buffer, String> {
    let b = ctx
        .alloc(data.len() as u64 * 4)
        .map_err(|e| e.to_string())?;
    ctx.upload(&b, 0, &abi_sdk::bytes::f32_to_bytes(data))
        .map_err(|e| e.to_string())?;
    Ok(b)
}

/// Median wall time of `op` (after one warm-up), ended by a 4-byte download.
fn time_op(
    ctx: &Context,
    op: &Op,
    ins: &[&Buffer],
    out: &[&Buffer],
    reps: usize,
) -> Result<Duration, String> {
    let mut probe = [0u8; 4];
    let mut times = Vec::new();
    for i in 0..=reps {
        let t0 = Instant::now();
        ctx.run(op, ins, out).map_err(|e| e.to_string())?;
        ctx.download(out[0], 0, &mut probe)
            .map_err(|e| e.to_string())?;
        if i > 0 {
            times.push(t0.elapsed());
        }
    }
    Ok(median(times))
}

fn matmul_gflops(ctx: &Context, s: usize, reps: usize) -> Result<f64, String> {
    let mut rng = Rng::new(7);
    let a = device_buf(ctx, &rng.vec(s * s))?;
    let b = device_buf(ctx, &rng.vec(s * s))?;
    let c = ctx.alloc((s * s * 4) as u64).map_err(|e| e.to_string())?;
    let op = Op::Matmul { m: s, k: s, n: s };
    let t = time_op(ctx, &op, &[&a, &b], &[&c], reps)?;
    Ok(op.flops() / t.as_secs_f64() / 1e9)
}

fn vector_add_gbs(ctx: &Context, n: usize) -> Result<f64, String> {
    let mut rng = Rng::new(9);
    let a = device_buf(ctx, &rng.vec(n))?;
    let b = device_buf(ctx, &rng.vec(n))?;
    let c = ctx.alloc((n * 4) as u64).map_err(|e| e.to_string())?;
    let t = time_op(ctx, &Op::VectorAdd { n }, &[&a, &b], &[&c], 5)?;
    Ok((12 * n) as f64 / t.as_secs_f64() / 1e9)
}

/// Memory traffic (bytes read + written per second) of a plain memcpy of `bytes` bytes, split
/// over the machine's threads like the backends' kernels are.
fn memcpy_gbs(bytes: usize) -> f64 {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = bytes.div_ceil(threads);
    let mut times = Vec::new();
    for _ in 0..7 {
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        std::hint::black_box(&mut dst);
        times.push(t0.elapsed());
    }
    (2 * bytes) as f64 / median(times).as_secs_f64() / 1e9
}

const NUMPY: &str = r#"
import time, sys
try:
    import numpy as np
except Exception as e:
    print("numpy unavailable:", e); sys.exit(0)
for s in (1024, 2048):
    a = np.random.rand(s, s).astype(np.float32); b = np.random.rand(s, s).astype(np.float32)
    a @ b
    ts = []
    for _ in range(3):
        t = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"numpy {s} {2*s**3/ts[1]/1e9:.2f}")
try:
    import torch
    if torch.cuda.is_available():
        for s in (1024, 2048):
            a = torch.rand(s, s, device="cuda"); b = torch.rand(s, s, device="cuda")
            torch.backends.cuda.matmul.allow_tf32 = False
            a @ b; torch.cuda.synchronize()
            ts = []
            for _ in range(5):
                t = time.perf_counter(); a @ b; torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
            ts.sort()
            print(f"torch {s} {2*s**3/ts[2]/1e9:.2f}")
except Exception:
    pass
"#;

fn main() {
    let dirs: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    let report = match load_all(&PluginConfig {
        dirs,
        ..Default::default()
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    for s in &report.skipped {
        println!("skipped {}: {}", s.path.display(), s.reason);
    }
    let py = Command::new("python3").arg("-c").arg(NUMPY).output();
    let mut anchors = std::collections::HashMap::new();
    match py {
        Ok(out) => {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let parts: Vec<&str> = line.split_whitespace().collect();
                if let [lib, size, g] = parts[..] {
                    if let (Ok(size), Ok(g)) = (size.parse::<usize>(), g.parse::<f64>()) {
                        anchors.insert((lib.to_string(), size), g);
                        println!("anchor  {lib:<6} matmul {size}^3: {g:8.2} GFLOP/s");
                    }
                } else {
                    println!("{line}");
                }
            }
        }
        Err(e) => println!("python3 not runnable: {e}"),
    }
    let n = 1 << 24;
    // vector_add moves 12 bytes per element (reads a and b, writes c): compare with a memcpy
    // that moves the same traffic (copies 6 bytes per element).
    let memcpy = memcpy_gbs(6 * n);
    println!(
        "anchor  memcpy of {} MiB (read+write {} MiB): {memcpy:8.2} GB/s",
        (6 * n) >> 20,
        (12 * n) >> 20
    );
    for lp in &report.loaded {
        for (i, d) in lp.devices.iter().enumerate() {
            let ctx = match lp.plugin.create_context(i as u32) {
                Ok(c) => c,
                Err(e) => {
                    println!("{}:{i} context failed: {e}", lp.plugin.name());
                    continue;
                }
            };
            let label = format!("{}:{i} ({})", lp.plugin.name(), d.name);
            for s in [1024usize, 2048] {
                let reps = if d.kind == abi_sdk::DeviceKind::SoftwareGpu {
                    1
                } else {
                    3
                };
                match matmul_gflops(&ctx, s, reps) {
                    Ok(g) => {
                        let np = anchors.get(&("numpy".to_string(), s));
                        let torch = anchors.get(&("torch".to_string(), s));
                        let mut line = format!("{label}: matmul {s}^3 {g:8.2} GFLOP/s");
                        if let Some(np) = np {
                            line += &format!("  = {:.2}x numpy", g / np);
                        }
                        if let (Some(t), abi_sdk::DeviceKind::Gpu) = (torch, d.kind) {
                            line += &format!("  = {:.2}x torch", g / t);
                        }
                        println!("{line}");
                    }
                    Err(e) => println!("{label}: matmul {s}^3 failed: {e}"),
                }
            }
            match vector_add_gbs(&ctx, n) {
                Ok(g) => println!(
                    "{label}: vector_add {n} f32 {g:8.2} GB/s (read+write, 12 B/elem) = {:.2}x memcpy",
                    g / memcpy
                ),
                Err(e) => println!("{label}: vector_add failed: {e}"),
            }
        }
    }
}
