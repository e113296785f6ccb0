//! The conformance suite every backend (ours and third parties') must pass.
//!
//! It drives a backend through the C ABI ([`Context`]), so the plugin's glue is tested too.
//! Every op is compared against [`crate::reference`] on random inputs in [-1, 1] at sizes
//! 1, 3, 1023, 4097 and non-square matrices, with these tolerances (`ref` = f64 reference):
//!
//! | op | tolerance |
//! |---|---|
//! | vector_add | exact (one IEEE f32 add) |
//! | matmul | `|c - ref| <= 1e-5 * sum_p |a_ip * b_pj| + 1e-6` |
//! | reduce_sum, dot | `|y - ref| <= 1e-5 * sum |terms| + 1e-6` |
//! | softmax | `|y - ref| <= 1e-4 * ref + 1e-6` |
//! | distance_topk | for each rank r: the reference score of the returned index is within `1e-4 * scale` of the reference r-th best score (so near-ties may swap), the returned score within the same bound, indices distinct; `scale` = 1 for cosine, `max(1, |ref|)` otherwise |
//!
//! Plus the error paths: invalid dimensions, undersized buffers, out-of-range uploads and
//! aliased outputs are refused with `InvalidArgument`, and the health check passes.

use crate::boundary::host::Context;
use crate::error::ErrorKind;
use crate::op::{Metric, Op, OpKind};
use crate::reference;

/// Deterministic xorshift generator, so failures reproduce without a rand dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// Next raw value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    /// `n` values in [-1, 1).
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
}

/// Vector lengths every elementwise/reduction op is checked at.
pub const VECTOR_SIZES: [usize; 4] = [1, 3, 1023, 4097];
/// (m, k, n) shapes for matmul: tiny, odd, non-square and long-inner.
pub const MATMUL_SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (3, 3, 3),
    (1, 1023, 3),
    (3, 4097, 5),
    (127, 65, 255),
    (64, 64, 64),
    (1023, 1, 17),
];
/// (rows, cols) shapes for softmax.
pub const SOFTMAX_SHAPES: [(usize, usize); 5] = [(1, 1), (3, 3), (1, 4097), (1023, 7), (5, 1023)];
/// (queries, dim, n, k) shapes for distance_topk.
pub const TOPK_SHAPES: [(usize, usize, usize, usize); 4] = [
    (1, 3, 1, 1),
    (3, 16, 1023, 10),
    (7, 50, 4097, 5),
    (2, 1, 3, 3),
];

/// Outcome of the suite: names of passed checks and reasons of failed ones.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Checks that passed.
    pub passed: Vec<String>,
    /// `check: reason` for each failure.
    pub failed: Vec<String>,
    /// Ops skipped because the device does not advertise them.
    pub skipped: Vec<String>,
}

impl Report {
    /// Panics with every failure listed (for use in `#[test]`s).
    pub fn assert_ok(&self) {
        assert!(
            self.failed.is_empty(),
            "{} conformance failures:\n{}",
            self.failed.len(),
            self.failed.join("\n")
        );
        assert!(!self.passed.is_empty(), "no conformance check ran");
    }

    fn record(&mut self, name: String, r: Result<(), String>) {
        match r {
            Ok(()) => self.passed.push(name),
            Err(e) => self.failed.push(format!("{name}: {e}")),
        }
    }
}

fn close(got: &[f32], want: &[f32], tol: impl Fn(usize) -> f64, what: &str) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(*g) - f64::from(*w)).abs();
        if err.is_nan() || err > tol(i) {
            return Err(format!(
                "{what}[{i}] = {g}, reference {w}, |err| {err:e} > tol {:e}",
                tol(i)
            ));
        }
    }
    Ok(())
}

