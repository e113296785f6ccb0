//! Safe view of an operation: what it computes and how many bytes each buffer must hold.

use crate::error::BackendError;
use crate::ffi::{self, AbiOp};

/// Similarity or distance used by [`Op::DistanceTopk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine similarity, best = highest.
    Cosine,
    /// Dot product, best = highest.
    Dot,
    /// Squared euclidean distance, best = lowest.
    L2,
}

impl Metric {
    /// The `ABI_METRIC_*` code.
    pub fn code(self) -> u32 {
        match self {
            Metric::Cosine => ffi::ABI_METRIC_COSINE,
            Metric::Dot => ffi::ABI_METRIC_DOT,
            Metric::L2 => ffi::ABI_METRIC_L2,
        }
    }

    /// Parses an `ABI_METRIC_*` code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            ffi::ABI_METRIC_COSINE => Some(Metric::Cosine),
            ffi::ABI_METRIC_DOT => Some(Metric::Dot),
            ffi::ABI_METRIC_L2 => Some(Metric::L2),
            _ => None,
        }
    }

    /// True when a higher score is better.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Stable lowercase name (`cosine`, `dot`, `l2`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Parses [`Metric::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "cosine" => Some(Metric::Cosine),
            "dot" => Some(Metric::Dot),
            "l2" => Some(Metric::L2),
            _ => None,
        }
    }
}

/// Kind of an op without its dimensions (also the capability bit index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// See [`Op::VectorAdd`].
    VectorAdd,
    /// See [`Op::Matmul`].
    Matmul,
    /// See [`Op::ReduceSum`].
    ReduceSum,
    /// See [`Op::Dot`].
    Dot,
    /// See [`Op::Softmax`].
    Softmax,
    /// See [`Op::DistanceTopk`].
    DistanceTopk,
}

impl OpKind {
    /// Every op of this ABI version.
    pub const ALL: [OpKind; 6] = [
        OpKind::VectorAdd,
        OpKind::Matmul,
        OpKind::ReduceSum,
        OpKind::Dot,
        OpKind::Softmax,
        OpKind::DistanceTopk,
    ];

    /// The `ABI_OP_*` code.
    pub fn code(self) -> u32 {
        match self {
            OpKind::VectorAdd => ffi::ABI_OP_VECTOR_ADD,
            OpKind::Matmul => ffi::ABI_OP_MATMUL,
            OpKind::ReduceSum => ffi::ABI_OP_REDUCE_SUM,
            OpKind::Dot => ffi::ABI_OP_DOT,
            OpKind::Softmax => ffi::ABI_OP_SOFTMAX,
            OpKind::DistanceTopk => ffi::ABI_OP_DISTANCE_TOPK,
        }
    }

    /// Capability bit.
    pub fn bit(self) -> u64 {
        1u64 << self.code()
    }

    /// Bits of every op.
    pub fn all_bits() -> u64 {
        Self::ALL.iter().fold(0, |acc, k| acc | k.bit())
    }

    /// Stable snake_case name used in HTTP routes.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::VectorAdd => "vector_add",
            OpKind::Matmul => "matmul",
            OpKind::ReduceSum => "reduce_sum",
            OpKind::Dot => "dot",
            OpKind::Softmax => "softmax",
            OpKind::DistanceTopk => "distance_topk",
        }
    }

    /// Parses [`OpKind::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// A validated operation with its dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c[n] = a[n] + b[n]`.
    VectorAdd {
        /// Elements.
        n: usize,
    },
    /// `c[m*n] = a[m*k] x b[k*n]`, row-major f32.
    Matmul {
        /// Rows of a and c.
        m: usize,
        /// Columns of a, rows of b.
        k: usize,
        /// Columns of b and c.
        n: usize,
    },
    /// `y[0] = sum x[n]`.
    ReduceSum {
        /// Elements.
        n: usize,
    },
    /// `y[0] = sum a[i] * b[i]`.
    Dot {
        /// Elements.
        n: usize,
    },
    /// Row-wise softmax of a `rows x cols` matrix.
    Softmax {
        /// Rows.
        rows: usize,
        /// Columns (softmax axis).
        cols: usize,
    },
    /// For each of `queries` query rows, the `k` best of `n` vectors of dimension `dim`:
    /// outputs `scores: f32[queries*k]` and `indices: u32[queries*k]`, best first.
    DistanceTopk {
        /// Query rows.
        queries: usize,
        /// Vector dimension.
        dim: usize,
        /// Base vectors.
        n: usize,
        /// Results per query (1..=n).
        k: usize,
        /// Scoring.
        metric: Metric,
    },
}

