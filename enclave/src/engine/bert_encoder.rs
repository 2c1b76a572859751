//! The BERT encoder (Hugging Face's `BertModel` without the pooler) for embeddings.
//!
//! Same weights, names and arithmetic as `candle_transformers::models::bert::BertModel`,
//! arranged for throughput on the CPU: every linear layer runs as one matrix product over
//! all tokens of the batch, `[batch × seq, in] · [in, out]`, with the weight transposed
//! once at load, and the query, key and value projections fused into one product. candle's
//! `Linear` on a `[batch, seq, in]` input broadcasts the weight over the batch instead, so
//! that `gemm` packs the same weight again for every input of the batch (a third of the
//! time of a 32-input batch went to that packing).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// A linear layer stored as `[in, out]` (transposed once), with its bias.
#[derive(Debug)]
struct Dense {
    w_t: Tensor,
    b: Tensor,
}

impl Dense {
    /// Loads one or more `[out_i, in]` weights (and biases) under `prefixes` and stacks
    /// them along the output dimension.
    fn load(vb: &VarBuilder, prefixes: &[&str], outs: &[usize], inp: usize) -> Result<Self> {
        let mut ws = Vec::with_capacity(prefixes.len());
        let mut bs = Vec::with_capacity(prefixes.len());
        for (p, &out) in prefixes.iter().zip(outs) {
            let vb = vb.pp(*p);
            ws.push(vb.get((out, inp), "weight")?);
            bs.push(vb.get(out, "bias")?);
        }
        let w = Tensor::cat(&ws, 0)?;
        Ok(Self {
            w_t: w.t()?.contiguous()?,
            b: Tensor::cat(&bs, 0)?,
        })
    }

    /// `x · Wᵀ + b` for `x` of shape `[tokens, in]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w_t)?.broadcast_add(&self.b)
    }
}

#[derive(Debug)]
struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    inter: Dense,
    out: Dense,
    out_norm: LayerNorm,
}

/// The encoder: embeddings, then the transformer layers.
#[derive(Debug)]
pub struct BertEncoder {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    hidden: usize,
    act: HiddenAct,
}

fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> Result<LayerNorm> {
    candle_nn::layer_norm(size, eps, vb)
}

impl BertEncoder {
    /// Loads the weights as `BertModel::load` names them: `embeddings.*` and
    /// `encoder.layer.N.*`, or the same under the configuration's `model_type` prefix.
    ///
    /// # Errors
    /// When a tensor is missing or has the wrong shape, or the configuration is
    /// inconsistent.
    pub fn load(vb: &VarBuilder, config: &Config) -> Result<Self> {
        match Self::load_at(vb, config) {
            Ok(m) => Ok(m),
            Err(first) => match &config.model_type {
                Some(prefix) => Self::load_at(&vb.pp(prefix), config).map_err(|_| first),
                None => Err(first),
            },
        }
    }

