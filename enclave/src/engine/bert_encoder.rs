//! The BERT encoder (Hugging Face's `BertModel` without the pooler) for embeddings.
//!
//! Same weights, names and arithmetic as `candle_transformers::models::bert::BertModel`,
//! arranged for throughput on the CPU: every linear layer runs as one matrix product over
//! all tokens of the batch, `[batch × seq, in] · [in, out]`, with the weight transposed
//! once at load, and the query, key and value projections fused into one product. candle's
//! `Linear` on a `[batch, seq, in]` input broadcasts the weight over the batch instead, so
//! that `gemm` packs the same weight again for every input of the batch (a third of the
//! time of a 32-input batch went to that packing).
//!
//! On the CPU the steps between the products (bias, GELU, residual, LayerNorm) run in
//! plain Rust over the rows, split between the threads candle's products use, fused into
//! one pass each: candle runs each of them as its own single-threaded, allocating
//! operation, which together took about as long as the products themselves.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use candle_transformers::models::bert::{Config, HiddenAct};

/// A linear layer stored as `[in, out]` (transposed once), with its bias (also as a
/// plain vector, for the CPU path).
#[derive(Debug)]
struct Dense {
    w_t: Tensor,
    b: Tensor,
    b_vec: Vec<f32>,
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
        let b = Tensor::cat(&bs, 0)?;
        Ok(Self {
            w_t: w.t()?.contiguous()?,
            b_vec: b.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            b,
        })
    }

    /// `x · Wᵀ` (no bias) for `x` of shape `[tokens, in]`, as a plain vector.
    fn product(&self, x: &[f32], tokens: usize, dev: &candle_core::Device) -> Result<Vec<f32>> {
        let inp = self.w_t.dim(0)?;
        let x = Tensor::from_slice(x, (tokens, inp), dev)?;
        x.matmul(&self.w_t)?.flatten_all()?.to_vec1()
    }

    /// `x · Wᵀ + b` for `x` of shape `[tokens, in]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.w_t)?.broadcast_add(&self.b)
    }
}

/// A LayerNorm, with its weight and bias also as plain vectors for the CPU path.
#[derive(Debug)]
struct Norm {
    ln: LayerNorm,
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        let ln = candle_nn::layer_norm(size, eps, vb)?;
        let w = ln.weight().to_dtype(candle_core::DType::F32)?.to_vec1()?;
        let b = match ln.bias() {
            Some(b) => b.to_dtype(candle_core::DType::F32)?.to_vec1()?,
            None => vec![0.0; size],
        };
        #[allow(clippy::cast_possible_truncation)]
        let eps = eps as f32;
        Ok(Self { ln, w, b, eps })
    }

    /// [`Norm::add_norm`] on every row of `data` (rows of `bias.len()` values), with
    /// the same row of `residual`, split between up to `threads` threads.
    fn add_norm_rows(&self, data: &mut [f32], bias: &[f32], residual: &[f32], threads: usize) {
        let h = bias.len().max(1);
        for_rows(data, h, threads, |first, rows| {
            for (i, row) in rows.chunks_exact_mut(h).enumerate() {
                let r = (first + i) * h;
                let res = residual.get(r..r + h).unwrap_or_default();
                self.add_norm(row, bias, res);
            }
        });
    }

    /// `row ← LayerNorm(row + bias + residual)`, as candle computes it (mean and variance
    /// in f32 over the row, variance of the centred values).
    fn add_norm(&self, row: &mut [f32], bias: &[f32], residual: &[f32]) {
        for ((v, b), r) in row.iter_mut().zip(bias).zip(residual) {
            *v += b + r;
        }
        #[allow(clippy::cast_precision_loss)]
        let n = row.len().max(1) as f32;
        let mean = sum8(row) / n;
        let mut var_lanes = [0f32; 8];
        let chunks = row.chunks_exact(8);
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        for c in chunks {
            for (l, v) in var_lanes.iter_mut().zip(c) {
                *l += (v - mean) * (v - mean);
            }
        }
        let var = (var_lanes.iter().sum::<f32>() + tail) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&self.w).zip(&self.b) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

#[derive(Debug)]
struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    inter: Dense,
    out: Dense,
    out_norm: Norm,
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

/// Rows of at least this many values in all are worth splitting between threads.
const PARALLEL_MIN: usize = 1 << 15;

/// A batch is split into groups of inputs, one per thread, where each group gets at least
/// this many tokens. Measured on 2 threads with 20-token inputs (embeddings per second,
/// threshold 16 against 128): batch 2 518 against 364, batch 4 625 against 459, batch 8
/// 697 against 510, batch 16 and 32 the same. Even two short inputs are faster each on
/// its own thread than sharing every small product.
const GROUP_MIN_TOKENS: usize = 16;

