//! The llama forward pass on candle tensors, for any candle device (CUDA with the `cuda`
//! feature) and any GGUF quantization candle reads. Adapted from
//! `candle_transformers::models::quantized_llama`, with what a server needs: the weights
//! shared by every request and a KV cache per session, a causal mask that works for
//! prompts fed after earlier tokens, rotary tables for the whole context, and sampling on
//! the device (only the chosen token id comes back to the host).
//!
//! On CPU the engine normally uses [`super::cpu`] instead, which is faster for the
//! formats it supports; this path is the fallback for other formats.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_transformers::quantized_nn::RmsNorm;

use super::EngineError;
use super::gguf::GgufFile;
use super::llama::{ChatBackend, ChatSession, LlamaParams};
use super::sampling::Sampler;

fn backend_err(e: candle_core::Error) -> EngineError {
    // candle errors name shapes and ops, never tensor contents.
    EngineError::Backend(format!("candle: {e}"))
}

fn load_err(e: candle_core::Error) -> EngineError {
    EngineError::Load(format!("candle: {e}"))
}

#[derive(Debug)]
struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    w_gate: QMatMul,
    w_up: QMatMul,
    w_down: QMatMul,
}

/// A llama model's weights on a candle device.
#[derive(Debug)]
pub struct CandleLlama {
    device: Device,
    params: LlamaParams,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
}

impl CandleLlama {
    /// Loads the weights of `gguf` (whose tensors `reader` reads) onto `device`.
    ///
    /// # Errors
    /// When a tensor is missing or the device refuses it.
    pub fn load<R: std::io::Read + std::io::Seek>(
        gguf: &GgufFile,
        reader: &mut R,
        params: &LlamaParams,
        device: &Device,
    ) -> Result<Self, EngineError> {
        let ct = gguf.content();
        let mut tensor = |name: &str| -> Result<QTensor, EngineError> {
            ct.tensor(reader, name, device).map_err(load_err)
        };
        let embd_q = tensor("token_embd.weight")?;
        let embeddings = embd_q.dequantize(device).map_err(load_err)?;
        let norm_q = tensor("output_norm.weight")?;
        #[allow(clippy::cast_possible_truncation)]
        let eps = f64::from(params.rms_eps);
        let norm = RmsNorm::from_qtensor(norm_q, eps).map_err(load_err)?;
        let output = match tensor("output.weight") {
            Ok(t) => t,
            Err(_) => embd_q,
        };
        let output = QMatMul::from_arc(Arc::new(output)).map_err(load_err)?;
        let mut layers = Vec::with_capacity(params.n_layer);
        for i in 0..params.n_layer {
            let mut q = |n: &str| -> Result<QMatMul, EngineError> {
                QMatMul::from_qtensor(tensor(&format!("blk.{i}.{n}.weight"))?).map_err(load_err)
            };
            let wq = q("attn_q")?;
            let wk = q("attn_k")?;
            let wv = q("attn_v")?;
            let wo = q("attn_output")?;
            let w_gate = q("ffn_gate")?;
            let w_up = q("ffn_up")?;
            let w_down = q("ffn_down")?;
            let attn_norm =
                RmsNorm::from_qtensor(tensor(&format!("blk.{i}.attn_norm.weight"))?, eps)
                    .map_err(load_err)?;
            let ffn_norm = RmsNorm::from_qtensor(tensor(&format!("blk.{i}.ffn_norm.weight"))?, eps)
                .map_err(load_err)?;
            layers.push(Layer {
                wq,
                wk,
                wv,
                wo,
                attn_norm,
                ffn_norm,
                w_gate,
                w_up,
                w_down,
            });
        }
        let (cos, sin) = rope_tables(params, device).map_err(load_err)?;
        Ok(Self {
            device: device.clone(),
            params: params.clone(),
            embeddings,
            layers,
            norm,
            output,
            cos,
            sin,
        })
    }

    /// The device the weights are on.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// cos and sin tables, `[context, rope_dim / 2]`, with ggml's angles
/// (`pos * base^(-2i/d)`).
fn rope_tables(p: &LlamaParams, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let half = p.rope_dim / 2;
    let mut cos = Vec::with_capacity(p.context_length * half);
    let mut sin = Vec::with_capacity(p.context_length * half);
    let freqs = super::cpu::rope_freqs(p.rope_dim, p.rope_base);
    for pos in 0..p.context_length {
        #[allow(clippy::cast_precision_loss)]
        let pos = pos as f32;
        for f in &freqs {
            let theta = pos * f;
            cos.push(theta.cos());
            sin.push(theta.sin());
        }
    }
    let cos = Tensor::from_vec(cos, (p.context_length, half), device)?;
    let sin = Tensor::from_vec(sin, (p.context_length, half), device)?;
    Ok((cos, sin))
}

/// `x` rounded to f16 precision (kept in f32).
fn f16_rounded(x: &Tensor) -> candle_core::Result<Tensor> {
    x.to_dtype(DType::F16)?.to_dtype(DType::F32)
}

/// One request's state: the KV cache of every layer and the last logits.
struct CandleSession<'a> {
    model: &'a CandleLlama,
    cache: Vec<Option<(Tensor, Tensor)>>,
    pos: usize,
    logits: Option<Tensor>,
}

