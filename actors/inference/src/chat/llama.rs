//! A llama-family decoder for GGUF weights, written for small models on CPU: plain f32 slices
//! between layers (no per-op tensor overhead), quantized matmuls through [`crate::quant`]'s
//! repacked weights and SIMD kernels, an f32 KV cache. Covers what SmolLM2/Llama-style GGUFs
//! use: RMSNorm, GQA attention with (non-NeoX) RoPE, SwiGLU MLP, tied or separate output.

use candle_core::Device;
use candle_core::quantized::gguf_file::Content;
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

use super::model::CausalLm;
use crate::error::{EngineError, Result};
use crate::quant::{Q41Matrix, Q80Matrix};

/// A weight matrix `[rows = out, cols = in]` in the fastest form we have for its type.
enum Linear {
    Q41(Q41Matrix),
    Q80(Q80Matrix),
    F32 {
        w: Vec<f32>,
        rows: usize,
        cols: usize,
    },
}

impl Linear {
    fn from_qtensor(t: &QTensor, name: &str) -> Result<Self> {
        let (rows, cols) = t.shape().dims2().map_err(|e| bad(name, e))?;
        let data = t.data().map_err(|e| bad(name, e))?;
        Ok(match t.dtype() {
            GgmlDType::Q4_1 => Self::Q41(Q41Matrix::from_ggml(&data, rows, cols)?),
            GgmlDType::Q8_0 => Self::Q80(Q80Matrix::from_ggml(&data, rows, cols)?),
            _ => Self::F32 {
                w: t.dequantize(&Device::Cpu)
                    .and_then(|x| x.flatten_all()?.to_vec1::<f32>())
                    .map_err(|e| bad(name, e))?,
                rows,
                cols,
            },
        })
    }

    fn rows(&self) -> usize {
        match self {
            Self::Q41(m) => m.rows(),
            Self::Q80(m) => m.rows(),
            Self::F32 { rows, .. } => *rows,
        }
    }

    /// `x [m, cols] -> [m, rows]`.
    fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        match self {
            Self::Q41(w) => w.matmul(x, m),
            Self::Q80(w) => w.matmul(x, m),
            Self::F32 { w, rows, cols } => {
                let mut y = vec![0f32; m * rows];
                y.par_chunks_mut(*rows).enumerate().for_each(|(i, out)| {
                    let xi = &x[i * cols..(i + 1) * cols];
                    for (r, o) in out.iter_mut().enumerate() {
                        *o = dot(&w[r * cols..(r + 1) * cols], xi);
                    }
                });
                y
            }
        }
    }
}

