//! The fast CPU forward pass for llama-family GGUF models with `Q4_0`, `Q4_1`, `Q8_0`,
//! `F16` or `F32` weights.
//!
//! Why not candle's: for a model this small a token is ~450 small operations, and
//! candle's per-operation cost (allocation, dispatch, a rayon fork/join per matmul) is a
//! large share of a token's time; and candle has no SIMD kernel for `Q4_1`. Here a team
//! of threads (one per core) runs the whole pass in lock step: every matmul is split by
//! output rows, the threads exchange their parts at a spinning barrier (five per layer),
//! and the small operations (norms, RoPE, residuals) are simply repeated by every thread
//! on its own copy of the activations. Attention is split by heads; each thread keeps
//! the KV cache of the heads it serves: the f16 values llama.cpp's cache holds, stored
//! widened to f32 so that a step reads them without converting.
//!
//! The arithmetic follows ggml's CPU backend closely (see [`quant`]) so that greedy
//! decoding gives the same tokens as llama.cpp: 8-bit activation quantization, KV cache
//! values rounded to f16, f16 query and attention weights in the attention products, RMSNorm sums in
//! f64, and ggml's RoPE angles.

pub mod ggml;
pub mod quant;
pub mod team;

use std::io::{Read, Seek};

use self::quant::{Act, Q8Block, QMatrix, Simd, WeightType, quantize_q8, round_f16};
use self::team::{Exchange, PoisonOnPanic, Poisoned, share};
use super::EngineError;
use super::gguf::GgufFile;
use super::llama::{ChatBackend, ChatSession, LlamaParams};
use super::sampling::Sampler;

/// Prompt tokens processed per pass (bounds the activation buffers).
const MAX_BATCH: usize = 256;

/// RoPE frequencies `base^(-2i/d)` for `i < d/2`, by repeated multiplication as ggml.
pub fn rope_freqs(rope_dim: usize, base: f32) -> Vec<f32> {
    #[allow(clippy::cast_precision_loss)]
    let theta_scale = base.powf(-2.0 / rope_dim as f32);
    let mut f = 1.0f32;
    (0..rope_dim / 2)
        .map(|_| {
            let v = f;
            f *= theta_scale;
            v
        })
        .collect()
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    ffn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    wo: QMatrix,
    gate: QMatrix,
    up: QMatrix,
    down: QMatrix,
}

/// A llama model's weights for the CPU pass.
#[derive(Debug)]
pub struct CpuLlama {
    p: LlamaParams,
    simd: Simd,
    threads: usize,
    embd: QMatrix,
    output: Option<QMatrix>,
    out_norm: Vec<f32>,
    freq_factors: Option<Vec<f32>>,
    layers: Vec<Layer>,
    /// One pass at a time: a pass already uses every core, and two teams spinning
    /// against each other would waste them. Concurrent sessions interleave by pass.
    pass_lock: std::sync::Mutex<()>,
}

fn load_err(what: impl std::fmt::Display) -> EngineError {
    EngineError::Load(what.to_string())
}

fn f32_vector<R: Read + Seek>(
    gguf: &GgufFile,
    r: &mut R,
    name: &str,
    len: usize,
) -> Result<Vec<f32>, EngineError> {
    let (ty, dims, data) = gguf.read_raw(r, name)?;
    let m = QMatrix::from_raw(ty, &dims, data)?;
    if m.rows() * m.cols() != len {
        return Err(load_err(format!("tensor {name} has the wrong size")));
    }
    let mut out = vec![0f32; len];
    m.dequantize_row(0, &mut out);
    Ok(out)
}

/// The tensors of a llama GGUF file the CPU pass reads.
fn weight_names(n_layer: usize) -> Vec<String> {
    let mut names = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
    ];
    for i in 0..n_layer {
        for n in [
            "attn_norm",
            "ffn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            names.push(format!("blk.{i}.{n}.weight"));
        }
    }
    names
}

