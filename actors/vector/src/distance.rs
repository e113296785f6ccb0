//! Distance kernels (AVX2+FMA picked at run time, scalar fallback) and the hnsw_rs adapter.
//!
//! hnsw_rs requires distances `>= 0` (it asserts on it), so each metric is mapped to a
//! non-negative value that keeps the order, and mapped back to Qdrant's score on the way out.
//! This is the only module of the crate with `unsafe`.

use abi_protocol::vector::Distance as Metric;
use hnsw_rs::anndists::dist::Distance;

type Kernel = fn(&[f32], &[f32]) -> f32;
/// One query against contiguous rows of its length: `(query, rows, out)`.
type RowsKernel = fn(&[f32], &[f32], &mut [f32]);

/// Scalar dot product, four accumulators so the compiler can vectorise it a little.
fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 4];
    let chunks = n / 4;
    for i in 0..chunks {
        for j in 0..4 {
            acc[j] += a[4 * i + j] * b[4 * i + j];
        }
    }
    let mut s = acc[0] + acc[1] + acc[2] + acc[3];
    for i in chunks * 4..n {
        s += a[i] * b[i];
    }
    s
}

/// [`RowsKernel`] from a pairwise kernel (the scalar fallback).
fn rows_with(k: Kernel, q: &[f32], rows: &[f32], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(q.len().max(1))) {
        *o = k(q, row);
    }
}

fn dot_rows_scalar(q: &[f32], rows: &[f32], out: &mut [f32]) {
    rows_with(dot_scalar, q, rows, out);
}

fn l2sq_rows_scalar(q: &[f32], rows: &[f32], out: &mut [f32]) {
    rows_with(l2sq_scalar, q, rows, out);
}

/// Scalar squared Euclidean distance.
fn l2sq_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut s = 0f32;
    for i in 0..n {
        let d = a[i] - b[i];
        s += d * d;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Horizontal sum of an 8-lane register.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(v, 1);
        let lo = _mm256_castps256_ps128(v);
        let s = _mm_add_ps(hi, lo);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    fn dot_avx(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 <= n <= len of both slices, and loadu has no alignment requirement.
            unsafe {
                acc0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    acc1,
                );
            }
            i += 16;
        }
        if i + 8 <= n {
            // SAFETY: i + 8 <= n <= len of both slices.
            unsafe {
                acc0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
            }
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx2,fma")]
    fn l2sq_avx(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n <= len of both slices, unaligned loads.
            unsafe {
                let d = _mm256_sub_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                );
                acc = _mm256_fmadd_ps(d, d, acc);
            }
            i += 8;
        }
        let mut s = hsum(acc);
        while i < n {
            let d = a[i] - b[i];
            s += d * d;
            i += 1;
        }
        s
    }

    /// Sums each of four 8-lane registers: `[sum(a), sum(b), sum(c), sum(d)]`.
    #[target_feature(enable = "avx2,fma")]
    fn hsum4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
        let ab = _mm256_hadd_ps(a, b);
        let cd = _mm256_hadd_ps(c, d);
        let abcd = _mm256_hadd_ps(ab, cd);
        _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1))
    }

    /// Dot products (or squared distances when `l2`) of `q` with each `q.len()`-float row
    /// of `rows`, into `out`: four rows at a time, so one horizontal reduction serves four.
    #[target_feature(enable = "avx2,fma")]
    fn batch_avx(q: &[f32], rows: &[f32], out: &mut [f32], l2: bool) {
        let dim = q.len();
        let n = out.len().min(rows.len() / dim.max(1));
        let body = dim - dim % 8;
        let row = |r: usize| &rows[r * dim..(r + 1) * dim];
        let tail = |a: &[f32], acc: f32| {
            a[body..].iter().zip(&q[body..]).fold(acc, |s, (x, y)| {
                if l2 {
                    let d = x - y;
                    s + d * d
                } else {
                    s + x * y
                }
            })
        };
        let mut r = 0;
        while r + 4 <= n {
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i < body {
                // SAFETY: i + 8 <= body <= dim, and rows r..r+4 lie within `rows`
                // (r + 4 <= n <= rows.len() / dim); loads are unaligned.
                unsafe {
                    let qv = _mm256_loadu_ps(q.as_ptr().add(i));
                    for (k, a) in acc.iter_mut().enumerate() {
                        let x = _mm256_loadu_ps(rows.as_ptr().add((r + k) * dim + i));
                        *a = if l2 {
                            let d = _mm256_sub_ps(x, qv);
                            _mm256_fmadd_ps(d, d, *a)
                        } else {
                            _mm256_fmadd_ps(x, qv, *a)
                        };
                    }
                }
                i += 8;
            }
            let mut sums = [0f32; 4];
            // SAFETY: `sums` has room for the four lanes stored.
            unsafe { _mm_storeu_ps(sums.as_mut_ptr(), hsum4(acc[0], acc[1], acc[2], acc[3])) };
            for k in 0..4 {
                out[r + k] = tail(row(r + k), sums[k]);
            }
            r += 4;
        }
        while r < n {
            out[r] = if l2 {
                l2sq_avx(q, row(r))
            } else {
                dot_avx(q, row(r))
            };
            r += 1;
        }
    }

    /// Safe entry: only installed after detection (see [`dot`]).
    pub(super) fn dot_rows(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: as for `dot`, avx2+fma were detected before this pointer was handed out.
        unsafe { batch_avx(q, rows, out, false) }
    }

    /// Safe entry: only installed after detection (see [`dot`]).
    pub(super) fn l2sq_rows(q: &[f32], rows: &[f32], out: &mut [f32]) {
        // SAFETY: as for `dot`, avx2+fma were detected before this pointer was handed out.
        unsafe { batch_avx(q, rows, out, true) }
    }

    /// Safe entry: only installed after `is_x86_feature_detected!` confirmed avx2 and fma.
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: this function pointer is only handed out when avx2+fma were detected at run time.
        unsafe { dot_avx(a, b) }
    }

    /// Safe entry: only installed after detection (see [`dot`]).
    pub(super) fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as for `dot`, avx2+fma were detected before this pointer was handed out.
        unsafe { l2sq_avx(a, b) }
    }
}