fn bad(name: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidInput(format!("tensor {name}: {e}"))
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// Cached keys and values, `[positions, kv_heads * head_dim]` each.
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// The model, its RoPE tables and its KV cache.
pub struct QLlama {
    embd: Q80OrF32,
    output: Linear,
    norm: Vec<f32>,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
    context: usize,
    /// `cos`/`sin` of position * frequency, `[context, head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    cached: usize,
}

/// Token embeddings: kept quantized when they are Q8_0 (rows dequantized on lookup).
enum Q80OrF32 {
    Q80(Q80Matrix),
    F32 { w: Vec<f32>, cols: usize },
}

impl Q80OrF32 {
    fn row(&self, r: usize) -> Vec<f32> {
        match self {
            Self::Q80(m) => m.row(r),
            Self::F32 { w, cols } => w[r * cols..(r + 1) * cols].to_vec(),
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums so the compiler vectorises it even for baseline x86-64 (SSE2).
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let scale = 1.0 / (ms + eps).sqrt();
    for ((o, v), g) in out.iter_mut().zip(x).zip(w) {
        *o = v * scale * g;
    }
}

fn md<'a>(ct: &'a Content, key: &str) -> Result<&'a candle_core::quantized::gguf_file::Value> {
    ct.metadata
        .get(key)
        .ok_or_else(|| EngineError::InvalidInput(format!("GGUF metadata lacks {key}")))
}

fn md_usize(ct: &Content, key: &str) -> Result<usize> {
    md(ct, key)?
        .to_u32()
        .map(|v| v as usize)
        .map_err(|e| bad(key, e))
}

impl QLlama {
    /// Loads a llama GGUF (`general.architecture = llama`).
    pub fn from_gguf<R: std::io::Read + std::io::Seek>(
        ct: &Content,
        reader: &mut R,
    ) -> Result<Self> {
        let dev = Device::Cpu;
        let heads = md_usize(ct, "llama.attention.head_count")?;
        let kv_heads = md_usize(ct, "llama.attention.head_count_kv")?;
        let layers_n = md_usize(ct, "llama.block_count")?;
        let hidden = md_usize(ct, "llama.embedding_length")?;
        let eps = md(ct, "llama.attention.layer_norm_rms_epsilon")?
            .to_f32()
            .map_err(|e| bad("rms_epsilon", e))?;
        let base = md(ct, "llama.rope.freq_base")
            .and_then(|v| v.to_f32().map_err(|e| bad("rope.freq_base", e)))
            .unwrap_or(10_000.0);
        let context = md_usize(ct, "llama.context_length").unwrap_or(4096);
        if heads == 0 || kv_heads == 0 || hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(EngineError::InvalidInput(format!(
                "unsupported head layout: hidden {hidden}, heads {heads}, kv heads {kv_heads}"
            )));
        }
        let head_dim = hidden / heads;
        let rope_dim = md_usize(ct, "llama.rope.dimension_count").unwrap_or(head_dim);
        if rope_dim != head_dim {
            return Err(EngineError::InvalidInput(format!(
                "partial RoPE ({rope_dim} of {head_dim} dims) is not supported"
            )));
        }
        let mut get = |name: &str| -> Result<QTensor> {
            ct.tensor(reader, name, &dev).map_err(|e| bad(name, e))
        };
        let vec_of = |t: QTensor, name: &str| -> Result<Vec<f32>> {
            t.dequantize(&Device::Cpu)
                .and_then(|x| x.flatten_all()?.to_vec1::<f32>())
                .map_err(|e| bad(name, e))
        };
        let embd_q = get("token_embd.weight")?;
        let (vocab, cols) = embd_q.shape().dims2().map_err(|e| bad("token_embd", e))?;
        if cols != hidden {
            return Err(bad(
                "token_embd.weight",
                format!("width {cols} != hidden {hidden}"),
            ));
        }
        let output = match get("output.weight") {
            Ok(t) => Linear::from_qtensor(&t, "output.weight")?,
            Err(_) => Linear::from_qtensor(&embd_q, "token_embd.weight")?,
        };
        let embd = match embd_q.dtype() {
            GgmlDType::Q8_0 => Q80OrF32::Q80(Q80Matrix::from_ggml(
                &embd_q.data().map_err(|e| bad("token_embd", e))?,
                vocab,
                cols,
            )?),
            _ => Q80OrF32::F32 {
                w: vec_of(embd_q, "token_embd.weight")?,
                cols,
            },
        };
        let norm = vec_of(get("output_norm.weight")?, "output_norm.weight")?;
        let mut layers = Vec::with_capacity(layers_n);
        for i in 0..layers_n {
            let p = format!("blk.{i}");
            let lin = |t: QTensor, n: &str| Linear::from_qtensor(&t, n);
            let n = |s: &str| format!("{p}.{s}.weight");
            layers.push(Layer {
                attn_norm: vec_of(get(&n("attn_norm"))?, &n("attn_norm"))?,
                wq: lin(get(&n("attn_q"))?, &n("attn_q"))?,
                wk: lin(get(&n("attn_k"))?, &n("attn_k"))?,
                wv: lin(get(&n("attn_v"))?, &n("attn_v"))?,
                wo: lin(get(&n("attn_output"))?, &n("attn_output"))?,
                ffn_norm: vec_of(get(&n("ffn_norm"))?, &n("ffn_norm"))?,
                gate: lin(get(&n("ffn_gate"))?, &n("ffn_gate"))?,
                up: lin(get(&n("ffn_up"))?, &n("ffn_up"))?,
                down: lin(get(&n("ffn_down"))?, &n("ffn_down"))?,
                k_cache: Vec::new(),
                v_cache: Vec::new(),
            });
        }
        if output.rows() != vocab {
            return Err(bad(
                "output",
                format!("{} rows for a vocabulary of {vocab}", output.rows()),
            ));
        }
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(context * half);
        let mut sin = Vec::with_capacity(context * half);
        for p in 0..context {
            for i in 0..half {
                let freq = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
                let a = p as f32 * freq;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Ok(Self {
            embd,
            output,
            norm,
            layers,
            hidden,
            heads,
            kv_heads,
            head_dim,
            eps,
            context,
            cos,
            sin,
            cached: 0,
        })
    }

    /// Rotates interleaved pairs of every head of `x` (`[n, heads * head_dim]`).
    fn rope(&self, x: &mut [f32], n_heads: usize, pos: usize) {
        let hd = self.head_dim;
        let half = hd / 2;
        for (i, row) in x.chunks_exact_mut(n_heads * hd).enumerate() {
            let c = &self.cos[(pos + i) * half..(pos + i + 1) * half];
            let s = &self.sin[(pos + i) * half..(pos + i + 1) * half];
            for h in row.chunks_exact_mut(hd) {
                for k in 0..half {
                    let (a, b) = (h[2 * k], h[2 * k + 1]);
                    h[2 * k] = a * c[k] - b * s[k];
                    h[2 * k + 1] = a * s[k] + b * c[k];
                }
            }
        }
    }
}

impl CausalLm for QLlama {
    fn forward(&mut self, ids: &[u32], pos: usize) -> Result<Vec<f32>> {
        let n = ids.len();
        if n == 0 {
            return Err(EngineError::InvalidInput("forward of zero tokens".into()));
        }
        if pos + n > self.context {
            return Err(EngineError::ContextLength {
                prompt_tokens: pos + n,
                context: self.context,
            });
        }
        if pos == 0 {
            self.cached = 0;
        } else if pos != self.cached {
            return Err(EngineError::InvalidInput(format!(
                "position {pos} does not follow the {} cached tokens",
                self.cached
            )));
        }
        let vocab = self.output.rows();
        let (h, hd, heads, kvh) = (self.hidden, self.head_dim, self.heads, self.kv_heads);
        let kv_w = kvh * hd;
        let mut x = Vec::with_capacity(n * h);
        for &id in ids {
            if id as usize >= vocab {
                return Err(EngineError::InvalidInput(format!(
                    "token id {id} out of range"
                )));
            }
            x.extend(self.embd.row(id as usize));
        }
        let mut normed = vec![0f32; n * h];
        let scale = 1.0 / (hd as f32).sqrt();
        let group = heads / kvh;
        for li in 0..self.layers.len() {
            let layer = &self.layers[li];
            for (o, xi) in normed.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                rms_norm(xi, &layer.attn_norm, self.eps, o);
            }
            let mut q = layer.wq.forward(&normed, n);
            let mut k = layer.wk.forward(&normed, n);
            let v = layer.wv.forward(&normed, n);
            self.rope(&mut q, heads, pos);
            self.rope(&mut k, kvh, pos);
            let layer = &mut self.layers[li];
            layer.k_cache.truncate(pos * kv_w);
            layer.v_cache.truncate(pos * kv_w);
            layer.k_cache.extend_from_slice(&k);
            layer.v_cache.extend_from_slice(&v);
            let (kc, vc) = (&layer.k_cache, &layer.v_cache);
            // Attention, one (query, head) pair per task: causal over the cache.
            let mut attn = vec![0f32; n * h];
            attn.par_chunks_mut(hd).enumerate().for_each(|(t, out)| {
                let (i, head) = (t / heads, t % heads);
                let kv = head / group;
                let qv = &q[i * h + head * hd..i * h + (head + 1) * hd];
                let upto = pos + i + 1;
                let mut scores: Vec<f32> = (0..upto)
                    .map(|j| dot(qv, &kc[j * kv_w + kv * hd..j * kv_w + (kv + 1) * hd]) * scale)
                    .collect();
                let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                for (j, p) in scores.iter().enumerate() {
                    let vv = &vc[j * kv_w + kv * hd..j * kv_w + (kv + 1) * hd];
                    let w = p * inv;
                    for (o, a) in out.iter_mut().zip(vv) {
                        *o += w * a;
                    }
                }
            });
            let layer = &self.layers[li];
            let o = layer.wo.forward(&attn, n);
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
            for (o, xi) in normed.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                rms_norm(xi, &layer.ffn_norm, self.eps, o);
            }
            let g = layer.gate.forward(&normed, n);
            let u = layer.up.forward(&normed, n);
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = layer.down.forward(&act, n);
            for (a, b) in x.iter_mut().zip(&d) {
                *a += b;
            }
        }
        self.cached = pos + n;
        let last = &x[(n - 1) * h..];
        let mut fin = vec![0f32; h];
        rms_norm(last, &self.norm, self.eps, &mut fin);
        Ok(self.output.forward(&fin, 1))
    }

    fn context_length(&self) -> usize {
        self.context
    }
}
