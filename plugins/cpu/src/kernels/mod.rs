//! CPU kernels. Element-wise and reduction bodies are compiled several times by `multiversion`
//! (AVX-512, AVX2+FMA, baseline) and the best one for the running CPU is picked at run time;
//! large inputs are split across the plugin's rayon pool.

mod matmul;
mod simd;
mod topk;

pub use matmul::matmul;
pub use topk::distance_topk;

use rayon::prelude::*;

/// Below this many elements a kernel runs on the calling thread (threading costs more).
const PAR_THRESHOLD: usize = 1 << 16;
/// Elements per parallel task.
const CHUNK: usize = 1 << 15;

/// `c = a + b`.
pub fn vector_add(a: &[f32], b: &[f32], c: &mut [f32]) {
    if c.len() < PAR_THRESHOLD {
        simd::add(a, b, c);
    } else {
        c.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((c, a), b)| simd::add(a, b, c));
    }
}

/// Sum of `x`.
pub fn reduce_sum(x: &[f32]) -> f32 {
    if x.len() < PAR_THRESHOLD {
        simd::sum(x)
    } else {
        x.par_chunks(CHUNK).map(simd::sum).sum()
    }
}

/// `sum a[i] * b[i]`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() < PAR_THRESHOLD {
        simd::dot(a, b)
    } else {
        a.par_chunks(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .map(|(a, b)| simd::dot(a, b))
            .sum()
    }
}

/// Row-wise softmax of `x` (rows of `cols`) into `y`.
pub fn softmax(x: &[f32], y: &mut [f32], cols: usize) {
    let row = |(xr, yr): (&[f32], &mut [f32])| {
        let max = simd::max(xr);
        let mut sum = 0f32;
        for (o, v) in yr.iter_mut().zip(xr) {
            let e = (v - max).exp();
            *o = e;
            sum += e;
        }
        simd::scale(yr, 1.0 / sum);
    };
    if x.len() < PAR_THRESHOLD {
        x.chunks(cols).zip(y.chunks_mut(cols)).for_each(row);
    } else {
        x.par_chunks(cols).zip(y.par_chunks_mut(cols)).for_each(row);
    }
}