impl CpuLlama {
    /// Whether the CPU pass handles every tensor of this file (else use candle).
    pub fn supports(gguf: &GgufFile) -> bool {
        let Ok(p) = LlamaParams::from_gguf(gguf) else {
            return false;
        };
        if gguf.opt_u64("llama.expert_count").unwrap_or(0) > 1 {
            return false;
        }
        let mut names = weight_names(p.n_layer);
        if gguf.tensor_info("output.weight").is_some() {
            names.push("output.weight".into());
        }
        names.iter().all(|n| {
            gguf.tensor_info(n)
                .is_some_and(|(t, _)| WeightType::from_ggml(t).is_some())
        })
    }

    /// Loads the weights. `threads`: the team size (`None`: candle's thread count,
    /// `RAYON_NUM_THREADS` or all cores).
    ///
    /// # Errors
    /// When a tensor is missing, of an unhandled type or of the wrong shape.
    pub fn load<R: Read + Seek>(
        gguf: &GgufFile,
        r: &mut R,
        p: &LlamaParams,
        threads: Option<usize>,
    ) -> Result<Self, EngineError> {
        let mut matrix = |name: &str, rows: usize, cols: usize| -> Result<QMatrix, EngineError> {
            let (ty, dims, data) = gguf.read_raw(r, name)?;
            let m = QMatrix::from_raw(ty, &dims, data)?;
            if m.rows() != rows || m.cols() != cols {
                return Err(load_err(format!("tensor {name} has an unexpected shape")));
            }
            Ok(m)
        };
        let (d, hd) = (p.n_embd, p.head_dim);
        let embd = matrix("token_embd.weight", p.vocab, d)?;
        let output = if gguf.tensor_info("output.weight").is_some() {
            Some(matrix("output.weight", p.vocab, d)?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(p.n_layer);
        for i in 0..p.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                wq: matrix(&n("attn_q"), p.n_head * hd, d)?,
                wk: matrix(&n("attn_k"), p.n_kv_head * hd, d)?,
                wv: matrix(&n("attn_v"), p.n_kv_head * hd, d)?,
                wo: matrix(&n("attn_output"), d, p.n_head * hd)?,
                gate: matrix(&n("ffn_gate"), p.n_ff, d)?,
                up: matrix(&n("ffn_up"), p.n_ff, d)?,
                down: matrix(&n("ffn_down"), d, p.n_ff)?,
                attn_norm: Vec::new(),
                ffn_norm: Vec::new(),
            });
        }
        for (i, layer) in layers.iter_mut().enumerate() {
            layer.attn_norm = f32_vector(gguf, r, &format!("blk.{i}.attn_norm.weight"), d)?;
            layer.ffn_norm = f32_vector(gguf, r, &format!("blk.{i}.ffn_norm.weight"), d)?;
        }
        let out_norm = f32_vector(gguf, r, "output_norm.weight", d)?;
        let freq_factors = if gguf.tensor_info("rope_freqs.weight").is_some() {
            Some(f32_vector(gguf, r, "rope_freqs.weight", p.rope_dim / 2)?)
        } else {
            None
        };
        let threads = threads
            .unwrap_or_else(candle_core::utils::get_num_threads)
            .clamp(1, 256);
        Ok(Self {
            p: p.clone(),
            simd: Simd::detect(),
            threads,
            embd,
            output,
            out_norm,
            freq_factors,
            layers,
            pass_lock: std::sync::Mutex::new(()),
        })
    }

    /// The team size.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn output(&self) -> &QMatrix {
        self.output.as_ref().unwrap_or(&self.embd)
    }

    /// cos/sin of every rotated pair for positions `pos..pos + n`, as ggml computes them.
    fn rope_table(&self, pos: usize, n: usize) -> Vec<(f32, f32)> {
        let half = self.p.rope_dim / 2;
        #[allow(clippy::cast_precision_loss)]
        let theta_scale = self.p.rope_base.powf(-2.0 / self.p.rope_dim as f32);
        let mut out = Vec::with_capacity(n * half);
        for m in 0..n {
            #[allow(clippy::cast_precision_loss)]
            let mut theta = (pos + m) as f32;
            for i in 0..half {
                let ff = self
                    .freq_factors
                    .as_ref()
                    .and_then(|f| f.get(i).copied())
                    .unwrap_or(1.0);
                let t = theta / ff;
                out.push((t.cos(), t.sin()));
                theta *= theta_scale;
            }
        }
        out
    }
}