/// Checks one op against the reference on random inputs; `seed` picks the inputs.
pub fn check_op(ctx: &Context, op: &Op, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let inputs: Vec<Vec<f32>> = op.input_elems().iter().map(|n| rng.vec(*n)).collect();
    let refs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    let out = ctx.run_host(op, &refs).map_err(|e| e.to_string())?;
    match *op {
        Op::VectorAdd { .. } => close(
            &out.values,
            &reference::vector_add(&inputs[0], &inputs[1]),
            |_| 0.0,
            "c",
        ),
        Op::Matmul { m, k, n } => {
            let want = reference::matmul(&inputs[0], &inputs[1], m, k, n);
            let (a, b) = (&inputs[0], &inputs[1]);
            close(
                &out.values,
                &want,
                |idx| {
                    let (i, j) = (idx / n, idx % n);
                    let s: f64 = (0..k)
                        .map(|p| (f64::from(a[i * k + p]) * f64::from(b[p * n + j])).abs())
                        .sum();
                    1e-5 * s + 1e-6
                },
                "c",
            )
        }
        Op::ReduceSum { .. } => {
            let s: f64 = inputs[0].iter().map(|v| f64::from(v.abs())).sum();
            close(
                &out.values,
                &[reference::reduce_sum(&inputs[0])],
                |_| 1e-5 * s + 1e-6,
                "y",
            )
        }
        Op::Dot { .. } => {
            let s: f64 = inputs[0]
                .iter()
                .zip(&inputs[1])
                .map(|(x, y)| f64::from((x * y).abs()))
                .sum();
            close(
                &out.values,
                &[reference::dot(&inputs[0], &inputs[1])],
                |_| 1e-5 * s + 1e-6,
                "y",
            )
        }
        Op::Softmax { rows, cols } => {
            let want = reference::softmax(&inputs[0], rows, cols);
            close(
                &out.values,
                &want,
                |i| 1e-4 * f64::from(want[i]) + 1e-6,
                "y",
            )
        }
        Op::DistanceTopk {
            queries,
            dim,
            n: _,
            k,
            metric,
        } => check_topk(
            &inputs[0],
            &inputs[1],
            dim,
            queries,
            k,
            metric,
            &out.values,
            &out.indices,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn check_topk(
    q: &[f32],
    v: &[f32],
    dim: usize,
    queries: usize,
    k: usize,
    metric: Metric,
    scores: &[f32],
    indices: &[u32],
) -> Result<(), String> {
    let all = reference::all_scores(q, v, dim, metric);
    let (want_scores, _) = reference::distance_topk(q, v, dim, k, metric);
    if scores.len() != queries * k || indices.len() != queries * k {
        return Err(format!(
            "got {} scores / {} indices, expected {}",
            scores.len(),
            indices.len(),
            queries * k
        ));
    }
    for (qi, row) in all.iter().enumerate().take(queries) {
        let mut seen = std::collections::HashSet::new();
        for r in 0..k {
            let at = qi * k + r;
            let idx = indices[at] as usize;
            let Some(ref_of_idx) = row.get(idx) else {
                return Err(format!("query {qi} rank {r}: index {idx} out of range"));
            };
            if !seen.insert(idx) {
                return Err(format!("query {qi}: index {idx} returned twice"));
            }
            let want = f64::from(want_scores[at]);
            let scale = if metric == Metric::Cosine {
                1.0
            } else {
                want.abs().max(1.0)
            };
            let tol = 1e-4 * scale;
            if (ref_of_idx - want).abs() > tol {
                return Err(format!(
                    "query {qi} rank {r}: index {idx} has reference score {ref_of_idx}, rank {r} best is {want}"
                ));
            }
            let got = f64::from(scores[at]);
            if got.is_nan() || (got - want).abs() > tol {
                return Err(format!(
                    "query {qi} rank {r}: score {got}, reference {want}"
                ));
            }
        }
    }
    Ok(())
}

/// Every op and shape this suite checks, by kind.
pub fn cases(kind: OpKind) -> Vec<Op> {
    match kind {
        OpKind::VectorAdd => VECTOR_SIZES.iter().map(|&n| Op::VectorAdd { n }).collect(),
        OpKind::ReduceSum => VECTOR_SIZES.iter().map(|&n| Op::ReduceSum { n }).collect(),
        OpKind::Dot => VECTOR_SIZES.iter().map(|&n| Op::Dot { n }).collect(),
        OpKind::Matmul => MATMUL_SHAPES
            .iter()
            .map(|&(m, k, n)| Op::Matmul { m, k, n })
            .collect(),
        OpKind::Softmax => SOFTMAX_SHAPES
            .iter()
            .map(|&(rows, cols)| Op::Softmax { rows, cols })
            .collect(),
        OpKind::DistanceTopk => TOPK_SHAPES
            .iter()
            .flat_map(|&(queries, dim, n, k)| {
                [Metric::Cosine, Metric::Dot, Metric::L2].map(|metric| Op::DistanceTopk {
                    queries,
                    dim,
                    n,
                    k,
                    metric,
                })
            })
            .collect(),
    }
}

fn expect_invalid(r: Result<impl Sized, crate::error::BackendError>) -> Result<(), String> {
    match r {
        Err(e) if e.kind == ErrorKind::InvalidArgument => Ok(()),
        Err(e) => Err(format!("expected InvalidArgument, got {e}")),
        Ok(_) => Err("expected InvalidArgument, got success".into()),
    }
}

/// Error-path checks that do not depend on the op implementations.
/// `caps` are the device's capability bits: the top_k check runs only where distance_topk is
/// advertised.
pub fn check_error_paths(ctx: &Context, caps: u64) -> Vec<(String, Result<(), String>)> {
    let mut out = Vec::new();
    let small = ctx.alloc(8);
    let other = ctx.alloc(16);
    let (Ok(small), Ok(other)) = (small, other) else {
        return vec![("alloc".into(), Err("alloc of 8/16 bytes failed".into()))];
    };
    out.push((
        "upload out of range".into(),
        expect_invalid(ctx.upload(&small, 4, &[0u8; 8])),
    ));
    out.push((
        "download out of range".into(),
        expect_invalid(ctx.download(&small, 0, &mut [0u8; 12])),
    ));
    out.push((
        "undersized input buffer".into(),
        expect_invalid(ctx.run(&Op::VectorAdd { n: 4 }, &[&small, &other], &[&other])),
    ));
    out.push((
        "aliased output".into(),
        expect_invalid(ctx.run(&Op::VectorAdd { n: 2 }, &[&small, &small], &[&small])),
    ));
    if caps & OpKind::DistanceTopk.bit() != 0 {
        out.push((
            "top_k greater than n".into(),
            expect_invalid(ctx.run(
                &Op::DistanceTopk {
                    queries: 1,
                    dim: 1,
                    n: 1,
                    k: 2,
                    metric: Metric::Dot,
                },
                &[&small, &small],
                &[&other, &small],
            )),
        ));
    }
    out.push((
        "zero-length op".into(),
        expect_invalid(ctx.run(&Op::VectorAdd { n: 0 }, &[&small, &small], &[&other])),
    ));
    out.push((
        "health check".into(),
        ctx.health_check().map_err(|e| e.to_string()),
    ));
    out
}

/// Runs the whole suite on one context. Ops the device does not advertise are skipped
/// (listed in `skipped`); `seed` varies the random inputs.
pub fn run_all(ctx: &Context, seed: u64) -> Report {
    let mut report = Report::default();
    let caps = match ctx.plugin().devices() {
        Ok(d) => d.get(ctx.device() as usize).map(|d| d.capabilities),
        Err(e) => {
            report.failed.push(format!("devices: {e}"));
            return report;
        }
    };
    let Some(caps) = caps else {
        report
            .failed
            .push(format!("device {} not listed", ctx.device()));
        return report;
    };
    for (name, r) in check_error_paths(ctx, caps) {
        report.record(name, r);
    }
    for kind in OpKind::ALL {
        if caps & kind.bit() == 0 {
            report.skipped.push(kind.name().to_string());
            continue;
        }
        for (i, op) in cases(kind).into_iter().enumerate() {
            let r = check_op(ctx, &op, seed.wrapping_add(i as u64 * 7919));
            report.record(format!("{op:?}"), r);
        }
    }
    report
}