/// The kernels chosen for this CPU.
#[derive(Clone, Copy)]
struct Kernels {
    dot: Kernel,
    l2sq: Kernel,
    dot_rows: RowsKernel,
    l2sq_rows: RowsKernel,
    name: &'static str,
}

fn detect() -> Kernels {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var_os("ABI_VECTOR_SCALAR").is_none()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
        {
            return Kernels {
                dot: avx::dot,
                l2sq: avx::l2sq,
                dot_rows: avx::dot_rows,
                l2sq_rows: avx::l2sq_rows,
                name: "avx2+fma",
            };
        }
    }
    Kernels {
        dot: dot_scalar,
        l2sq: l2sq_scalar,
        dot_rows: dot_rows_scalar,
        l2sq_rows: l2sq_rows_scalar,
        name: "scalar",
    }
}

/// Name of the kernel set in use ("avx2+fma" or "scalar"), for logs and benchmarks.
pub fn kernel_name() -> &'static str {
    detect().name
}

/// A metric bound to the CPU's best kernels; implements hnsw_rs's `Distance`.
#[derive(Clone, Copy)]
pub struct MetricDistance {
    metric: Metric,
    k: Kernels,
}

impl std::fmt::Debug for MetricDistance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetricDistance({:?}, {})", self.metric, self.k.name)
    }
}

impl MetricDistance {
    /// Picks kernels for `metric`.
    pub fn new(metric: Metric) -> Self {
        Self {
            metric,
            k: detect(),
        }
    }

    /// Index distance (`>= 0`, smaller is closer) between two vectors already prepared with
    /// [`prepare`].
    #[inline]
    pub fn index_distance(&self, a: &[f32], b: &[f32]) -> f32 {
        match self.metric {
            Metric::Cosine => (1.0 - (self.k.dot)(a, b)).max(0.0),
            Metric::Dot => dot_to_index((self.k.dot)(a, b)),
            Metric::Euclid => (self.k.l2sq)(a, b),
        }
    }

    /// Index distances of `q` to each `q.len()`-float row of `rows` (an exact scan's inner
    /// loop), into `out` (one per row): the batched kernel shares its horizontal sums
    /// between rows, several times faster than one [`Self::index_distance`] per row for
    /// short vectors.
    pub fn index_distances(&self, q: &[f32], rows: &[f32], out: &mut [f32]) {
        match self.metric {
            Metric::Cosine => {
                (self.k.dot_rows)(q, rows, out);
                out.iter_mut().for_each(|d| *d = (1.0 - *d).max(0.0));
            }
            Metric::Dot => {
                (self.k.dot_rows)(q, rows, out);
                out.iter_mut().for_each(|d| *d = dot_to_index(*d));
            }
            Metric::Euclid => (self.k.l2sq_rows)(q, rows, out),
        }
    }