/// One KV head's cache: `positions × head_dim` keys and values, rounded to f16 as
/// llama.cpp's cache stores them but kept widened to f32 (the same values), so that a
/// step reads its rows without converting them again.
#[derive(Debug, Default)]
struct KvHead {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// A thread's state in a session: the caches of its heads and scratch buffers.
#[derive(Debug, Default)]
struct ThreadState {
    /// `[layer][kv head - first_kv]`.
    kv: Vec<Vec<KvHead>>,
    first_kv: usize,
    x: Vec<f32>,
    xn: Vec<f32>,
    full: Vec<f32>,
    part: Vec<f32>,
    part2: Vec<f32>,
    q8: Vec<Q8Block>,
    q8_tmp: Vec<Q8Block>,
    scores: Vec<f32>,
    acc: Vec<f32>,
    wsum: ggml::WeightedSum,
}

/// The query heads thread `t` serves, and the KV heads they use.
fn heads_of(
    p: &LlamaParams,
    t: usize,
    threads: usize,
) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let q = share(p.n_head, t, threads);
    let group = p.n_head / p.n_kv_head;
    let kv = if q.is_empty() {
        0..0
    } else {
        (q.start / group)..((q.end - 1) / group + 1)
    };
    (q, kv)
}

struct CpuSession<'a> {
    model: &'a CpuLlama,
    states: Vec<ThreadState>,
    exchange: Exchange,
    pos: usize,
    logits: Vec<f32>,
    has_logits: bool,
}

impl ChatBackend for CpuLlama {
    fn session(&self) -> Result<Box<dyn ChatSession + '_>, EngineError> {
        let states = (0..self.threads)
            .map(|t| {
                let (_, kv) = heads_of(&self.p, t, self.threads);
                ThreadState {
                    kv: (0..self.p.n_layer)
                        .map(|_| kv.clone().map(|_| KvHead::default()).collect())
                        .collect(),
                    first_kv: kv.start,
                    ..ThreadState::default()
                }
            })
            .collect();
        Ok(Box::new(CpuSession {
            model: self,
            states,
            exchange: Exchange::new(self.threads),
            pos: 0,
            logits: Vec::new(),
            has_logits: false,
        }))
    }

    fn name(&self) -> &'static str {
        "cpu"
    }
}

/// What every thread of a pass shares.
struct Pass<'a> {
    m: &'a CpuLlama,
    ex: &'a Exchange,
    tokens: &'a [u32],
    pos: usize,
    rope: &'a [(f32, f32)],
    want_logits: bool,
    trace: Option<std::ffi::OsString>,
}

/// Debugging aid: with `VEIL_TRACE_DIR` set, writes an intermediate tensor of the pass
/// that starts at position `pos` as raw f32 (`<name>-<layer>@<pos>.bin`).
fn trace(dir: Option<&std::ffi::OsStr>, name: &str, li: usize, pos: usize, data: &[f32]) {
    if let Some(dir) = dir {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let _ = std::fs::write(
            std::path::Path::new(dir).join(format!("{name}-{li}@{pos}.bin")),
            bytes,
        );
    }
}

/// ggml's RMSNorm then the weight: `(x * 1/sqrt(mean(x²) + eps)) * w`, sum in f64.
fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    let mean = (sum / x.len().max(1) as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = (v * scale) * g;
    }
}

/// Rotates the first `2 * table.len()` dims of `x` in adjacent pairs (ggml's "normal"
/// RoPE, what llama.cpp uses for the llama architecture), with the fused multiply-adds
/// ggml's compiled `rotate_pairs` uses (`x0*c - x1*s` and `x0*s + x1*c` contracted by
/// the compiler into one FMA each, the first product fused).
fn rope(x: &mut [f32], table: &[(f32, f32)]) {
    for (pair, &(c, s)) in x.chunks_exact_mut(2).zip(table) {
        let (x0, x1) = (pair[0], pair[1]);
        pair[0] = x0.mul_add(c, -(x1 * s));
        pair[1] = x0.mul_add(s, x1 * c);
    }
}

