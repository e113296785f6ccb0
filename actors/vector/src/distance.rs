//! Distance kernels (AVX2+FMA picked at run time, scalar fallback) and the hnsw_rs adapter.
//!
//! hnsw_rs requires distances `>= 0` (it asserts on it), so each metric is mapped to a
//! non-negative value that keeps the order, and mapped back to Qdrant's score on the way out.
//! This is the only module of the crate with `unsafe`.

use abi_protocol::vector::Distance as Metric;
use hnsw_rs::anndists::dist::Distance;

type Kernel = fn(&[f32], &[f32]) -> f32;
/// One query against the blocks of a [`Blocked`] matrix: `(query, blocks, out)`, eight
/// results per block.
type BlocksKernel = fn(&[f32], &[f32], &mut [f32]);

/// Rows of a matrix eight to a block, dimension by dimension inside a block
/// (`[block][dim][lane]`, the last block zero-padded): an exact scan then gets eight
/// distances from each 8-wide multiply-add and needs no horizontal sums.
#[derive(Debug, Clone, Default)]
pub struct Blocked {
    dim: usize,
    len: usize,
    data: Vec<f32>,
}

/// Rows per block of [`Blocked`] (one AVX register of `f32`).
pub const LANES: usize = 8;

impl Blocked {
    /// An empty matrix of `dim`-float rows with room for `rows` of them.
    pub fn with_capacity(dim: usize, rows: usize) -> Self {
        Self {
            dim,
            len: 0,
            data: Vec::with_capacity(rows.div_ceil(LANES) * LANES * dim),
        }
    }

    /// Appends a row; missing components read as 0 and extra ones are ignored (the shard
    /// only stores vectors of its dimension).
    pub fn push(&mut self, row: &[f32]) {
        let lane = self.len % LANES;
        if lane == 0 {
            self.data.resize(self.data.len() + LANES * self.dim, 0.0);
        }
        let block = (self.len / LANES) * LANES * self.dim;
        for (d, &x) in row.iter().take(self.dim).enumerate() {
            self.data[block + d * LANES + lane] = x;
        }
        self.len += 1;
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows including the padding of the last block.
    fn padded(&self) -> usize {
        self.len.div_ceil(LANES) * LANES
    }
}

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

/// One bit per lane of `block` whose distance is at most `bound` (bit `i` for lane `i`;
/// NaN never qualifies): lets a scan skip a block, or visit only its candidates, with
/// one vector comparison.
#[inline]
pub fn lanes_at_most(block: &[f32; LANES], bound: f32) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; both loads read four floats
        // within the eight of `block` (offsets 0 and 4), unaligned.
        unsafe {
            let b = _mm_set1_ps(bound);
            let lo = _mm_cmple_ps(_mm_loadu_ps(block.as_ptr()), b);
            let hi = _mm_cmple_ps(_mm_loadu_ps(block.as_ptr().add(4)), b);
            (_mm_movemask_ps(lo) | (_mm_movemask_ps(hi) << 4)) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block
            .iter()
            .enumerate()
            .fold(0, |m, (i, &d)| m | (u32::from(d <= bound) << i))
    }
}

/// The scalar [`BlocksKernel`]s: one accumulator per lane, a loop the compiler vectorises.
fn blocks_scalar<const L2: bool>(q: &[f32], data: &[f32], out: &mut [f32]) {
    let dim = q.len().max(1);
    for (block, o) in data
        .chunks_exact(dim * LANES)
        .zip(out.chunks_exact_mut(LANES))
    {
        let mut acc = [0f32; LANES];
        for (x, &qd) in block.chunks_exact(LANES).zip(q) {
            for (a, &xl) in acc.iter_mut().zip(x) {
                *a += if L2 { (xl - qd) * (xl - qd) } else { xl * qd };
            }
        }
        o.copy_from_slice(&acc);
    }
}

fn dot_blocks_scalar(q: &[f32], data: &[f32], out: &mut [f32]) {
    blocks_scalar::<false>(q, data, out);
}

