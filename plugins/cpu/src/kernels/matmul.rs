//! Row-major f32 matmul through the `gemm` crate (cache-blocked, runtime-dispatched SIMD
//! micro-kernels; the same engine candle uses), threaded on the plugin's rayon pool.

/// `c[m*n] = a[m*k] x b[k*n]`, all row-major.
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "matmul slices smaller than m*k / k*n / m*n"
    );
    // SAFETY: the assert above guarantees every element gemm addresses with these strides
    // (row stride = row length, column stride 1) lies inside the slices; `c` is exclusively
    // borrowed and does not overlap `a` or `b` (distinct borrows); read_dst = false so c's prior
    // contents are never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}