/// Splits the consecutive inputs `spans` into at most `threads` runs of whole inputs
/// (ranges of indices into `spans`) of about equal token counts, each with at least
/// `min_tokens` tokens; one run (all of them) when the batch is too small to split.
fn token_groups(
    spans: &[std::ops::Range<usize>],
    threads: usize,
    min_tokens: usize,
) -> Vec<std::ops::Range<usize>> {
    let total: usize = spans.iter().map(std::ops::Range::len).sum();
    let n = threads
        .min(spans.len())
        .min(total / min_tokens.max(1))
        .max(1);
    if n == 1 {
        #[allow(clippy::single_range_in_vec_init)] // one group: all the inputs
        return vec![0..spans.len()];
    }
    let mut groups = Vec::with_capacity(n);
    let (mut start, mut seen) = (0, 0);
    for (i, span) in spans.iter().enumerate() {
        seen += span.len();
        // Close group k once its share of the tokens is reached, leaving at least one
        // input for each later group.
        let k = groups.len() + 1;
        if k < n && seen * n >= total * k && spans.len() - (i + 1) >= n - k {
            groups.push(start..i + 1);
            start = i + 1;
        }
    }
    groups.push(start..spans.len());
    groups
}

/// Runs `f(first_row, rows)` on `data` (rows of `width` values) split into `threads` runs
/// of whole rows, on the thread pool candle's products run on (its threads are awake
/// right after a product; a thread spawned per pass was a wake-up from sleep each time);
/// one run on this thread for small inputs.
fn for_rows(data: &mut [f32], width: usize, threads: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    use rayon::prelude::*;
    let width = width.max(1);
    let rows = data.len() / width;
    let threads = if data.len() >= PARALLEL_MIN {
        threads.clamp(1, rows.max(1))
    } else {
        1
    };
    if threads <= 1 {
        f(0, data);
        return;
    }
    let per = rows.div_ceil(threads);
    data.par_chunks_mut(per * width)
        .enumerate()
        .for_each(|(i, part)| f(i * per, part));
}

/// `x` summed in eight lanes (vectorized by the compiler).
fn sum8(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `e^x` for f32 without a libm call, so that loops over it vectorize: `2^n · e^r` with
/// `n = round(x·log2 e)` and `r = x − n·ln 2` (Cody and Waite: `ln 2` in two parts, so
/// that `r` is exact enough), `|r| ≤ ln 2 / 2`, and `e^r` from its Taylor series to
/// degree 7 (truncation error below 1e-8). Inputs are clamped to `[-87.3, 88]`, where
/// `2^n` is a normal f32.
#[inline]
fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // 0x3f318000: ln 2 rounded to 9 significant bits
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    let x = x.clamp(-87.3, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x));
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// `erf(x)` by Abramowitz and Stegun 7.1.26 (absolute error at most 1.5e-7, about 6e-7
/// once evaluated in f32), branch-free.
#[inline]
fn erf_f32(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp_f32(-a * a);
    y.copysign(x)
}

/// `v ← act(v + bias)` over rows of `bias.len()` values, split between up to `threads`
/// threads.
fn bias_act(data: &mut [f32], bias: &[f32], threads: usize, act: impl Fn(f32) -> f32 + Sync) {
    let width = bias.len().max(1);
    for_rows(data, width, threads, |_, rows| {
        for row in rows.chunks_exact_mut(width) {
            for (v, b) in row.iter_mut().zip(bias) {
                *v = act(*v + b);
            }
        }
    });
}