fn l2sq_blocks_scalar(q: &[f32], data: &[f32], out: &mut [f32]) {
    blocks_scalar::<true>(q, data, out);
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
    use super::LANES;
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

    /// Dot products (or squared distances when `L2`) of `q` with the rows of each
    /// [`super::Blocked`] block in `data`, eight per block, into `out`. Four accumulators
    /// take the dimensions in turn, so consecutive multiply-adds do not wait for each other.
    #[target_feature(enable = "avx2,fma")]
    fn blocks_avx<const L2: bool>(q: &[f32], data: &[f32], out: &mut [f32]) {
        let dim = q.len();
        // One block is one register: LANES is 8 floats of 256 bits.
        let blocks = (out.len() / LANES).min(data.len() / (LANES * dim.max(1)));
        for b in 0..blocks {
            let base = b * LANES * dim;
            // SAFETY (for `step`): d < dim = q.len(), and base + 8 * d + 8 <=
            // (b + 1) * 8 * dim <= data.len() since b < blocks; loads are unaligned.
            let step = |d: usize, acc: __m256| unsafe {
                let qv = _mm256_broadcast_ss(&*q.as_ptr().add(d));
                let x = _mm256_loadu_ps(data.as_ptr().add(base + LANES * d));
                if L2 {
                    let t = _mm256_sub_ps(x, qv);
                    _mm256_fmadd_ps(t, t, acc)
                } else {
                    _mm256_fmadd_ps(x, qv, acc)
                }
            };
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
                _mm256_setzero_ps(),
            );
            let mut d = 0;
            while d + 4 <= dim {
                a0 = step(d, a0);
                a1 = step(d + 1, a1);
                a2 = step(d + 2, a2);
                a3 = step(d + 3, a3);
                d += 4;
            }
            while d < dim {
                a0 = step(d, a0);
                d += 1;
            }
            let sum = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            // SAFETY: b < blocks <= out.len() / 8, so the eight lanes stored are in `out`.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(LANES * b), sum) };
        }
    }

    /// Safe entry: only installed after detection (see [`dot`]).
    pub(super) fn dot_blocks(q: &[f32], data: &[f32], out: &mut [f32]) {
        // SAFETY: as for `dot`, avx2+fma were detected before this pointer was handed out.
        unsafe { blocks_avx::<false>(q, data, out) }
    }

    /// Safe entry: only installed after detection (see [`dot`]).
    pub(super) fn l2sq_blocks(q: &[f32], data: &[f32], out: &mut [f32]) {
        // SAFETY: as for `dot`, avx2+fma were detected before this pointer was handed out.
        unsafe { blocks_avx::<true>(q, data, out) }
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
    dot_blocks: BlocksKernel,
    l2sq_blocks: BlocksKernel,
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
                dot_blocks: avx::dot_blocks,
                l2sq_blocks: avx::l2sq_blocks,
                name: "avx2+fma",
            };
        }
    }
    Kernels {
        dot: dot_scalar,
        l2sq: l2sq_scalar,
        dot_blocks: dot_blocks_scalar,
        l2sq_blocks: l2sq_blocks_scalar,
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

    /// Index distances of `q` to every row of `rows` (an exact scan's inner loop), into
    /// `out`: one per row, then `+inf` for the padding of the last block, so `out` holds
    /// whole blocks of [`LANES`].
    pub fn block_distances(&self, q: &[f32], rows: &Blocked, out: &mut Vec<f32>) {
        debug_assert_eq!(q.len(), rows.dim, "query and rows of one dimension");
        // Every element is overwritten by the kernel: a reused buffer needs no zeroing
        // (except for rows of no components, which the kernels do not visit).
        out.resize(rows.padded(), 0.0);
        if rows.dim == 0 {
            out.fill(0.0);
        }
        let data = &rows.data[..rows.padded() * rows.dim];
        match self.metric {
            Metric::Cosine => {
                (self.k.dot_blocks)(q, data, out);
                out.iter_mut().for_each(|d| *d = (1.0 - *d).max(0.0));
            }
            Metric::Dot => {
                (self.k.dot_blocks)(q, data, out);
                out.iter_mut().for_each(|d| *d = dot_to_index(*d));
            }
            Metric::Euclid => (self.k.l2sq_blocks)(q, data, out),
        }
        out[rows.len..].fill(f32::INFINITY);
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
    fn blocked_distances_equal_pairwise_ones() {
        for metric in [Metric::Cosine, Metric::Dot, Metric::Euclid] {
            let m = MetricDistance::new(metric);
            for dim in [1usize, 3, 8, 16, 17, 100, 384] {
                for n in [0usize, 1, 3, 7, 8, 9, 64, 65] {
                    let q = vecs(dim, 7 + dim as u32);
                    let rows = vecs(dim * n, 11 + n as u32);
                    let mut blocked = Blocked::with_capacity(dim, n);
                    for r in rows.chunks_exact(dim) {
                        blocked.push(r);
                    }
                    assert_eq!(blocked.len(), n);
                    let mut out = vec![f32::NAN; 3];
                    m.block_distances(&q, &blocked, &mut out);
                    assert_eq!(out.len(), n.div_ceil(LANES) * LANES);
                    for (r, got) in out.iter().enumerate() {
                        if r >= n {
                            assert_eq!(*got, f32::INFINITY, "padding lane {r}");
                            continue;
                        }
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
    fn lane_masks_mark_the_lanes_within_the_bound() {
        let block = [3.0, 1.0, f32::NAN, 2.0, 5.0, f32::INFINITY, 0.5, 2.0];
        assert_eq!(lanes_at_most(&block, 2.0), 0b1100_1010);
        assert_eq!(lanes_at_most(&block, 0.1), 0);
        assert_eq!(lanes_at_most(&block, f32::INFINITY), 0b1111_1011);
    }

    #[test]
    fn scalar_blocked_kernels_agree_with_the_detected_ones() {
        let k = detect();
        for dim in [1usize, 5, 16, 33] {
            let q = vecs(dim, 3);
            let data = vecs(dim * LANES * 3, 5);
            for (fast, slow) in [
                (k.dot_blocks, dot_blocks_scalar as BlocksKernel),
                (k.l2sq_blocks, l2sq_blocks_scalar),
            ] {
                let (mut a, mut b) = (vec![0f32; LANES * 3], vec![0f32; LANES * 3]);
                fast(&q, &data, &mut a);
                slow(&q, &data, &mut b);
                for (x, y) in a.iter().zip(&b) {
                    assert!(
                        (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                        "dim {dim}: {x} vs {y}"
                    );
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