/// Quantizes `m` rows of `x` (each `cols` long) when `wants_q8`, and returns the
/// per-token activations.
fn activations<'b>(
    x: &'b [f32],
    m: usize,
    cols: usize,
    wants_q8: bool,
    q8: &'b mut Vec<Q8Block>,
    tmp: &mut Vec<Q8Block>,
) -> Vec<Act<'b>> {
    q8.clear();
    if wants_q8 {
        for r in 0..m {
            quantize_q8(x.get(r * cols..(r + 1) * cols).unwrap_or_default(), tmp);
            q8.extend_from_slice(tmp);
        }
    }
    let per = if wants_q8 { cols / quant::QK } else { 0 };
    let q8: &'b [Q8Block] = q8;
    (0..m)
        .map(|r| Act {
            f32: x.get(r * cols..(r + 1) * cols).unwrap_or_default(),
            q8: q8.get(r * per..(r + 1) * per).unwrap_or_default(),
        })
        .collect()
}

/// Rows `range` of the vertical concatenation of `ws`, for every token: `out` is
/// `[m × range.len()]`.
fn matmul_concat(
    simd: Simd,
    ws: &[&QMatrix],
    range: std::ops::Range<usize>,
    acts: &[Act<'_>],
    out: &mut Vec<f32>,
) {
    let len = range.len();
    out.resize(acts.len() * len, 0.0);
    let mut base = 0;
    for w in ws {
        let rows = base..base + w.rows();
        let lo = range.start.max(rows.start);
        let hi = range.end.min(rows.end);
        if lo < hi {
            let off = lo - range.start;
            if let Some(dst) = out.get_mut(off..) {
                w.matmul(simd, (lo - base)..(hi - base), acts, dst, len);
            }
        }
        base += w.rows();
    }
}

impl Pass<'_> {
    /// Thread `t`'s part of the pass.
    #[allow(clippy::too_many_lines)]
    fn run(
        &self,
        t: usize,
        st: &mut ThreadState,
        logits: Option<&mut Vec<f32>>,
    ) -> Result<(), Poisoned> {
        let m = self.m;
        let p = &m.p;
        let simd = m.simd;
        let threads = self.ex.threads();
        let n = self.tokens.len();
        let (d, hd, f) = (p.n_embd, p.head_dim, p.n_ff);
        let dq = p.n_head * hd;
        let dkv = p.n_kv_head * hd;
        let dqkv = dq + 2 * dkv;
        let group = p.n_head / p.n_kv_head;
        let half_rope = p.rope_dim / 2;
        let (my_heads, my_kv) = heads_of(p, t, threads);
        #[allow(clippy::cast_precision_loss)]
        let scale = 1.0 / (hd as f32).sqrt();
        let mut phase = 0usize;
        let tdir = if t == 0 { self.trace.as_deref() } else { None };

        // Embeddings.
        st.x.resize(n * d, 0.0);
        for (i, &tok) in self.tokens.iter().enumerate() {
            if let Some(row) = st.x.get_mut(i * d..(i + 1) * d) {
                m.embd.dequantize_row(tok as usize, row);
            }
        }
        st.xn.resize(n * d, 0.0);

        for (li, layer) in m.layers.iter().enumerate() {
            // Attention: norm, q/k/v for this thread's rows, exchange.
            for i in 0..n {
                let r = i * d..(i + 1) * d;
                if let (Some(x), Some(o)) = (st.x.get(r.clone()), st.xn.get_mut(r)) {
                    rms_norm(x, &layer.attn_norm, p.rms_eps, o);
                }
            }
            trace(tdir, "attn_norm", li, self.pos, &st.xn);
            let wants =
                layer.wq.ty().wants_q8() || layer.wk.ty().wants_q8() || layer.wv.ty().wants_q8();
            {
                let acts = activations(&st.xn, n, d, wants, &mut st.q8, &mut st.q8_tmp);
                matmul_concat(
                    simd,
                    &[&layer.wq, &layer.wk, &layer.wv],
                    share(dqkv, t, threads),
                    &acts,
                    &mut st.part,
                );
            }
            self.ex.publish(phase, t, &st.part);
            self.ex.gather(phase, n, dqkv, &mut st.full)?;
            phase += 1;

            // RoPE on this thread's query heads and KV heads; append K/V to the cache.
            for i in 0..n {
                let table = self
                    .rope
                    .get(i * half_rope..(i + 1) * half_rope)
                    .unwrap_or_default();
                let row = st
                    .full
                    .get_mut(i * dqkv..(i + 1) * dqkv)
                    .unwrap_or_default();
                for h in my_heads.clone() {
                    if let Some(x) = row.get_mut(h * hd..h * hd + p.rope_dim) {
                        rope(x, table);
                    }
                }
                for g in my_kv.clone() {
                    let k0 = dq + g * hd;
                    if let Some(x) = row.get_mut(k0..k0 + p.rope_dim) {
                        rope(x, table);
                    }
                    let cache = st.kv.get_mut(li).and_then(|l| l.get_mut(g - st.first_kv));
                    if let Some(c) = cache {
                        let k = row.get(k0..k0 + hd).unwrap_or_default();
                        c.k.extend(k.iter().map(|&v| round_f16(v)));
                        let v0 = dq + dkv + g * hd;
                        let v = row.get(v0..v0 + hd).unwrap_or_default();
                        c.v.extend(v.iter().map(|&v| round_f16(v)));
                    }
                }
            }

            trace(tdir, "qkv", li, self.pos, &st.full);
            // Attention for this thread's heads: out is [n × heads × hd].
            let nh = my_heads.len();
            st.part.clear();
            st.part.resize(n * nh * hd, 0.0);
            st.acc.resize(hd, 0.0);
            for i in 0..n {
                let ctx = self.pos + i + 1;
                for (hi, h) in my_heads.clone().enumerate() {
                    let g = h / group;
                    let Some(c) = st.kv.get(li).and_then(|l| l.get(g - st.first_kv)) else {
                        continue;
                    };
                    let q0 = i * dqkv + h * hd;
                    let q: Vec<f32> = st
                        .full
                        .get(q0..q0 + hd)
                        .unwrap_or_default()
                        .iter()
                        .map(|&v| round_f16(v))
                        .collect();
                    st.scores.resize(ctx, 0.0);
                    for (j, s) in st.scores.iter_mut().enumerate() {
                        let k = c.k.get(j * hd..(j + 1) * hd).unwrap_or_default();
                        // llama.cpp multiplies with tinyBLAS for two tokens or more.
                        let dot = if n >= 2 {
                            ggml::dot8(k, &q)
                        } else {
                            ggml::dot_f16(k, &q)
                        };
                        *s = dot * scale;
                    }
                    if li == 0 {
                        trace(tdir, &format!("kq_h{h}_i{i}"), li, self.pos, &st.scores);
                    }
                    ggml::softmax(&mut st.scores);
                    if li == 0 {
                        trace(tdir, &format!("sm_h{h}_i{i}"), li, self.pos, &st.scores);
                    }
                    st.wsum.start(hd, if n >= 2 { 8 } else { 32 });
                    for (j, s) in st.scores.iter().enumerate() {
                        let v = c.v.get(j * hd..(j + 1) * hd).unwrap_or_default();
                        st.wsum.add(j, round_f16(*s), v);
                    }
                    st.wsum.finish(&mut st.acc);
                    let o0 = (i * nh + hi) * hd;
                    if let Some(o) = st.part.get_mut(o0..o0 + hd) {
                        o.copy_from_slice(&st.acc);
                    }
                }
            }
            self.ex.publish(phase, t, &st.part);
            self.ex
                .gather_blocks(phase, n, p.n_head, hd, &mut st.full)?;
            phase += 1;
            trace(tdir, "kqv_out", li, self.pos, &st.full);

            // Output projection and residual.
            {
                let acts = activations(
                    &st.full,
                    n,
                    dq,
                    layer.wo.ty().wants_q8(),
                    &mut st.q8,
                    &mut st.q8_tmp,
                );
                matmul_concat(
                    simd,
                    &[&layer.wo],
                    share(d, t, threads),
                    &acts,
                    &mut st.part,
                );
            }
            self.ex.publish(phase, t, &st.part);
            self.ex.gather(phase, n, d, &mut st.full)?;
            phase += 1;
            for (x, o) in st.x.iter_mut().zip(&st.full) {
                *x += o;
            }

            // Feed-forward: norm, gate and up for this thread's rows, SiLU, exchange.
            for i in 0..n {
                let r = i * d..(i + 1) * d;
                if let (Some(x), Some(o)) = (st.x.get(r.clone()), st.xn.get_mut(r)) {
                    rms_norm(x, &layer.ffn_norm, p.rms_eps, o);
                }
            }
            let rows = share(f, t, threads);
            {
                let wants = layer.gate.ty().wants_q8() || layer.up.ty().wants_q8();
                let acts = activations(&st.xn, n, d, wants, &mut st.q8, &mut st.q8_tmp);
                matmul_concat(simd, &[&layer.gate], rows.clone(), &acts, &mut st.part);
                matmul_concat(simd, &[&layer.up], rows.clone(), &acts, &mut st.part2);
            }
            trace(tdir, "ffn_norm", li, self.pos, &st.xn);
            trace(tdir, "ffn_gate", li, self.pos, &st.part);
            trace(tdir, "ffn_up", li, self.pos, &st.part2);
            let vector_end = f - f % 8;
            for (i, (g, u)) in st.part.iter_mut().zip(&st.part2).enumerate() {
                let col = rows.start + i % rows.len().max(1);
                *g = ggml::swiglu(*g, *u, col < vector_end);
            }
            self.ex.publish(phase, t, &st.part);
            self.ex.gather(phase, n, f, &mut st.full)?;
            phase += 1;
            {
                let acts = activations(
                    &st.full,
                    n,
                    f,
                    layer.down.ty().wants_q8(),
                    &mut st.q8,
                    &mut st.q8_tmp,
                );
                matmul_concat(
                    simd,
                    &[&layer.down],
                    share(d, t, threads),
                    &acts,
                    &mut st.part,
                );
            }
            self.ex.publish(phase, t, &st.part);
            self.ex.gather(phase, n, d, &mut st.full)?;
            phase += 1;
            trace(tdir, "ffn_out", li, self.pos, &st.full);
            for (x, o) in st.x.iter_mut().zip(&st.full) {
                *x += o;
            }
            trace(tdir, "l_out", li, self.pos, &st.x);
        }

        if self.want_logits {
            let last = st.x.get((n - 1) * d..n * d).unwrap_or_default();
            st.xn.resize(d, 0.0);
            rms_norm(last, &m.out_norm, p.rms_eps, &mut st.xn[..d]);
            let out = m.output();
            {
                let acts = activations(
                    &st.xn[..d],
                    1,
                    d,
                    out.ty().wants_q8(),
                    &mut st.q8,
                    &mut st.q8_tmp,
                );
                matmul_concat(
                    simd,
                    &[out],
                    share(p.vocab, t, threads),
                    &acts,
                    &mut st.part,
                );
            }
            self.ex.publish(phase, t, &st.part);
            match logits {
                Some(l) => {
                    self.ex.gather(phase, 1, p.vocab, l)?;
                    trace(tdir, "logits", 0, self.pos, l);
                }
                None => self.ex.barrier.wait()?,
            }
        }
        Ok(())
    }
}

