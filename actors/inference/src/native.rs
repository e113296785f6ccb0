//! Everything in this crate that needs `unsafe`: memory-mapped model files and the AVX2/FMA
//! dot-product kernels (picked at run time; portable code otherwise).

use std::path::Path;
use std::sync::OnceLock;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::error::{EngineError, Result};
use crate::quant::{Q8Block, portable};

/// A `VarBuilder` over a memory-mapped safetensors file.
pub fn safetensors_var_builder(
    path: &Path,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>> {
    // SAFETY: the mapping is read-only and model files are never modified while a node runs
    // (fetch-models.sh renames complete files into place); a file truncated under us would be a
    // deployment error, the usual caveat of mmap.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }
        .map_err(|e| EngineError::load(path, e))
}

/// True when the CPU has AVX2 and FMA (checked once).
pub fn has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `Q4_1 . Q8` over one row: `sum_b d_b * y.d * <q, y.qs> + m_b * y.s`.
pub fn dot_q4_1(d: &[f32], m: &[f32], qs: &[u8], y: &[Q8Block]) -> f32 {
    assert!(d.len() == y.len() && m.len() == y.len() && qs.len() == y.len() * 16);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are present (checked above); the slices have the lengths the
        // kernel reads (asserted above).
        return unsafe { avx2::dot_q4_1(d, m, qs, y) };
    }
    portable::dot_q4_1(d, m, qs, y)
}

/// `Q8_0 . Q8` over one row.
pub fn dot_q8_0(d: &[f32], qs: &[i8], y: &[Q8Block]) -> f32 {
    assert!(d.len() == y.len() && qs.len() == y.len() * 32);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: AVX2 and FMA are present; lengths asserted above.
        return unsafe { avx2::dot_q8_0(d, qs, y) };
    }
    portable::dot_q8_0(d, qs, y)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::Q8Block;

    #[target_feature(enable = "avx2,fma")]
    fn hsum(x: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(x, 1);
        let s = _mm_add_ps(hi, _mm256_castps256_ps128(x));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// Needs AVX2+FMA; `qs` holds `16 * y.len()` bytes, `d` and `m` `y.len()` values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q4_1(d: &[f32], m: &[f32], qs: &[u8], y: &[Q8Block]) -> f32 {
        let low = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut mins = 0f32;
        let mut b = 0;
        let n = y.len();
        // Two blocks per iteration: independent accumulators hide the FMA latency.
        while b + 1 < n {
            for (k, acc) in [(0usize, &mut acc0), (1, &mut acc1)] {
                let yb = &y[b + k];
                // SAFETY: b + k < n, so bytes (b+k)*16 .. +16 and the 32 i8 of yb are in bounds.
                let (packed, yv) = unsafe {
                    (
                        _mm_loadu_si128(qs.as_ptr().add((b + k) * 16) as *const __m128i),
                        _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i),
                    )
                };
                let nib = _mm256_and_si256(
                    low,
                    _mm256_insertf128_si256::<1>(
                        _mm256_castsi128_si256(packed),
                        _mm_srli_epi16(packed, 4),
                    ),
                );
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, yv), ones);
                let scale = _mm256_set1_ps(d[b + k] * yb.d);
                *acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), *acc);
                mins += m[b + k] * yb.s;
            }
            b += 2;
        }
        if b < n {
            let yb = &y[b];
            // SAFETY: b < n, as above.
            let (packed, yv) = unsafe {
                (
                    _mm_loadu_si128(qs.as_ptr().add(b * 16) as *const __m128i),
                    _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i),
                )
            };
            let nib = _mm256_and_si256(
                low,
                _mm256_insertf128_si256::<1>(
                    _mm256_castsi128_si256(packed),
                    _mm_srli_epi16(packed, 4),
                ),
            );
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(nib, yv), ones);
            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(d[b] * yb.d), _mm256_cvtepi32_ps(p), acc0);
            mins += m[b] * yb.s;
        }
        hsum(_mm256_add_ps(acc0, acc1)) + mins
    }

    /// # Safety
    /// Needs AVX2+FMA; `qs` holds `32 * y.len()` values, `d` `y.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_q8_0(d: &[f32], qs: &[i8], y: &[Q8Block]) -> f32 {
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for (b, yb) in y.iter().enumerate() {
            // SAFETY: b < y.len(), so 32 values at b*32 are in bounds.
            let (xv, yv) = unsafe {
                (
                    _mm256_loadu_si256(qs.as_ptr().add(b * 32) as *const __m256i),
                    _mm256_loadu_si256(yb.qs.as_ptr() as *const __m256i),
                )
            };
            // |x| * sign(y, x): maddubs needs one unsigned operand.
            let ax = _mm256_sign_epi8(xv, xv);
            let sy = _mm256_sign_epi8(yv, xv);
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(d[b] * yb.d), _mm256_cvtepi32_ps(p), acc);
        }
        hsum(acc)
    }
}