    /// Converts an index distance back to the score clients see.
    #[inline]
    pub fn score(&self, d: f32) -> f32 {
        match self.metric {
            Metric::Cosine => 1.0 - d,
            Metric::Dot => index_to_dot(d),
            Metric::Euclid => d.sqrt(),
        }
    }

    /// Whether `score` is at least as good as `threshold` under this metric.
    pub fn passes(&self, score: f32, threshold: f32) -> bool {
        match self.metric {
            Metric::Cosine | Metric::Dot => score >= threshold,
            Metric::Euclid => score <= threshold,
        }
    }

    /// The metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }
}

/// Maps a dot product (higher is closer, any sign) to a positive distance, order-reversing:
/// `s <= 0 -> 1 - s`, `s > 0 -> 1 / (1 + s)`.
#[inline]
fn dot_to_index(s: f32) -> f32 {
    if s <= 0.0 { 1.0 - s } else { 1.0 / (1.0 + s) }
}

#[inline]
fn index_to_dot(d: f32) -> f32 {
    if d >= 1.0 { 1.0 - d } else { 1.0 / d - 1.0 }
}

impl Distance<f32> for MetricDistance {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        self.index_distance(va, vb)
    }
}

/// Prepares a vector for the index: cosine vectors are normalised (a zero vector is refused by
/// validation before it gets here).
pub fn prepare(metric: Metric, v: &mut [f32]) {
    if metric == Metric::Cosine {
        let norm = v
            .iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            for x in v.iter_mut() {
                *x = ((*x as f64) / norm) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vecs(n: usize, seed: u32) -> Vec<f32> {
        // Deterministic pseudo-random values in [-1, 1).
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn simd_kernels_agree_with_scalar() {
        let k = detect();
        for n in [0usize, 1, 7, 8, 15, 16, 17, 50, 384, 1000] {
            let a = vecs(n, 1 + n as u32);
            let b = vecs(n, 99 + n as u32);
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            assert!(((k.dot)(&a, &b) as f64 - exact).abs() < 1e-3, "dot n={n}");
            assert!((dot_scalar(&a, &b) as f64 - exact).abs() < 1e-3);
            let l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                .sum();
            assert!(((k.l2sq)(&a, &b) as f64 - l2).abs() < 1e-3, "l2 n={n}");
            assert!((l2sq_scalar(&a, &b) as f64 - l2).abs() < 1e-3);
        }
    }

    #[test]
    fn batched_row_distances_equal_pairwise_ones() {
        for metric in [Metric::Cosine, Metric::Dot, Metric::Euclid] {
            let m = MetricDistance::new(metric);
            for dim in [1usize, 3, 8, 16, 17, 100, 384] {
                for n in [0usize, 1, 3, 4, 5, 9, 64] {
                    let q = vecs(dim, 7 + dim as u32);
                    let rows = vecs(dim * n, 11 + n as u32);
                    let mut out = vec![f32::NAN; n];
                    m.index_distances(&q, &rows, &mut out);
                    for (r, got) in out.iter().enumerate() {
                        let want = m.index_distance(&q, &rows[r * dim..(r + 1) * dim]);
                        assert!(
                            (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                            "{metric:?} dim {dim} n {n} row {r}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dot_mapping_is_positive_and_order_reversing() {
        let scores = [-100.0f32, -2.0, -0.5, 0.0, 0.25, 1.0, 3.0, 1000.0];
        let ds: Vec<f32> = scores.iter().map(|&s| dot_to_index(s)).collect();
        for w in ds.windows(2) {
            assert!(w[0] > w[1], "{ds:?}");
        }
        for (&s, &d) in scores.iter().zip(&ds) {
            assert!(d > 0.0);
            assert!(
                (index_to_dot(d) - s).abs() <= 1e-3 * s.abs().max(1.0),
                "{s} -> {d}"
            );
        }
    }

    #[test]
    fn cosine_scores_match_similarity() {
        let m = MetricDistance::new(Metric::Cosine);
        let mut a = vec![3.0, 4.0];
        let mut b = vec![4.0, 3.0];
        prepare(Metric::Cosine, &mut a);
        prepare(Metric::Cosine, &mut b);
        let s = m.score(m.index_distance(&a, &b));
        assert!((s - 0.96).abs() < 1e-6, "{s}");
        let e = MetricDistance::new(Metric::Euclid);
        assert!((e.score(e.index_distance(&[0.0, 0.0], &[3.0, 4.0])) - 5.0).abs() < 1e-6);
    }
}