impl ChatBackend for CandleLlama {
    fn session(&self) -> Result<Box<dyn ChatSession + '_>, EngineError> {
        Ok(Box::new(CandleSession {
            model: self,
            cache: vec![None; self.layers.len()],
            pos: 0,
            logits: None,
        }))
    }

    fn name(&self) -> &'static str {
        if self.device.is_cuda() {
            "candle-cuda"
        } else {
            "candle-cpu"
        }
    }
}

impl CandleSession<'_> {
    fn forward(&mut self, tokens: &[u32]) -> candle_core::Result<Tensor> {
        let m = self.model;
        let p = &m.params;
        let dev = &m.device;
        let seq = tokens.len();
        let pos = self.pos;
        let ids = Tensor::new(tokens, dev)?;
        let mut x = m.embeddings.index_select(&ids, 0)?.unsqueeze(0)?;
        let mask = if seq > 1 {
            let total = pos + seq;
            let mask: Vec<u8> = (0..seq)
                .flat_map(|i| (0..total).map(move |j| u8::from(j > pos + i)))
                .collect();
            Some(Tensor::from_vec(mask, (seq, total), dev)?)
        } else {
            None
        };
        let cos = m.cos.narrow(0, pos, seq)?;
        let sin = m.sin.narrow(0, pos, seq)?;
        let neg_inf = Tensor::new(f32::NEG_INFINITY, dev)?;
        let hd = p.head_dim;
        for (layer, cache) in m.layers.iter().zip(self.cache.iter_mut()) {
            let residual = x.clone();
            let h = layer.attn_norm.forward(&x)?;
            let q = layer
                .wq
                .forward(&h)?
                .reshape((1, seq, p.n_head, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = layer
                .wk
                .forward(&h)?
                .reshape((1, seq, p.n_kv_head, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let v = layer
                .wv
                .forward(&h)?
                .reshape((1, seq, p.n_kv_head, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            // llama.cpp keeps K and V in an f16 cache and multiplies them with the
            // query and the attention weights rounded to f16: round the same values.
            let q = f16_rounded(&candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?)?;
            let k = f16_rounded(&candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?)?;
            let v = f16_rounded(&v)?;
            let (k, v) = match cache.take() {
                Some((kc, vc)) => (Tensor::cat(&[&kc, &k], 2)?, Tensor::cat(&[&vc, &v], 2)?),
                None => (k, v),
            };
            *cache = Some((k.clone(), v.clone()));
            let groups = p.n_head / p.n_kv_head;
            let k = candle_transformers::utils::repeat_kv(k, groups)?;
            let v = candle_transformers::utils::repeat_kv(v, groups)?.contiguous()?;
            #[allow(clippy::cast_precision_loss)]
            let scale = 1.0 / (hd as f64).sqrt();
            let att = (q.matmul(&k.t()?)? * scale)?;
            let att = match &mask {
                Some(mask) => {
                    let mask = mask.broadcast_as(att.shape())?;
                    mask.where_cond(&neg_inf.broadcast_as(att.shape())?, &att)?
                }
                None => att,
            };
            let att = f16_rounded(&candle_nn::ops::softmax_last_dim(&att)?)?;
            let y = att
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((1, seq, p.n_head * hd))?;
            let y = layer.wo.forward(&y)?;
            x = (y + residual)?;
            let residual = x.clone();
            let h = layer.ffn_norm.forward(&x)?;
            let gate = candle_nn::ops::silu(&layer.w_gate.forward(&h)?)?;
            let up = layer.w_up.forward(&h)?;
            let y = layer.w_down.forward(&(gate * up)?)?;
            x = (y + residual)?;
        }
        let x = m.norm.forward(&x)?;
        let x = x.i((.., seq - 1, ..))?;
        let logits = m.output.forward(&x)?.squeeze(0)?.to_dtype(DType::F32)?;
        self.pos += seq;
        Ok(logits)
    }
}

impl ChatSession for CandleSession<'_> {
    fn feed(&mut self, tokens: &[u32]) -> Result<(), EngineError> {
        if tokens.is_empty() {
            return Ok(());
        }
        if self.pos + tokens.len() > self.model.params.context_length {
            return Err(EngineError::Backend("context window exceeded".into()));
        }
        let logits = self.forward(tokens).map_err(backend_err)?;
        self.logits = Some(logits);
        Ok(())
    }

    fn sample(&mut self, sampler: &mut Sampler) -> Result<u32, EngineError> {
        let logits = self
            .logits
            .as_ref()
            .ok_or_else(|| EngineError::Backend("sampling before any token was fed".into()))?;
        if self.model.device.is_cpu() {
            let v = logits.to_vec1::<f32>().map_err(backend_err)?;
            return Ok(sampler.sample(&v));
        }
        sample_on_device(logits, sampler).map_err(backend_err)
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn logits(&mut self) -> Result<Vec<f32>, EngineError> {
        self.logits
            .as_ref()
            .ok_or_else(|| EngineError::Backend("no logits yet".into()))?
            .to_vec1::<f32>()
            .map_err(backend_err)
    }
}

/// Samples on the logits' device and copies back only the token id (a GPU in
/// confidential-computing mode encrypts every host↔device transfer).
///
/// Greedy is an argmax. Otherwise: softmax with temperature; top-p as a probability
/// threshold found on the device (two rounds of 64 candidate thresholds); then the
/// Gumbel-max trick with uniforms generated on the host from the request's seeded
/// generator would cost a vocabulary-sized upload, so the uniforms come from one seed
/// uploaded per step and a counter-based hash evaluated on the device.
pub fn sample_on_device(logits: &Tensor, sampler: &mut Sampler) -> candle_core::Result<u32> {
    let dev = logits.device();
    if sampler.is_greedy() {
        return logits.argmax(D::Minus1)?.to_scalar::<u32>();
    }
    let (t, top_p) = sampler.params();
    let scaled = (logits / t)?;
    let probs = candle_nn::ops::softmax_last_dim(&scaled)?;
    let mut keep = probs.ones_like()?;
    if top_p < 1.0 {
        // mass(th) = sum of probabilities >= th, decreasing in th: find the largest th
        // with mass(th) >= top_p, on a grid refined once.
        let max = probs.max_keepdim(D::Minus1)?;
        let grid = |lo: &Tensor, hi: &Tensor| -> candle_core::Result<Tensor> {
            let steps = Tensor::arange(0f32, 64f32, dev)?.affine(1.0 / 63.0, 0.0)?;
            let span = (hi - lo)?;
            steps
                .broadcast_mul(&span)?
                .broadcast_add(lo)?
                .reshape((64, 1))
        };
        let pick = |ths: &Tensor| -> candle_core::Result<(Tensor, Tensor)> {
            // [64, V] masks, their masses, and the last threshold still reaching top_p.
            let p = probs.unsqueeze(0)?.broadcast_as((64, probs.dim(0)?))?;
            let ge = p.broadcast_ge(ths)?.to_dtype(DType::F32)?;
            let mass = (ge * &p)?.sum(1)?;
            let ok = mass.ge(top_p)?.to_dtype(DType::F32)?;
            // Count of thresholds that still reach top_p (monotone): index of the last.
            let n_ok = ok.sum_all()?;
            let idx = (n_ok - 1.0)?.clamp(0f32, 63f32)?.to_dtype(DType::U32)?;
            let flat = ths.flatten_all()?;
            let th = flat.index_select(&idx.reshape(1)?, 0)?;
            let next = flat.index_select(&(idx.reshape(1)? + 1.0)?.clamp(0u32, 63u32)?, 0)?;
            Ok((th, next))
        };
        let zero = max.zeros_like()?;
        let (lo, hi) = pick(&grid(&zero, &max.flatten_all()?)?)?;
        let (th, _) = pick(&grid(&lo, &hi)?)?;
        keep = probs.broadcast_ge(&th)?.to_dtype(DType::F32)?;
    }
    // Gumbel-max: argmax(log p + g) over the kept tokens.
    let seed = sampler.rng().next_u64();
    let n = probs.dim(0)?;
    let u = device_uniforms(n, seed, dev)?;
    let g = u.log()?.neg()?.log()?.neg()?;
    let logp = (probs + 1e-30)?.log()?;
    let masked = ((logp + g)? + ((keep - 1.0)? * 1e30)?)?;
    masked.argmax(D::Minus1)?.to_scalar::<u32>()
}

/// `n` uniforms in (0, 1) from `seed`, computed on `dev` from a counter (Weyl sequence
/// with a seed-dependent irrational step); only the seed crosses to the device.
fn device_uniforms(n: usize, seed: u64, dev: &Device) -> candle_core::Result<Tensor> {
    #[allow(clippy::cast_precision_loss)]
    let a = ((seed >> 11) as f64) / ((1u64 << 53) as f64);
    let step = 0.754_877_666_246_692_8 + a * 1e-3;
    let idx =
        Tensor::arange(0u32, u32::try_from(n).unwrap_or(u32::MAX), dev)?.to_dtype(DType::F64)?;
    let x = (idx.affine(step, a)? * 12.9898)?.sin()?;
    let x = (x * 43_758.545_3)?;
    let frac = (&x - x.floor()?)?;
    frac.clamp(1e-7, 1.0 - 1e-7)?.to_dtype(DType::F32)
}
