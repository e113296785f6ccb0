//! Quantized weight matrices repacked at load time for fast CPU matmuls, with runtime SIMD
//! dispatch (AVX2/FMA when the CPU has it, portable code otherwise). No `-C target-cpu=native`
//! is needed: the binary is built for plain x86-64 and picks the kernel when it starts.
//!
//! - GGML `Q4_1` (4-bit, per-32 scale and minimum) -> [`Q41Matrix`] (scales as f32).
//! - GGML `Q8_0` (8-bit, per-32 scale) -> [`Q80Matrix`] (scales as f32).
//!
//! Activations are quantized per row to 8 bits ([`Q8Row`], llama.cpp's `Q8_1`), so the inner
//! loops are integer dot products, as in llama.cpp.

use rayon::prelude::*;

use crate::error::{EngineError, Result};
use crate::native;

/// Elements per quantization block.
pub const QK: usize = 32;

/// IEEE half -> f32 (load time only).
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = (bits as u32 & 0x8000) << 16;
    let exp = (bits >> 10) & 0x1f;
    let frac = (bits & 0x3ff) as u32;
    let v = match exp {
        0 => {
            // subnormal: frac * 2^-24
            let f = frac as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -f } else { f };
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        e => sign | ((e as u32 + 112) << 23) | (frac << 13),
    };
    f32::from_bits(v)
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// One activation block quantized to 8 bits.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Q8Block {
    /// Scale.
    pub d: f32,
    /// `d * sum(qs)` (needed by Q4_1's minimum term).
    pub s: f32,
    /// Quantized values.
    pub qs: [i8; QK],
}

/// A row of activations quantized block-wise.
pub type Q8Row = Vec<Q8Block>;

/// Quantizes `x` (length a multiple of 32) like llama.cpp's `quantize_row_q8_1`.
pub fn quantize_row(x: &[f32]) -> Q8Row {
    x.chunks_exact(QK)
        .map(|c| {
            let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; QK];
            let mut sum = 0i32;
            for (q, v) in qs.iter_mut().zip(c) {
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
            Q8Block {
                d,
                s: d * sum as f32,
                qs,
            }
        })
        .collect()
}

/// A `Q4_1` matrix `[rows, cols]` (rows = output features), repacked: per block an f32
/// scale, an f32 minimum and 16 bytes of nibbles (element j low, j+16 high).
pub struct Q41Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    m: Vec<f32>,
    qs: Vec<u8>,
}

/// An 8-bit `Q8_0` matrix `[rows, cols]`, repacked with f32 scales.
pub struct Q80Matrix {
    rows: usize,
    cols: usize,
    d: Vec<f32>,
    qs: Vec<i8>,
}

fn check_shape(len: usize, rows: usize, cols: usize, block_bytes: usize, what: &str) -> Result<()> {
    if !cols.is_multiple_of(QK) || len != rows * cols / QK * block_bytes {
        return Err(EngineError::InvalidInput(format!(
            "{what}: {len} bytes do not hold a [{rows}, {cols}] matrix"
        )));
    }
    Ok(())
}