    fn load_at(vb: &VarBuilder, c: &Config) -> Result<Self> {
        let h = c.hidden_size;
        if c.num_attention_heads == 0 || !h.is_multiple_of(c.num_attention_heads) {
            candle_core::bail!("hidden size {h} is not a multiple of the head count");
        }
        let emb = vb.pp("embeddings");
        let table = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(emb.pp(name).get((rows, h), "weight")?, h))
        };
        let word = table("word_embeddings", c.vocab_size)?;
        let position = table("position_embeddings", c.max_position_embeddings)?;
        let token_type = table("token_type_embeddings", c.type_vocab_size)?;
        let emb_norm = layer_norm(emb.pp("LayerNorm"), h, c.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let att = l.pp("attention");
            layers.push(Layer {
                qkv: Dense::load(&att.pp("self"), &["query", "key", "value"], &[h, h, h], h)?,
                attn_out: Dense::load(&att.pp("output"), &["dense"], &[h], h)?,
                attn_norm: layer_norm(att.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
                inter: Dense::load(&l.pp("intermediate"), &["dense"], &[c.intermediate_size], h)?,
                out: Dense::load(&l.pp("output"), &["dense"], &[h], c.intermediate_size)?,
                out_norm: layer_norm(l.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            });
        }
        Ok(Self {
            word,
            position,
            token_type,
            emb_norm,
            layers,
            heads: c.num_attention_heads,
            head_dim: h / c.num_attention_heads,
            hidden: h,
            act: c.hidden_act,
        })
    }

    /// The hidden states of `seqs` (token ids, each with its `[CLS]` and `[SEP]`), packed
    /// without padding: row `offset_i + j` of the `[Σ len_i, hidden]` result is token `j`
    /// of input `i`, where `offset_i` is the sum of the earlier inputs' lengths.
    ///
    /// The linear layers see only real tokens (a batch padded to its longest input
    /// computes up to half its rows for padding); attention, the only step where the
    /// inputs' tokens meet, runs per input over its own tokens, which is what the
    /// padding mask achieves in the padded form.
    ///
    /// # Errors
    /// When an input is empty or longer than the position table, or a token id is out
    /// of range.
    pub fn forward_packed(&self, seqs: &[&[u32]]) -> Result<Tensor> {
        let h = self.hidden;
        let dev = self.word.embeddings().device().clone();
        let max_pos = self.position.embeddings().dim(0)?;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut spans = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if seq.is_empty() || seq.len() > max_pos {
                candle_core::bail!("input of {} tokens (1 to {max_pos} allowed)", seq.len());
            }
            spans.push(ids.len()..ids.len() + seq.len());
            ids.extend_from_slice(seq);
            positions.extend(0..u32::try_from(seq.len()).unwrap_or(u32::MAX));
        }
        let total = ids.len();
        let ids = Tensor::from_vec(ids, total, &dev)?;
        let positions = Tensor::from_vec(positions, total, &dev)?;
        let x = self
            .word
            .forward(&ids)?
            .add(&self.token_type.forward(&ids.zeros_like()?)?)?
            .add(&self.position.forward(&positions)?)?;
        let mut x = self.emb_norm.forward(&x)?;
        let mut ctx = vec![0f32; total * h];
        for layer in &self.layers {
            let mut qkv = layer.qkv.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            self.attention(&qkv, &spans, &mut ctx);
            zeroize::Zeroize::zeroize(&mut qkv);
            let ctx_t = Tensor::from_slice(&ctx, (total, h), &dev)?;
            let attn = layer.attn_out.forward(&ctx_t)?;
            x = layer.attn_norm.forward(&(attn + &x)?)?;
            let inter = layer.inter.forward(&x)?;
            let inter = match self.act {
                HiddenAct::Gelu => inter.gelu_erf()?,
                HiddenAct::GeluApproximate => inter.gelu()?,
                HiddenAct::Relu => inter.relu()?,
            };
            let out = layer.out.forward(&inter)?;
            x = layer.out_norm.forward(&(out + &x)?)?;
        }
        zeroize::Zeroize::zeroize(&mut ctx);
        Ok(x)
    }

    /// Scaled dot-product attention of every input over its own tokens: `qkv` is
    /// `[tokens, 3 × hidden]` (queries, keys, values, each `heads × head_dim`), `ctx`
    /// receives `[tokens, hidden]`.
    fn attention(&self, qkv: &[f32], spans: &[std::ops::Range<usize>], ctx: &mut [f32]) {
        let (h, hd) = (self.hidden, self.head_dim);
        let row = 3 * h;
        #[allow(clippy::cast_precision_loss)]
        let scale = 1.0 / (hd as f32).sqrt();
        let mut scores = Vec::new();
        let mut acc = vec![0f32; hd];
        for span in spans {
            for head in 0..self.heads {
                let col = head * hd;
                for i in span.clone() {
                    let q = qkv
                        .get(i * row + col..i * row + col + hd)
                        .unwrap_or_default();
                    scores.clear();
                    for j in span.clone() {
                        let k0 = j * row + h + col;
                        let k = qkv.get(k0..k0 + hd).unwrap_or_default();
                        scores.push(dot(q, k) * scale);
                    }
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let mut sum = 0f32;
                    for s in &mut scores {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv = 1.0 / sum;
                    acc.fill(0.0);
                    for (j, &p) in span.clone().zip(&scores) {
                        let v0 = j * row + 2 * h + col;
                        let v = qkv.get(v0..v0 + hd).unwrap_or_default();
                        for (a, &x) in acc.iter_mut().zip(v) {
                            *a = p.mul_add(x, *a);
                        }
                    }
                    if let Some(out) = ctx.get_mut(i * h + col..i * h + col + hd) {
                        for (o, a) in out.iter_mut().zip(&acc) {
                            *o = a * inv;
                        }
                    }
                }
            }
        }
    }
}

/// `x · y` in eight lanes (vectorized by the compiler).
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for ((l, &a), &b) in lanes.iter_mut().zip(a).zip(b) {
            *l = a.mul_add(b, *l);
        }
    }
    lanes.iter().sum::<f32>() + tail
}
