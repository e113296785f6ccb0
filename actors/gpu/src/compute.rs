//! Turning a protocol [`ComputeOp`] into a validated SDK op plus its host operands.

use abi_protocol::gpu::{ComputeOp, GpuError};
use abi_sdk::{Metric, Op};

fn need(cond: bool, msg: impl FnOnce() -> String) -> Result<(), GpuError> {
    if cond {
        Ok(())
    } else {
        Err(GpuError::InvalidInput(msg()))
    }
}

/// Validates shapes and returns the op with its inputs in ABI order.
pub fn to_sdk(op: &ComputeOp) -> Result<(Op, Vec<&[f32]>), GpuError> {
    let (sdk, inputs): (Op, Vec<&[f32]>) = match op {
        ComputeOp::VectorAdd { a, b } => {
            need(a.len() == b.len(), || {
                format!("a has {} values, b has {}", a.len(), b.len())
            })?;
            (Op::VectorAdd { n: a.len() }, vec![a, b])
        }
        ComputeOp::Dot { a, b } => {
            need(a.len() == b.len(), || {
                format!("a has {} values, b has {}", a.len(), b.len())
            })?;
            (Op::Dot { n: a.len() }, vec![a, b])
        }
        ComputeOp::ReduceSum { x } => (Op::ReduceSum { n: x.len() }, vec![x]),
        ComputeOp::Matmul { m, k, n, a, b } => {
            let (m, k, n) = (*m as usize, *k as usize, *n as usize);
            need(a.len() == m * k, || {
                format!("a has {} values, m*k = {}", a.len(), m * k)
            })?;
            need(b.len() == k * n, || {
                format!("b has {} values, k*n = {}", b.len(), k * n)
            })?;
            (Op::Matmul { m, k, n }, vec![a, b])
        }
        ComputeOp::Softmax { rows, cols, x } => {
            let (rows, cols) = (*rows as usize, *cols as usize);
            need(x.len() == rows * cols, || {
                format!("x has {} values, rows*cols = {}", x.len(), rows * cols)
            })?;
            (Op::Softmax { rows, cols }, vec![x])
        }
        ComputeOp::DistanceTopk {
            dim,
            k,
            metric,
            queries,
            vectors,
        } => {
            let dim = *dim as usize;
            need(dim > 0, || "dim must be > 0".into())?;
            need(queries.len() % dim == 0 && !queries.is_empty(), || {
                format!(
                    "queries has {} values, not a non-zero multiple of dim {dim}",
                    queries.len()
                )
            })?;
            need(vectors.len() % dim == 0 && !vectors.is_empty(), || {
                format!(
                    "vectors has {} values, not a non-zero multiple of dim {dim}",
                    vectors.len()
                )
            })?;
            let metric = Metric::from_name(metric).ok_or_else(|| {
                GpuError::InvalidInput(format!("metric `{metric}`: expected cosine, dot or l2"))
            })?;
            (
                Op::DistanceTopk {
                    queries: queries.len() / dim,
                    dim,
                    n: vectors.len() / dim,
                    k: *k as usize,
                    metric,
                },
                vec![queries, vectors],
            )
        }
    };
    sdk.validate()
        .map_err(|e| GpuError::InvalidInput(e.message))?;
    Ok((sdk, inputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_checked_before_any_backend_sees_them() {
        let bad = ComputeOp::Matmul {
            m: 2,
            k: 2,
            n: 2,
            a: vec![1.0; 3],
            b: vec![1.0; 4],
        };
        assert!(matches!(to_sdk(&bad), Err(GpuError::InvalidInput(_))));
        let empty = ComputeOp::ReduceSum { x: vec![] };
        assert!(matches!(to_sdk(&empty), Err(GpuError::InvalidInput(_))));
        let k_too_big = ComputeOp::DistanceTopk {
            dim: 2,
            k: 3,
            metric: "l2".into(),
            queries: vec![0.0; 2],
            vectors: vec![0.0; 4],
        };
        assert!(matches!(to_sdk(&k_too_big), Err(GpuError::InvalidInput(_))));
        let metric = ComputeOp::DistanceTopk {
            dim: 1,
            k: 1,
            metric: "hamming".into(),
            queries: vec![0.0],
            vectors: vec![0.0],
        };
        assert!(matches!(to_sdk(&metric), Err(GpuError::InvalidInput(_))));
        let ok = ComputeOp::VectorAdd {
            a: vec![1.0],
            b: vec![2.0],
        };
        assert_eq!(to_sdk(&ok).expect("valid").0, Op::VectorAdd { n: 1 });
    }
}