impl CpuSession<'_> {
    fn pass(&mut self, tokens: &[u32], want_logits: bool) -> Result<(), EngineError> {
        let model = self.model;
        let rope = model.rope_table(self.pos, tokens.len());
        let pass = Pass {
            m: model,
            ex: &self.exchange,
            tokens,
            pos: self.pos,
            rope: &rope,
            want_logits,
            trace: std::env::var_os("VEIL_TRACE_DIR"),
        };
        let logits = &mut self.logits;
        let _one_at_a_time = model
            .pass_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = std::thread::scope(|s| {
            let mut states = self.states.iter_mut();
            let first = states.next();
            let handles: Vec<_> = states
                .enumerate()
                .map(|(i, st)| {
                    let pass = &pass;
                    s.spawn(move || {
                        let _guard = PoisonOnPanic(&pass.ex.barrier);
                        pass.run(i + 1, st, None)
                    })
                })
                .collect();
            let r0 = match first {
                Some(st) => {
                    let _guard = PoisonOnPanic(&pass.ex.barrier);
                    pass.run(0, st, Some(logits))
                }
                None => Ok(()),
            };
            let mut ok = r0.is_ok();
            for h in handles {
                ok &= matches!(h.join(), Ok(Ok(())));
            }
            ok
        });
        if !result {
            self.exchange.barrier.reset();
            return Err(EngineError::Backend("a CPU worker thread failed".into()));
        }
        self.pos += tokens.len();
        self.has_logits = want_logits;
        Ok(())
    }
}

