//! Scalar reference implementations (f64 accumulation): the ground truth the conformance suite
//! compares every backend against, and a definition of each op's semantics in code.

use crate::op::Metric;

/// `a + b`.
pub fn vector_add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Row-major `a[m*k] x b[k*n]`.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

/// Sum of elements.
pub fn reduce_sum(x: &[f32]) -> f32 {
    x.iter().map(|v| f64::from(*v)).sum::<f64>() as f32
}

/// Dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum::<f64>() as f32
}

/// Row-wise softmax (max-subtracted).
pub fn softmax(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut y = vec![0f32; rows * cols];
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let max = row
            .iter()
            .fold(f64::NEG_INFINITY, |m, v| m.max(f64::from(*v)));
        let exps: Vec<f64> = row.iter().map(|v| (f64::from(*v) - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        for (c, e) in exps.iter().enumerate() {
            y[r * cols + c] = (e / sum) as f32;
        }
    }
    y
}

/// Score of one (query, vector) pair under `metric`, in f64.
pub fn score(q: &[f32], v: &[f32], metric: Metric) -> f64 {
    match metric {
        Metric::Dot => q
            .iter()
            .zip(v)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum(),
        Metric::Cosine => {
            let (mut d, mut nq, mut nv) = (0f64, 0f64, 0f64);
            for (a, b) in q.iter().zip(v) {
                let (a, b) = (f64::from(*a), f64::from(*b));
                d += a * b;
                nq += a * a;
                nv += b * b;
            }
            let den = (nq * nv).sqrt();
            if den > 0.0 { d / den } else { 0.0 }
        }
        Metric::L2 => q
            .iter()
            .zip(v)
            .map(|(a, b)| {
                let d = f64::from(*a) - f64::from(*b);
                d * d
            })
            .sum(),
    }
}

/// All scores, `queries x n`, row-major.
pub fn all_scores(q: &[f32], v: &[f32], dim: usize, metric: Metric) -> Vec<Vec<f64>> {
    q.chunks_exact(dim)
        .map(|qq| {
            v.chunks_exact(dim)
                .map(|vv| score(qq, vv, metric))
                .collect()
        })
        .collect()
}

/// Best `k` per query: (scores, indices), best first, ties to the lower index.
pub fn distance_topk(
    q: &[f32],
    v: &[f32],
    dim: usize,
    k: usize,
    metric: Metric,
) -> (Vec<f32>, Vec<u32>) {
    let mut scores = Vec::new();
    let mut idx = Vec::new();
    for row in all_scores(q, v, dim, metric) {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| {
            let o = if metric.higher_is_better() {
                row[b].total_cmp(&row[a])
            } else {
                row[a].total_cmp(&row[b])
            };
            o.then(a.cmp(&b))
        });
        for &i in order.iter().take(k) {
            scores.push(row[i] as f32);
            idx.push(i as u32);
        }
    }
    (scores, idx)
}