/// GELU with the exact (erf) form, as `HiddenAct::Gelu` asks.
#[inline]
fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU with the tanh approximation (`HiddenAct::GeluApproximate`), as candle computes it.
fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + (K * (x + 0.044_715 * x * x * x)).tanh())
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
        if h == 0 || c.intermediate_size == 0 {
            candle_core::bail!(
                "hidden size {h} or intermediate size {} is zero",
                c.intermediate_size
            );
        }
        let emb = vb.pp("embeddings");
        let table = |name: &str, rows: usize| -> Result<Embedding> {
            Ok(Embedding::new(emb.pp(name).get((rows, h), "weight")?, h))
        };
        let word = table("word_embeddings", c.vocab_size)?;
        let position = table("position_embeddings", c.max_position_embeddings)?;
        let token_type = table("token_type_embeddings", c.type_vocab_size)?;
        let emb_norm = layer_norm(emb.pp("LayerNorm"), h, c.layer_norm_eps)?;
        let norm = |vb: VarBuilder| Norm::load(vb, h, c.layer_norm_eps);
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let att = l.pp("attention");
            layers.push(Layer {
                qkv: Dense::load(&att.pp("self"), &["query", "key", "value"], &[h, h, h], h)?,
                attn_out: Dense::load(&att.pp("output"), &["dense"], &[h], h)?,
                attn_norm: norm(att.pp("output").pp("LayerNorm"))?,
                inter: Dense::load(&l.pp("intermediate"), &["dense"], &[c.intermediate_size], h)?,
                out: Dense::load(&l.pp("output"), &["dense"], &[h], c.intermediate_size)?,
                out_norm: norm(l.pp("output").pp("LayerNorm"))?,
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
        let x = self.emb_norm.forward(&x)?;
        if dev.is_cpu() {
            let x = x
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            // On a thread of the pool the products and row passes fork onto: from any
            // other thread each fork is a job injected into the pool and a futex wake-up
            // and sleep of the caller (about a sixth of a batch's time).
            let x = rayon::scope(|_| self.layers_cpu(x, &spans, &dev))?;
            return Tensor::from_vec(x, (total, h), &dev);
        }
        let mut x = x;
        let mut ctx = vec![0f32; total * h];
        for layer in &self.layers {
            let mut qkv = layer.qkv.forward(&x)?.flatten_all()?.to_vec1::<f32>()?;
            self.attention(
                &qkv,
                &spans,
                &mut ctx,
                candle_core::utils::get_num_threads(),
            );
            zeroize::Zeroize::zeroize(&mut qkv);
            let ctx_t = Tensor::from_slice(&ctx, (total, h), &dev)?;
            let attn = layer.attn_out.forward(&ctx_t)?;
            x = layer.attn_norm.ln.forward(&(attn + &x)?)?;
            let inter = layer.inter.forward(&x)?;
            let inter = match self.act {
                HiddenAct::Gelu => inter.gelu_erf()?,
                HiddenAct::GeluApproximate => inter.gelu()?,
                HiddenAct::Relu => inter.relu()?,
            };
            let out = layer.out.forward(&inter)?;
            x = layer.out_norm.ln.forward(&(out + &x)?)?;
        }
        zeroize::Zeroize::zeroize(&mut ctx);
        Ok(x)
    }

    /// The layers on the CPU. A batch with enough tokens is split into one group of
    /// whole inputs per thread, balanced by tokens, and each group runs through all the
    /// layers on its own thread ([`Self::layers_rows`], its row passes on that thread):
    /// the inputs of a batch meet only inside attention, which is per input anyway. The
    /// threads then synchronize once per batch, where sharing every product and row pass
    /// between them forked (and woke the pool's sleeping threads) several times per
    /// product. A batch of one input (or too few tokens) runs as one group, every step
    /// shared between the threads.
    fn layers_cpu(
        &self,
        mut x: Vec<f32>,
        spans: &[std::ops::Range<usize>],
        dev: &candle_core::Device,
    ) -> Result<Vec<f32>> {
        use rayon::prelude::*;
        let threads = candle_core::utils::get_num_threads().max(1);
        let groups = token_groups(spans, threads, GROUP_MIN_TOKENS);
        if groups.len() <= 1 {
            return self.layers_rows(x, spans, dev, threads);
        }
        let h = self.hidden;
        let parts: Vec<(Vec<f32>, Vec<std::ops::Range<usize>>)> = groups
            .iter()
            .map(|g| {
                let first = spans.get(g.start).map_or(0, |s| s.start);
                let last = spans.get(g.end - 1).map_or(first, |s| s.end);
                let rows = x.get(first * h..last * h).unwrap_or_default().to_vec();
                let local = spans
                    .get(g.clone())
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.start - first..s.end - first)
                    .collect();
                (rows, local)
            })
            .collect();
        let len = x.len();
        zeroize::Zeroize::zeroize(&mut x);
        let outs: Vec<Result<Vec<f32>>> = parts
            .into_par_iter()
            .map(|(rows, local)| self.layers_rows(rows, &local, dev, 1))
            .collect();
        let mut out = Vec::with_capacity(len);
        let mut failed = None;
        for part in outs {
            match part {
                Ok(mut rows) => {
                    out.extend_from_slice(&rows);
                    zeroize::Zeroize::zeroize(&mut rows);
                }
                Err(e) => failed = Some(e),
            }
        }
        match failed {
            Some(e) => {
                zeroize::Zeroize::zeroize(&mut out);
                Err(e)
            }
            None => Ok(out),
        }
    }

    /// The layers over the rows `x` (`[tokens, hidden]`) of the inputs `spans`: the
    /// products through candle, everything between them in fused passes over the rows
    /// ([`for_rows`]), shared between up to `threads` threads.
    fn layers_rows(
        &self,
        mut x: Vec<f32>,
        spans: &[std::ops::Range<usize>],
        dev: &candle_core::Device,
        threads: usize,
    ) -> Result<Vec<f32>> {
        let h = self.hidden;
        let total = x.len() / h.max(1);
        let mut ctx = vec![0f32; total * h];
        for layer in &self.layers {
            let mut qkv = layer.qkv.product(&x, total, dev)?;
            bias_act(&mut qkv, &layer.qkv.b_vec, threads, |v| v);
            self.attention(&qkv, spans, &mut ctx, threads);
            zeroize::Zeroize::zeroize(&mut qkv);

            let mut attn = layer.attn_out.product(&ctx, total, dev)?;
            layer
                .attn_norm
                .add_norm_rows(&mut attn, &layer.attn_out.b_vec, &x, threads);
            zeroize::Zeroize::zeroize(&mut x);
            x = attn;

            let mut inter = layer.inter.product(&x, total, dev)?;
            let b = &layer.inter.b_vec;
            // One monomorphic loop per activation, so that it inlines and vectorizes.
            match self.act {
                HiddenAct::Gelu => bias_act(&mut inter, b, threads, gelu_erf),
                HiddenAct::GeluApproximate => bias_act(&mut inter, b, threads, gelu_tanh),
                HiddenAct::Relu => bias_act(&mut inter, b, threads, |v| v.max(0.0)),
            }
            let mut out = layer.out.product(&inter, total, dev)?;
            zeroize::Zeroize::zeroize(&mut inter);
            layer
                .out_norm
                .add_norm_rows(&mut out, &layer.out.b_vec, &x, threads);
            zeroize::Zeroize::zeroize(&mut x);
            x = out;
        }
        zeroize::Zeroize::zeroize(&mut ctx);
        Ok(x)
    }

    /// Scaled dot-product attention of every input over its own tokens: `qkv` is
    /// `[tokens, 3 × hidden]` (queries, keys, values, each `heads × head_dim`), `ctx`
    /// receives `[tokens, hidden]`. `spans` are consecutive (as [`Self::forward_packed`]
    /// makes them); the inputs are shared between up to `threads` of the pool's threads
    /// when there are enough tokens.
    fn attention(
        &self,
        qkv: &[f32],
        spans: &[std::ops::Range<usize>],
        ctx: &mut [f32],
        threads: usize,
    ) {
        use rayon::prelude::*;
        let h = self.hidden;
        // Each input's rows of `ctx`, in order.
        let mut parts = Vec::with_capacity(spans.len());
        let mut rest = ctx;
        let mut at = 0;
        for span in spans {
            let skip = span.start.saturating_sub(at) * h;
            let len = span.len() * h;
            if rest.len() < skip + len {
                break;
            }
            let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
            let (mine, tail) = tail.split_at_mut(len);
            parts.push((span.clone(), mine));
            rest = tail;
            at = span.end;
        }
        if threads > 1 && ctx_len(&parts) * 3 >= PARALLEL_MIN && parts.len() > 1 {
            parts
                .into_par_iter()
                .for_each(|(span, out)| self.attend(qkv, span, out));
        } else {
            for (span, out) in parts {
                self.attend(qkv, span, out);
            }
        }
    }

    /// [`Self::attention`] for one input: its tokens `span` of `qkv`, its rows `out`.
    fn attend(&self, qkv: &[f32], span: std::ops::Range<usize>, out: &mut [f32]) {
        let (h, hd) = (self.hidden, self.head_dim);
        let row = 3 * h;
        #[allow(clippy::cast_precision_loss)]
        let scale = 1.0 / (hd as f32).sqrt();
        let mut scores = Vec::with_capacity(span.len());
        let mut acc = vec![0f32; hd];
        for head in 0..self.heads {
            let col = head * hd;
            for (n, i) in span.clone().enumerate() {
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
                if let Some(o) = out.get_mut(n * h + col..n * h + col + hd) {
                    for (o, a) in o.iter_mut().zip(&acc) {
                        *o = a * inv;
                    }
                }
            }
        }
    }
}