/// Largest element count of any single buffer an op may address (keeps byte sizes in u64 and
/// index outputs in u32).
pub const MAX_ELEMENTS: u64 = u32::MAX as u64;

fn dim(v: u64, what: &str) -> Result<usize, BackendError> {
    if v == 0 || v > MAX_ELEMENTS {
        return Err(BackendError::invalid(format!(
            "{what} must be in 1..={MAX_ELEMENTS}, got {v}"
        )));
    }
    usize::try_from(v).map_err(|_| BackendError::invalid(format!("{what} too large: {v}")))
}

fn product(parts: &[usize], what: &str) -> Result<usize, BackendError> {
    let mut p: u64 = 1;
    for &x in parts {
        p = p
            .checked_mul(x as u64)
            .filter(|p| *p <= MAX_ELEMENTS)
            .ok_or_else(|| BackendError::invalid(format!("{what} has too many elements")))?;
    }
    Ok(p as usize)
}

impl Op {
    /// Its kind.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::VectorAdd { .. } => OpKind::VectorAdd,
            Op::Matmul { .. } => OpKind::Matmul,
            Op::ReduceSum { .. } => OpKind::ReduceSum,
            Op::Dot { .. } => OpKind::Dot,
            Op::Softmax { .. } => OpKind::Softmax,
            Op::DistanceTopk { .. } => OpKind::DistanceTopk,
        }
    }

    /// Checks the dimensions (non-zero, element counts fit, `k <= n`).
    pub fn validate(&self) -> Result<(), BackendError> {
        let raw = self.to_abi();
        Op::from_abi(&raw).map(|_| ())
    }

    /// Parses and validates a raw op.
    pub fn from_abi(op: &AbiOp) -> Result<Self, BackendError> {
        if (op.struct_size as usize) < size_of::<AbiOp>() {
            return Err(BackendError::invalid(format!(
                "abi_op.struct_size {} < {}",
                op.struct_size,
                size_of::<AbiOp>()
            )));
        }
        let parsed = match op.kind {
            ffi::ABI_OP_VECTOR_ADD => Op::VectorAdd { n: dim(op.n, "n")? },
            ffi::ABI_OP_REDUCE_SUM => Op::ReduceSum { n: dim(op.n, "n")? },
            ffi::ABI_OP_DOT => Op::Dot { n: dim(op.n, "n")? },
            ffi::ABI_OP_MATMUL => Op::Matmul {
                m: dim(op.m, "m")?,
                k: dim(op.k, "k")?,
                n: dim(op.n, "n")?,
            },
            ffi::ABI_OP_SOFTMAX => Op::Softmax {
                rows: dim(op.m, "rows (m)")?,
                cols: dim(op.n, "cols (n)")?,
            },
            ffi::ABI_OP_DISTANCE_TOPK => {
                let metric = Metric::from_code(op.metric).ok_or_else(|| {
                    BackendError::invalid(format!("unknown metric {}", op.metric))
                })?;
                let n = dim(op.n, "n")?;
                let k = dim(u64::from(op.top_k), "top_k")?;
                if k > n {
                    return Err(BackendError::invalid(format!("top_k {k} > n {n}")));
                }
                Op::DistanceTopk {
                    queries: dim(op.m, "queries (m)")?,
                    dim: dim(op.k, "dim (k)")?,
                    n,
                    k,
                    metric,
                }
            }
            other => {
                return Err(BackendError::unsupported(format!(
                    "unknown op code {other}"
                )));
            }
        };
        // Every buffer's element count must fit in u32 (indices) and u64 bytes.
        parsed.input_elems_checked()?;
        parsed.output_elems_checked()?;
        Ok(parsed)
    }

    /// The raw form.
    pub fn to_abi(&self) -> AbiOp {
        let mut op = AbiOp {
            struct_size: size_of::<AbiOp>() as u32,
            kind: self.kind().code(),
            m: 0,
            k: 0,
            n: 0,
            top_k: 0,
            metric: 0,
        };
        match *self {
            Op::VectorAdd { n } | Op::ReduceSum { n } | Op::Dot { n } => op.n = n as u64,
            Op::Matmul { m, k, n } => {
                op.m = m as u64;
                op.k = k as u64;
                op.n = n as u64;
            }
            Op::Softmax { rows, cols } => {
                op.m = rows as u64;
                op.n = cols as u64;
            }
            Op::DistanceTopk {
                queries,
                dim,
                n,
                k,
                metric,
            } => {
                op.m = queries as u64;
                op.k = dim as u64;
                op.n = n as u64;
                op.top_k = u32::try_from(k).unwrap_or(u32::MAX);
                op.metric = metric.code();
            }
        }
        op
    }

    fn input_elems_checked(&self) -> Result<Vec<usize>, BackendError> {
        Ok(match *self {
            Op::VectorAdd { n } | Op::Dot { n } => vec![n, n],
            Op::ReduceSum { n } => vec![n],
            Op::Matmul { m, k, n } => vec![product(&[m, k], "a")?, product(&[k, n], "b")?],
            Op::Softmax { rows, cols } => vec![product(&[rows, cols], "x")?],
            Op::DistanceTopk {
                queries, dim, n, ..
            } => vec![
                product(&[queries, dim], "queries")?,
                product(&[n, dim], "vectors")?,
            ],
        })
    }

    fn output_elems_checked(&self) -> Result<Vec<usize>, BackendError> {
        Ok(match *self {
            Op::VectorAdd { n } => vec![n],
            Op::ReduceSum { .. } | Op::Dot { .. } => vec![1],
            Op::Matmul { m, n, .. } => vec![product(&[m, n], "c")?],
            Op::Softmax { rows, cols } => vec![product(&[rows, cols], "y")?],
            Op::DistanceTopk { queries, k, .. } => {
                let e = product(&[queries, k], "scores")?;
                vec![e, e]
            }
        })
    }

    /// Element counts (f32, or u32 for indices) of each input, in order.
    /// Only meaningful on a validated op.
    pub fn input_elems(&self) -> Vec<usize> {
        self.input_elems_checked().unwrap_or_default()
    }

    /// Element counts of each output, in order. Only meaningful on a validated op.
    pub fn output_elems(&self) -> Vec<usize> {
        self.output_elems_checked().unwrap_or_default()
    }

    /// Floating point operations performed (for GFLOP/s figures).
    pub fn flops(&self) -> f64 {
        match *self {
            Op::VectorAdd { n } | Op::ReduceSum { n } => n as f64,
            Op::Dot { n } => 2.0 * n as f64,
            Op::Matmul { m, k, n } => 2.0 * m as f64 * k as f64 * n as f64,
            Op::Softmax { rows, cols } => 4.0 * rows as f64 * cols as f64,
            Op::DistanceTopk {
                queries, dim, n, ..
            } => 3.0 * queries as f64 * n as f64 * dim as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_ops_round_trip_and_bad_ones_are_refused() {
        let ops = [
            Op::VectorAdd { n: 3 },
            Op::Matmul { m: 2, k: 3, n: 4 },
            Op::ReduceSum { n: 1 },
            Op::Dot { n: 7 },
            Op::Softmax { rows: 2, cols: 5 },
            Op::DistanceTopk {
                queries: 2,
                dim: 3,
                n: 10,
                k: 10,
                metric: Metric::L2,
            },
        ];
        for op in ops {
            assert_eq!(Op::from_abi(&op.to_abi()), Ok(op));
        }
        let mut raw = Op::VectorAdd { n: 0 }.to_abi();
        assert!(Op::from_abi(&raw).is_err(), "zero length");
        raw.n = 4;
        raw.struct_size = 8;
        assert!(Op::from_abi(&raw).is_err(), "short struct");
        raw.struct_size = size_of::<AbiOp>() as u32;
        raw.kind = 99;
        assert_eq!(
            Op::from_abi(&raw).map_err(|e| e.kind),
            Err(crate::ErrorKind::Unsupported)
        );
        let mut t = Op::DistanceTopk {
            queries: 1,
            dim: 1,
            n: 2,
            k: 2,
            metric: Metric::Dot,
        }
        .to_abi();
        t.top_k = 3;
        assert!(Op::from_abi(&t).is_err(), "k > n");
        t.top_k = 1;
        t.metric = 7;
        assert!(Op::from_abi(&t).is_err(), "unknown metric");
        // Element counts that overflow u32 are refused (indices are u32).
        let big = Op::Matmul {
            m: 1 << 20,
            k: 1 << 20,
            n: 1,
        };
        assert!(big.validate().is_err());
    }
}
