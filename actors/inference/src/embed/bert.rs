//! A BERT encoder that runs a batch *packed*: the tokens of all sequences are stacked into one
//! `[tokens, hidden]` matrix, so the dense layers (most of the work) never see a padding token;
//! only attention is computed per sequence. This is what makes large batches of mixed-length
//! sentences fast (the stock padded forward spends most of its time on padding).

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

use crate::error::{EngineError, Result};

struct Layer {
    /// query, key and value fused into one `[3*hidden, hidden]` projection.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// BERT weights plus the shape facts the packed forward needs.
pub struct PackedBert {
    word: Embedding,
    position: Embedding,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    act: HiddenAct,
    max_positions: usize,
}

fn layer_norm(vb: VarBuilder<'_>, size: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    let weight = vb.get(size, "weight")?;
    let bias = vb.get(size, "bias")?;
    Ok(LayerNorm::new(weight, bias, eps))
}

impl PackedBert {
    /// Loads the encoder from a `VarBuilder` over the model's safetensors (with or without a
    /// `bert.` prefix).
    pub fn load(vb: VarBuilder<'_>, cfg: &Config) -> Result<Self> {
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            return Err(EngineError::InvalidInput(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let word = candle_nn::embedding(cfg.vocab_size, h, emb.pp("word_embeddings"))?;
        let position = candle_nn::embedding(
            cfg.max_position_embeddings,
            h,
            emb.pp("position_embeddings"),
        )?;
        // token_type_ids are always 0 for single sentences: keep row 0 only.
        let token_type = emb
            .pp("token_type_embeddings")
            .get((cfg.type_vocab_size, h), "weight")?
            .get(0)?;
        let emb_norm = layer_norm(emb.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let sa = l.pp("attention.self");
            let mut ws = Vec::with_capacity(3);
            let mut bs = Vec::with_capacity(3);
            for name in ["query", "key", "value"] {
                ws.push(sa.pp(name).get((h, h), "weight")?);
                bs.push(sa.pp(name).get(h, "bias")?);
            }
            let qkv = Linear::new(Tensor::cat(&ws, 0)?, Some(Tensor::cat(&bs, 0)?));
            let ao = l.pp("attention.output");
            let attn_out = candle_nn::linear(h, h, ao.pp("dense"))?;
            let attn_norm = layer_norm(ao.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
            let intermediate =
                candle_nn::linear(h, cfg.intermediate_size, l.pp("intermediate.dense"))?;
            let out = l.pp("output");
            let output = candle_nn::linear(cfg.intermediate_size, h, out.pp("dense"))?;
            let out_norm = layer_norm(out.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
            layers.push(Layer {
                qkv,
                attn_out,
                attn_norm,
                intermediate,
                output,
                out_norm,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            heads: cfg.num_attention_heads,
            head_dim: h / cfg.num_attention_heads,
            hidden: h,
            act: cfg.hidden_act,
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Largest sequence the position table allows.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.hidden
    }

    /// Runs the encoder over `seqs` (token ids, each non-empty and at most
    /// [`Self::max_positions`] long) and returns the last hidden states packed as
    /// `[sum of lengths, hidden]`, sequences in order. `padded` picks [`Attention::Padded`]
    /// (one batched attention per layer; what a GPU wants) over one attention per sequence.
    pub fn forward_packed(
        &self,
        seqs: &[Vec<u32>],
        device: &Device,
        padded: bool,
    ) -> Result<Tensor> {
        let total: usize = seqs.iter().map(Vec::len).sum();
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        for s in seqs {
            if s.is_empty() || s.len() > self.max_positions {
                return Err(EngineError::InvalidInput(format!(
                    "sequence of {} tokens (must be 1..={})",
                    s.len(),
                    self.max_positions
                )));
            }
            ids.extend_from_slice(s);
            positions.extend(0..s.len() as u32);
        }
        let ids = Tensor::from_vec(ids, total, device)?;
        let positions = Tensor::from_vec(positions, total, device)?;
        let x = (self.word.forward(&ids)? + self.position.forward(&positions)?)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.emb_norm.forward(&x)?;
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        let attention = if padded {
            Attention::padded(&lens, device)?
        } else {
            Attention::PerSequence(lens)
        };
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, &attention)?;
        }
        Ok(x)
    }

    fn layer_forward(&self, layer: &Layer, x: &Tensor, attention: &Attention) -> Result<Tensor> {
        let qkv = layer.qkv.forward(x)?; // [T, 3h]
        let ctx = match attention {
            Attention::PerSequence(lens) => self.attend_per_sequence(&qkv, lens)?,
            Attention::Padded {
                gather,
                scatter,
                mask,
                batch,
                len,
            } => self.attend_padded(&qkv, gather, scatter, mask, *batch, *len)?,
        };
        let a = layer
            .attn_norm
            .forward(&(layer.attn_out.forward(&ctx)? + x)?)?;
        let i = layer.intermediate.forward(&a)?;
        let i = match self.act {
            HiddenAct::Gelu => i.gelu_erf()?,
            HiddenAct::GeluApproximate => i.gelu()?,
            HiddenAct::Relu => i.relu()?,
        };
        Ok(layer.out_norm.forward(&(layer.output.forward(&i)? + a)?)?)
    }

    fn attend_per_sequence(&self, qkv: &Tensor, lens: &[usize]) -> Result<Tensor> {
        let h = self.hidden;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut outs = Vec::with_capacity(lens.len());
        let mut off = 0;
        for &len in lens {
            let s = qkv.narrow(0, off, len)?;
            off += len;
            // [len, h] -> [heads, len, head_dim]
            let split = |i: usize| -> candle_core::Result<Tensor> {
                s.narrow(1, i * h, h)?
                    .reshape((len, self.heads, self.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(0, 1)?.reshape((len, h))?;
            outs.push(ctx);
        }
        Ok(Tensor::cat(&outs, 0)?)
    }

    fn attend_padded(
        &self,
        qkv: &Tensor,
        gather: &Tensor,
        scatter: &Tensor,
        mask: &Tensor,
        batch: usize,
        len: usize,
    ) -> Result<Tensor> {
        let (heads, hd) = (self.heads, self.head_dim);
        let scale = 1.0 / (hd as f64).sqrt();
        // [B*L, 3h] -> [B, L, 3, heads, hd]
        let p = qkv
            .index_select(gather, 0)?
            .reshape((batch, len, 3, heads, hd))?;
        let part = |i: usize| -> candle_core::Result<Tensor> {
            p.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous()
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?); // [B, heads, L, hd]
        let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch * len, heads * hd))?;
        Ok(ctx.index_select(scatter, 0)?)
    }
}

/// How attention runs over a packed batch.
enum Attention {
    /// One small attention per sequence: no padding is ever computed (the CPU's choice).
    PerSequence(Vec<usize>),
    /// One batched attention over the sequences padded to the longest: a handful of kernel
    /// launches per layer whatever the batch size (the GPU's choice, where launches dominate).
    Padded {
        /// `[B*L]`: the packed row each padded slot reads (a padding slot reads its
        /// sequence's first row; the mask hides it).
        gather: Tensor,
        /// `[T]`: the padded slot of each packed row.
        scatter: Tensor,
        /// `[B, 1, 1, L]`: 0 for real keys, a large negative number for padding.
        mask: Tensor,
        batch: usize,
        len: usize,
    },
}

impl Attention {
    fn padded(lens: &[usize], device: &Device) -> Result<Self> {
        let (batch, len) = (lens.len(), lens.iter().copied().max().unwrap_or(1));
        let mut gather = Vec::with_capacity(batch * len);
        let mut scatter = Vec::with_capacity(lens.iter().sum());
        let mut mask = Vec::with_capacity(batch * len);
        let mut off = 0u32;
        for (s, &n) in lens.iter().enumerate() {
            for j in 0..len {
                let real = j < n;
                gather.push(if real { off + j as u32 } else { off });
                mask.push(if real { 0f32 } else { -1e9 });
                if real {
                    scatter.push((s * len + j) as u32);
                }
            }
            off += n as u32;
        }
        Ok(Attention::Padded {
            gather: Tensor::from_vec(gather, batch * len, device)?,
            scatter: Tensor::from_vec(scatter, off as usize, device)?,
            mask: Tensor::from_vec(mask, (batch, 1, 1, len), device)?,
            batch,
            len,
        })
    }
}

/// Mean, CLS or max pooling of packed hidden states `[T, hidden]` into `[seqs, hidden]`.
pub fn pool(
    packed: &Tensor,
    lens: &[usize],
    pooling: super::config::Pooling,
    normalize: bool,
) -> Result<Vec<Vec<f32>>> {
    use super::config::Pooling;
    let mut rows = Vec::with_capacity(lens.len());
    let mut off = 0;
    for &len in lens {
        let s = packed.narrow(0, off, len)?;
        off += len;
        let v = match pooling {
            Pooling::Mean => s.mean(0)?,
            Pooling::Cls => s.get(0)?,
            Pooling::Max => s.max(0)?,
        };
        rows.push(v);
    }
    let mut m = Tensor::stack(&rows, 0)?.to_dtype(DType::F32)?;
    if normalize {
        let norm = m
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        m = m.broadcast_div(&norm)?;
    }
    Ok(m.to_vec2::<f32>()?)
}