impl ChatSession for CpuSession<'_> {
    fn feed(&mut self, tokens: &[u32]) -> Result<(), EngineError> {
        if tokens.is_empty() {
            return Ok(());
        }
        if self.pos + tokens.len() > self.model.p.context_length {
            return Err(EngineError::Backend("context window exceeded".into()));
        }
        if tokens.iter().any(|&t| t as usize >= self.model.p.vocab) {
            return Err(EngineError::Backend("token id out of range".into()));
        }
        let chunks: Vec<&[u32]> = tokens.chunks(MAX_BATCH).collect();
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.pass(chunk, i == last)?;
        }
        Ok(())
    }

    fn sample(&mut self, sampler: &mut Sampler) -> Result<u32, EngineError> {
        if !self.has_logits {
            return Err(EngineError::Backend(
                "sampling before any token was fed".into(),
            ));
        }
        Ok(sampler.sample(&self.logits))
    }

    fn position(&self) -> usize {
        self.pos
    }

    fn logits(&mut self) -> Result<Vec<f32>, EngineError> {
        if !self.has_logits {
            return Err(EngineError::Backend("no logits yet".into()));
        }
        Ok(self.logits.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_frequencies_follow_ggml() {
        let f = rope_freqs(64, 100_000.0);
        assert_eq!(f.len(), 32);
        assert_eq!(f[0], 1.0);
        let ts = 100_000f32.powf(-2.0 / 64.0);
        assert_eq!(f[1], ts);
        assert!((f[31] - 100_000f32.powf(-62.0 / 64.0)).abs() < 1e-6);
    }

    #[test]
    fn rms_norm_and_rope() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let mut o = [0f32; 4];
        rms_norm(&x, &[1.0; 4], 0.0, &mut o);
        let rms = (30.0f32 / 4.0).sqrt();
        for (a, b) in o.iter().zip(x) {
            assert!((a - b / rms).abs() < 1e-6);
        }
        let mut v = [1.0f32, 0.0, 0.0, 1.0];
        let half_pi = std::f32::consts::FRAC_PI_2;
        rope(&mut v, &[(half_pi.cos(), half_pi.sin()), (1.0, 0.0)]);
        assert!((v[0]).abs() < 1e-6 && (v[1] - 1.0).abs() < 1e-6);
        assert_eq!(&v[2..], &[0.0, 1.0]);
    }

    #[test]
    fn heads_split_with_their_kv_heads() {
        let p = LlamaParams {
            n_layer: 1,
            n_embd: 576,
            n_ff: 1536,
            n_head: 9,
            n_kv_head: 3,
            head_dim: 64,
            rope_dim: 64,
            rope_base: 1e4,
            rms_eps: 1e-5,
            context_length: 16,
            vocab: 10,
        };
        assert_eq!(heads_of(&p, 0, 2), (0..4, 0..2));
        assert_eq!(heads_of(&p, 1, 2), (4..9, 1..3));
        assert_eq!(heads_of(&p, 0, 1), (0..9, 0..3));
        let (q, kv) = heads_of(&p, 9, 10);
        assert_eq!(q, 8..9);
        assert_eq!(kv, 2..3);
        assert!(heads_of(&p, 0, 10).0.is_empty());
    }
}