impl Q41Matrix {
    /// Repacks GGML `Q4_1` bytes (20-byte blocks: f16 d, f16 m, 16 nibble bytes).
    pub fn from_ggml(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        check_shape(bytes.len(), rows, cols, 20, "Q4_1")?;
        let n = rows * cols / QK;
        let mut d = Vec::with_capacity(n);
        let mut m = Vec::with_capacity(n);
        let mut qs = Vec::with_capacity(n * 16);
        for b in bytes.chunks_exact(20) {
            d.push(half_at(b, 0));
            m.push(half_at(b, 2));
            qs.extend_from_slice(&b[4..20]);
        }
        Ok(Self {
            rows,
            cols,
            d,
            m,
            qs,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn dot(&self, r: usize, y: &[Q8Block]) -> f32 {
        let nb = self.cols / QK;
        let at = r * nb;
        native::dot_q4_1(
            &self.d[at..at + nb],
            &self.m[at..at + nb],
            &self.qs[at * 16..(at + nb) * 16],
            y,
        )
    }

    /// `y = x W^T` for `x` of `[m, cols]` (row-major), giving `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let xq: Vec<Q8Row> = x
            .chunks_exact(self.cols)
            .take(m)
            .map(quantize_row)
            .collect();
        par_rows(self.rows, m, |r, i| self.dot(r, &xq[i]))
    }
}

impl Q80Matrix {
    /// Repacks GGML `Q8_0` bytes (34-byte blocks: f16 d, 32 i8).
    pub fn from_ggml(bytes: &[u8], rows: usize, cols: usize) -> Result<Self> {
        check_shape(bytes.len(), rows, cols, 34, "Q8_0")?;
        let n = rows * cols / QK;
        let mut d = Vec::with_capacity(n);
        let mut qs = Vec::with_capacity(n * QK);
        for b in bytes.chunks_exact(34) {
            d.push(half_at(b, 0));
            qs.extend(b[2..34].iter().map(|&x| x as i8));
        }
        Ok(Self { rows, cols, d, qs })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Dequantizes row `r` (an embedding lookup).
    pub fn row(&self, r: usize) -> Vec<f32> {
        let nb = self.cols / QK;
        (0..self.cols)
            .map(|j| self.d[r * nb + j / QK] * self.qs[r * self.cols + j] as f32)
            .collect()
    }

    /// `y = x W^T` for `x` of `[m, cols]`, giving `[m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        let nb = self.cols / QK;
        let xq: Vec<Q8Row> = x
            .chunks_exact(self.cols)
            .take(m)
            .map(quantize_row)
            .collect();
        par_rows(self.rows, m, |r, i| {
            native::dot_q8_0(
                &self.d[r * nb..(r + 1) * nb],
                &self.qs[r * self.cols..(r + 1) * self.cols],
                &xq[i],
            )
        })
    }
}

/// Computes `out[i][r] = f(r, i)` for `rows` weight rows and `m` activation rows, splitting
/// weight rows across threads (each weight row is read once for all activation rows).
fn par_rows(rows: usize, m: usize, f: impl Fn(usize, usize) -> f32 + Sync) -> Vec<f32> {
    const CHUNK: usize = 64;
    let mut t = vec![0f32; rows * m]; // [rows, m]
    t.par_chunks_mut(CHUNK * m)
        .enumerate()
        .for_each(|(c, out)| {
            for (k, o) in out.chunks_exact_mut(m).enumerate() {
                let r = c * CHUNK + k;
                for (i, v) in o.iter_mut().enumerate() {
                    *v = f(r, i);
                }
            }
        });
    if m == 1 {
        return t;
    }
    let mut y = vec![0f32; rows * m];
    for r in 0..rows {
        for i in 0..m {
            y[i * rows + r] = t[r * m + i];
        }
    }
    y
}

/// Portable kernels (also the reference the SIMD ones are tested against).
pub mod portable {
    use super::{Q8Block, QK};

    /// `Q4_1 . Q8` over a row.
    pub fn dot_q4_1(d: &[f32], m: &[f32], qs: &[u8], y: &[Q8Block]) -> f32 {
        let mut sum = 0f32;
        for (b, yb) in y.iter().enumerate() {
            let q = &qs[b * 16..b * 16 + 16];
            let (lo, hi) = yb.qs.split_at(16);
            let acc: i32 = q
                .iter()
                .zip(lo.iter().zip(hi))
                .map(|(&q, (&l, &h))| (q & 0x0f) as i32 * l as i32 + (q >> 4) as i32 * h as i32)
                .sum();
            sum += d[b] * yb.d * acc as f32 + m[b] * yb.s;
        }
        sum
    }

    /// `Q8_0 . Q8` over a row.
    pub fn dot_q8_0(d: &[f32], qs: &[i8], y: &[Q8Block]) -> f32 {
        let mut sum = 0f32;
        for (b, yb) in y.iter().enumerate() {
            let q = &qs[b * QK..b * QK + QK];
            let acc: i32 = q
                .iter()
                .zip(&yb.qs)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            sum += d[b] * yb.d * acc as f32;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    }

    fn f16_bits(x: f32) -> [u8; 2] {
        // Round-trip-safe for the simple values used here (exact in f16).
        let b = x.to_bits();
        let sign = ((b >> 16) & 0x8000) as u16;
        let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
        let frac = ((b >> 13) & 0x3ff) as u16;
        let h = if x == 0.0 {
            sign
        } else {
            sign | ((exp as u16) << 10) | frac
        };
        h.to_le_bytes()
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
    }

    #[test]
    fn q4_1_matmul_matches_dequantized_reference_and_portable_kernel() {
        let (rows, cols, m) = (70, 96, 3);
        let mut seed = 42;
        let mut bytes = Vec::new();
        let mut dense = vec![0f32; rows * cols];
        for r in 0..rows {
            for b in 0..cols / QK {
                let (d, mn) = (0.125f32, -0.5f32);
                bytes.extend_from_slice(&f16_bits(d));
                bytes.extend_from_slice(&f16_bits(mn));
                for j in 0..16 {
                    let lo = ((lcg(&mut seed) + 1.0) * 7.9) as u8 & 0xf;
                    let hi = ((lcg(&mut seed) + 1.0) * 7.9) as u8 & 0xf;
                    bytes.push(lo | (hi << 4));
                    dense[r * cols + b * QK + j] = d * lo as f32 + mn;
                    dense[r * cols + b * QK + j + 16] = d * hi as f32 + mn;
                }
            }
        }
        let w = Q41Matrix::from_ggml(&bytes, rows, cols).expect("shape");
        let x: Vec<f32> = (0..m * cols).map(|_| lcg(&mut seed)).collect();
        let y = w.matmul(&x, m);
        for i in 0..m {
            let xq = quantize_row(&x[i * cols..(i + 1) * cols]);
            for r in 0..rows {
                let exact: f32 = (0..cols)
                    .map(|j| dense[r * cols + j] * x[i * cols + j])
                    .sum();
                let got = y[i * rows + r];
                assert!((got - exact).abs() < 0.05, "row {r}: {got} vs {exact}");
                let nb = cols / QK;
                let p = portable::dot_q4_1(
                    &w.d[r * nb..(r + 1) * nb],
                    &w.m[r * nb..(r + 1) * nb],
                    &w.qs[r * nb * 16..(r + 1) * nb * 16],
                    &xq,
                );
                assert!((got - p).abs() < 1e-3, "simd {got} vs portable {p}");
            }
        }
    }

    #[test]
    fn q8_0_matmul_matches_dequantized_reference() {
        let (rows, cols) = (33, 64);
        let mut seed = 7;
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / QK {
            bytes.extend_from_slice(&f16_bits(0.0625));
            for _ in 0..QK {
                bytes.push(((lcg(&mut seed) * 127.0) as i8) as u8);
            }
        }
        let w = Q80Matrix::from_ggml(&bytes, rows, cols).expect("shape");
        let x: Vec<f32> = (0..cols).map(|_| lcg(&mut seed)).collect();
        let y = w.matmul(&x, 1);
        for (r, got) in y.iter().enumerate() {
            let exact: f32 = w.row(r).iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!(
                (got - exact).abs() < 0.05 * exact.abs().max(1.0),
                "{got} vs {exact}"
            );
        }
    }

    #[test]
    fn rejects_wrong_sizes() {
        assert!(Q41Matrix::from_ggml(&[0; 19], 1, 32).is_err());
        assert!(Q80Matrix::from_ggml(&[0; 34], 1, 48).is_err());
    }
}