/// The values in the inputs' `ctx` rows, together.
fn ctx_len(parts: &[(std::ops::Range<usize>, &mut [f32])]) -> usize {
    parts.iter().map(|(_, p)| p.len()).sum()
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

#[cfg(test)]
mod tests {
    use super::{erf_f32, exp_f32, for_rows, gelu_erf, token_groups};

    /// Groups cover every input once, in order, each with at least the minimum of tokens,
    /// as evenly as whole inputs allow.
    #[test]
    fn token_groups_split_whole_inputs_evenly() {
        fn spans(lens: &[usize]) -> Vec<std::ops::Range<usize>> {
            let mut at = 0;
            lens.iter()
                .map(|&l| {
                    at += l;
                    at - l..at
                })
                .collect()
        }
        let tokens = |s: &[std::ops::Range<usize>], g: &std::ops::Range<usize>| -> usize {
            s[g.clone()].iter().map(std::ops::Range::len).sum()
        };
        // 32 inputs of 12 to 20 tokens, longest first, as the embedder orders them.
        let lens: Vec<usize> = (0..32).map(|i| 20 - i % 9).collect();
        let s = spans(&lens);
        let g = token_groups(&s, 2, 128);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].start, g[0].end, g[1].end), (0, g[1].start, 32));
        let (a, b) = (tokens(&s, &g[0]), tokens(&s, &g[1]));
        assert!(a.abs_diff(b) <= 20, "{a} against {b} tokens");
        // Too few tokens, one input, or one thread: a single group.
        assert_eq!(token_groups(&s[..4], 2, 128), vec![0..4]);
        assert_eq!(token_groups(&spans(&[500]), 2, 128), vec![0..1]);
        assert_eq!(token_groups(&s, 1, 128), vec![0..32]);
        // Uneven inputs: every group still gets an input, whatever the shares.
        let s = spans(&[400, 1, 1]);
        let g = token_groups(&s, 3, 1);
        assert_eq!(g, vec![0..1, 1..2, 2..3]);
        for threads in 1..6 {
            let s = spans(&lens);
            let g = token_groups(&s, threads, 16);
            assert_eq!(g.len(), threads.min(32));
            assert!(
                g.windows(2)
                    .all(|w| w[0].end == w[1].start && !w[0].is_empty())
            );
            assert_eq!((g[0].start, g.last().unwrap().end), (0, 32));
        }
    }

    #[test]
    fn exp_matches_std_within_f32_rounding() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = f64::from(x).exp();
            let rel = ((f64::from(exp_f32(x)) - want) / want).abs();
            worst = worst.max(rel);
            x += 0.013;
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) >= 0.0 && exp_f32(-1000.0) < 1e-37);
        assert!(exp_f32(1000.0).is_finite());
    }

    /// Against candle's own `erf` and `gelu_erf` (the ops the CPU path replaces).
    #[test]
    fn erf_and_gelu_match_candles() {
        use candle_core::{Device, Tensor};
        #[allow(clippy::cast_precision_loss)]
        let xs: Vec<f32> = (0..16_000).map(|i| -8.0 + i as f32 * 0.001).collect();
        let t = Tensor::from_slice(&xs, xs.len(), &Device::Cpu).unwrap();
        let erf: Vec<f32> = t.erf().unwrap().to_vec1().unwrap();
        let gelu: Vec<f32> = t.gelu_erf().unwrap().to_vec1().unwrap();
        let mut worst_erf = 0f32;
        let mut worst_gelu = 0f32;
        for ((&x, &e), &g) in xs.iter().zip(&erf).zip(&gelu) {
            worst_erf = worst_erf.max((erf_f32(x) - e).abs());
            worst_gelu = worst_gelu.max((gelu_erf(x) - g).abs());
        }
        assert!(worst_erf < 1e-6, "erf error {worst_erf}");
        assert!(worst_gelu < 1e-6, "gelu error {worst_gelu}");
        assert!(erf_f32(0.0).abs() < 1e-6);
        assert!(gelu_erf(0.0).abs() < 1e-12);
    }

    #[test]
    fn row_passes_see_every_row_once_with_its_index() {
        for rows in [1usize, 3, 100, 4096] {
            let width = 16;
            let mut data = vec![0f32; rows * width];
            for_rows(&mut data, width, 2, |first, part| {
                for (i, row) in part.chunks_exact_mut(width).enumerate() {
                    for v in row {
                        #[allow(clippy::cast_precision_loss)]
                        let idx = (first + i) as f32;
                        *v += idx + 1.0;
                    }
                }
            });
            for (i, row) in data.chunks_exact(width).enumerate() {
                #[allow(clippy::cast_precision_loss)]
                let want = i as f32 + 1.0;
                assert!(row.iter().all(|&v| v == want), "rows {rows}, row {i}");
            }
        }
    }
}
