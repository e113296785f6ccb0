//! Batched brute-force top-k: queries x vector chunks run in parallel, each chunk keeps its
//! k best by partial selection, then chunks merge per query.

use std::cmp::Ordering;

use abi_sdk::Metric;
use rayon::prelude::*;

use super::simd;

/// Vectors scored per parallel task.
const VEC_CHUNK: usize = 4096;

fn better(metric: Metric) -> impl Fn(&(f32, u32), &(f32, u32)) -> Ordering + Copy {
    move |a, b| {
        let o = if metric.higher_is_better() {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        };
        o.then(a.1.cmp(&b.1))
    }
}

fn keep_best(v: &mut Vec<(f32, u32)>, k: usize, metric: Metric) {
    let cmp = better(metric);
    if v.len() > k {
        v.select_nth_unstable_by(k - 1, cmp);
        v.truncate(k);
    }
    v.sort_unstable_by(cmp);
}

/// Writes, for each query, the `k` best `(score, index)` of `vectors` (best first, ties to the
/// lower index) into `scores` / `indices`.
#[allow(clippy::too_many_arguments)]
pub fn distance_topk(
    queries: &[f32],
    vectors: &[f32],
    dim: usize,
    n: usize,
    k: usize,
    metric: Metric,
    scores: &mut [f32],
    indices: &mut [u32],
) {
    let q = queries.len() / dim;
    let vectors = &vectors[..n * dim];
    // Cosine: precompute inverse norms once per call.
    let inv_norms: Vec<f32> = if metric == Metric::Cosine {
        vectors
            .par_chunks(dim)
            .map(|v| inv_norm(simd::dot(v, v)))
            .collect()
    } else {
        Vec::new()
    };
    let q_inv: Vec<f32> = if metric == Metric::Cosine {
        queries
            .chunks(dim)
            .map(|v| inv_norm(simd::dot(v, v)))
            .collect()
    } else {
        Vec::new()
    };
    let n_chunks = n.div_ceil(VEC_CHUNK);
    let partial: Vec<Vec<(f32, u32)>> = (0..q * n_chunks)
        .into_par_iter()
        .map(|task| {
            let (qi, ci) = (task / n_chunks, task % n_chunks);
            let qv = &queries[qi * dim..(qi + 1) * dim];
            let start = ci * VEC_CHUNK;
            let end = (start + VEC_CHUNK).min(n);
            let mut local: Vec<(f32, u32)> = (start..end)
                .map(|j| {
                    let v = &vectors[j * dim..(j + 1) * dim];
                    let s = match metric {
                        Metric::Dot => simd::dot(qv, v),
                        Metric::Cosine => simd::dot(qv, v) * q_inv[qi] * inv_norms[j],
                        Metric::L2 => simd::l2(qv, v),
                    };
                    (s, j as u32)
                })
                .collect();
            keep_best(&mut local, k, metric);
            local
        })
        .collect();
    scores
        .par_chunks_mut(k)
        .zip(indices.par_chunks_mut(k))
        .enumerate()
        .for_each(|(qi, (s_out, i_out))| {
            let mut all: Vec<(f32, u32)> = partial[qi * n_chunks..(qi + 1) * n_chunks]
                .iter()
                .flatten()
                .copied()
                .collect();
            keep_best(&mut all, k, metric);
            for (r, (s, i)) in all.into_iter().enumerate() {
                s_out[r] = s;
                i_out[r] = i;
            }
        });
}

fn inv_norm(sq: f32) -> f32 {
    if sq > 0.0 { 1.0 / sq.sqrt() } else { 0.0 }
}
