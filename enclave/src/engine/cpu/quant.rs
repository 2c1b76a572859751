//! Weight matrices in their GGUF block formats, activation quantization, and the
//! dot-product kernels of the CPU forward pass.
//!
//! The arithmetic follows ggml's CPU backend, so greedy decoding matches llama.cpp's:
//! activations are quantized per 32-value block to 8 bits (`Q8_1` for `Q4_1` weights,
//! `Q8_0` for `Q4_0`/`Q8_0` weights: the same quants and scale, `Q8_1` also keeps the
//! scaled sum) with the scale rounded to f16, integer dot products per block, and
//! per-block scales applied in f32 with fused multiply-adds over eight lanes.
//!
//! The AVX2 kernels use `pulp`'s safe intrinsic wrappers (the CPU's support is checked
//! once, at load); elsewhere the scalar kernels run. No `unsafe` here.

use std::ops::Range;

use candle_core::quantized::GgmlDType;
use half::f16;

use crate::engine::EngineError;

/// Values per quantization block.
pub const QK: usize = 32;

/// One block of quantized activations (`Q8_0`/`Q8_1`): `x ≈ d * qs`, `s = d * Σqs`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Q8Block {
    /// Scale (an f16 value, widened).
    pub d: f32,
    /// `d * Σ qs` (an f16 value, widened).
    pub s: f32,
    /// Quants.
    pub qs: [i8; QK],
}

impl Default for Q8Block {
    fn default() -> Self {
        Self {
            d: 0.0,
            s: 0.0,
            qs: [0; QK],
        }
    }
}

/// `x` rounded to the nearest f16 value (as f32).
pub fn round_f16(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

/// Quantizes `x` (a multiple of 32 long) into `out`, as ggml's AVX2 `quantize_row_q8_1`
/// does (round half to even).
pub fn quantize_q8(x: &[f32], out: &mut Vec<Q8Block>) {
    out.clear();
    for chunk in x.chunks_exact(QK) {
        let amax = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut qs = [0i8; QK];
        let mut sum = 0i32;
        for (q, &v) in qs.iter_mut().zip(chunk) {
            #[allow(clippy::cast_possible_truncation)]
            let r = (v * id).round_ties_even() as i32;
            let r = r.clamp(-127, 127);
            sum += r;
            #[allow(clippy::cast_possible_truncation)]
            {
                *q = r as i8;
            }
        }
        #[allow(clippy::cast_precision_loss)]
        let s = d * sum as f32;
        out.push(Q8Block {
            d: round_f16(d),
            s: round_f16(s),
            qs,
        });
    }
}

/// A weight format the CPU pass handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightType {
    /// 4-bit, scale only (18-byte blocks).
    Q4_0,
    /// 4-bit, scale and minimum (20-byte blocks).
    Q4_1,
    /// 8-bit, scale (34-byte blocks).
    Q8_0,
    /// Half precision.
    F16,
    /// Single precision.
    F32,
}

impl WeightType {
    /// The CPU pass's type for a GGML type, if it handles it.
    pub fn from_ggml(t: GgmlDType) -> Option<Self> {
        match t {
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::F16 => Some(Self::F16),
            GgmlDType::F32 => Some(Self::F32),
            _ => None,
        }
    }

    fn row_bytes(self, cols: usize) -> usize {
        match self {
            Self::Q4_0 => cols / QK * 18,
            Self::Q4_1 => cols / QK * 20,
            Self::Q8_0 => cols / QK * 34,
            Self::F16 => cols * 2,
            Self::F32 => cols * 4,
        }
    }

    /// Whether the kernels take 8-bit quantized activations (else f32).
    pub fn wants_q8(self) -> bool {
        matches!(self, Self::Q4_0 | Self::Q4_1 | Self::Q8_0)
    }
}

/// A row-major weight matrix (`rows` outputs of `cols` inputs), blocks as in the file.
#[derive(Debug, Clone)]
pub struct QMatrix {
    ty: WeightType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
    data: Vec<u8>,
}

/// The activations of one token in the forms the kernels take.
#[derive(Debug, Clone, Copy)]
pub struct Act<'a> {
    /// Full precision.
    pub f32: &'a [f32],
    /// 8-bit blocks (empty when no matrix of the op wants them).
    pub q8: &'a [Q8Block],
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    let lo = b.get(at).copied().unwrap_or(0);
    let hi = b.get(at + 1).copied().unwrap_or(0);
    f16::from_le_bytes([lo, hi]).to_f32()
}

impl QMatrix {
    /// Wraps raw GGUF tensor bytes with ggml dims `[cols, rows]`.
    ///
    /// # Errors
    /// When the type is not handled or the sizes do not match.
    pub fn from_raw(ty: GgmlDType, dims: &[usize], data: Vec<u8>) -> Result<Self, EngineError> {
        let ty = WeightType::from_ggml(ty)
            .ok_or_else(|| EngineError::Load(format!("weight type {ty:?} not handled")))?;
        let (cols, rows) = match dims {
            [c] => (*c, 1),
            [c, r] => (*c, *r),
            _ => return Err(EngineError::Load("weight is not a matrix".into())),
        };
        if ty.wants_q8() && cols % QK != 0 {
            return Err(EngineError::Load(
                "row length is not a multiple of 32".into(),
            ));
        }
        let row_bytes = ty.row_bytes(cols);
        if data.len() != row_bytes * rows {
            return Err(EngineError::Load(
                "weight size does not match its shape".into(),
            ));
        }
        Ok(Self {
            ty,
            rows,
            cols,
            row_bytes,
            data,
        })
    }

    /// Output size.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input size.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The block format.
    pub fn ty(&self) -> WeightType {
        self.ty
    }

    fn row(&self, r: usize) -> &[u8] {
        self.data
            .get(r * self.row_bytes..(r + 1) * self.row_bytes)
            .unwrap_or_default()
    }

    /// Writes row `r`, dequantized, into `out` (`cols` long).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let row = self.row(r);
        match self.ty {
            WeightType::Q4_0 => {
                for (blk, o) in row.chunks_exact(18).zip(out.chunks_exact_mut(QK)) {
                    let d = f16_at(blk, 0);
                    for (j, &q) in blk.get(2..18).unwrap_or_default().iter().enumerate() {
                        if let Some(v) = o.get_mut(j) {
                            *v = (f32::from(q & 0x0F) - 8.0) * d;
                        }
                        if let Some(v) = o.get_mut(j + 16) {
                            *v = (f32::from(q >> 4) - 8.0) * d;
                        }
                    }
                }
            }
            WeightType::Q4_1 => {
                for (blk, o) in row.chunks_exact(20).zip(out.chunks_exact_mut(QK)) {
                    let d = f16_at(blk, 0);
                    let m = f16_at(blk, 2);
                    for (j, &q) in blk.get(4..20).unwrap_or_default().iter().enumerate() {
                        if let Some(v) = o.get_mut(j) {
                            *v = f32::from(q & 0x0F) * d + m;
                        }
                        if let Some(v) = o.get_mut(j + 16) {
                            *v = f32::from(q >> 4) * d + m;
                        }
                    }
                }
            }
            WeightType::Q8_0 => {
                for (blk, o) in row.chunks_exact(34).zip(out.chunks_exact_mut(QK)) {
                    let d = f16_at(blk, 0);
                    for (v, &q) in o.iter_mut().zip(blk.get(2..34).unwrap_or_default()) {
                        *v = f32::from(q.cast_signed()) * d;
                    }
                }
            }
            WeightType::F16 => {
                for (v, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                    *v = f16_at(b, 0);
                }
            }
            WeightType::F32 => {
                for (v, b) in out.iter_mut().zip(row.chunks_exact(4)) {
                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }

    /// For each token `m` of `acts` and each row `r` of `rows`:
    /// `out[m * ld + (r - rows.start)] = row_r · act_m`.
    pub fn matmul(
        &self,
        simd: Simd,
        rows: Range<usize>,
        acts: &[Act<'_>],
        out: &mut [f32],
        ld: usize,
    ) {
        let n = acts.len();
        #[cfg(target_arch = "x86_64")]
        if let (Simd::V3(v3), true, [act]) = (simd, self.ty.wants_q8(), acts) {
            // One token: four rows per call (independent chains, one activation load).
            let mut r = rows.start;
            while r + 4 <= rows.end {
                let rs = [
                    self.row(r),
                    self.row(r + 1),
                    self.row(r + 2),
                    self.row(r + 3),
                ];
                let v = v3.vectorize(|| avx2::dot_rows::<4>(v3, self.ty, rs, *act));
                let i = r - rows.start;
                if let Some(o) = out.get_mut(i..i + 4) {
                    o.copy_from_slice(&v);
                }
                r += 4;
            }
            while r < rows.end {
                let [v] = v3.vectorize(|| avx2::dot_rows::<1>(v3, self.ty, [self.row(r)], *act));
                if let Some(o) = out.get_mut(r - rows.start) {
                    *o = v;
                }
                r += 1;
            }
            return;
        }
        for r in rows.clone() {
            let row = self.row(r);
            let i = r - rows.start;
            let mut m = 0;
            while m + 4 <= n {
                let a = [acts[m], acts[m + 1], acts[m + 2], acts[m + 3]];
                let v = dot4(simd, self.ty, row, &a);
                for (k, x) in v.into_iter().enumerate() {
                    if let Some(o) = out.get_mut((m + k) * ld + i) {
                        *o = x;
                    }
                }
                m += 4;
            }
            while m < n {
                let v = dot1(simd, self.ty, row, acts[m]);
                if let Some(o) = out.get_mut(m * ld + i) {
                    *o = v;
                }
                m += 1;
            }
        }
    }
}

/// The SIMD level chosen at load.
#[derive(Debug, Clone, Copy)]
pub enum Simd {
    /// Portable scalar kernels.
    Scalar,
    /// AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
}

impl Simd {
    /// The best level this CPU supports (`VEIL_SCALAR_KERNELS=1` forces scalar).
    pub fn detect() -> Self {
        if std::env::var_os("VEIL_SCALAR_KERNELS").is_some_and(|v| v == "1") {
            return Self::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(v3) = pulp::x86::V3::try_new() {
            return Self::V3(v3);
        }
        Self::Scalar
    }
}

fn dot1(simd: Simd, ty: WeightType, row: &[u8], act: Act<'_>) -> f32 {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::V3(v3) => {
            let [r] = v3.vectorize(|| avx2::dot_n::<1>(v3, ty, row, [act]));
            r
        }
        Simd::Scalar => scalar::dot(ty, row, act),
    }
}

fn dot4(simd: Simd, ty: WeightType, row: &[u8], acts: &[Act<'_>; 4]) -> [f32; 4] {
    match simd {
        #[cfg(target_arch = "x86_64")]
        Simd::V3(v3) => v3.vectorize(|| avx2::dot_n::<4>(v3, ty, row, *acts)),
        Simd::Scalar => acts.map(|a| scalar::dot(ty, row, a)),
    }
}

/// Portable kernels (also the reference the SIMD ones are tested against).
pub mod scalar {
    use super::{Act, QK, WeightType, f16_at};

    /// `row · act`.
    pub fn dot(ty: WeightType, row: &[u8], act: Act<'_>) -> f32 {
        match ty {
            WeightType::Q4_0 => {
                let mut sum = 0f32;
                for (blk, a) in row.chunks_exact(18).zip(act.q8) {
                    let mut si = 0i32;
                    for (j, &q) in blk.get(2..18).unwrap_or_default().iter().enumerate() {
                        let lo = i32::from(q & 0x0F) - 8;
                        let hi = i32::from(q >> 4) - 8;
                        si += lo * i32::from(a.qs[j]) + hi * i32::from(a.qs[j + QK / 2]);
                    }
                    #[allow(clippy::cast_precision_loss)]
                    {
                        sum += si as f32 * (f16_at(blk, 0) * a.d);
                    }
                }
                sum
            }
            WeightType::Q4_1 => {
                let mut sum = 0f32;
                let mut summs = 0f32;
                for (blk, a) in row.chunks_exact(20).zip(act.q8) {
                    let mut si = 0i32;
                    for (j, &q) in blk.get(4..20).unwrap_or_default().iter().enumerate() {
                        si += i32::from(q & 0x0F) * i32::from(a.qs[j])
                            + i32::from(q >> 4) * i32::from(a.qs[j + QK / 2]);
                    }
                    #[allow(clippy::cast_precision_loss)]
                    {
                        sum += si as f32 * (f16_at(blk, 0) * a.d);
                    }
                    summs += f16_at(blk, 2) * a.s;
                }
                sum + summs
            }
            WeightType::Q8_0 => {
                let mut sum = 0f32;
                for (blk, a) in row.chunks_exact(34).zip(act.q8) {
                    let mut si = 0i32;
                    for (&q, &y) in blk.get(2..34).unwrap_or_default().iter().zip(&a.qs) {
                        si += i32::from(q.cast_signed()) * i32::from(y);
                    }
                    #[allow(clippy::cast_precision_loss)]
                    {
                        sum += si as f32 * (f16_at(blk, 0) * a.d);
                    }
                }
                sum
            }
            WeightType::F16 => row
                .chunks_exact(2)
                .zip(act.f32)
                .map(|(b, x)| f16_at(b, 0) * x)
                .sum(),
            WeightType::F32 => row
                .chunks_exact(4)
                .zip(act.f32)
                .map(|(b, x)| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * x)
                .sum(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{__m128i, __m256, __m256i};

    use pulp::x86::V3;

    use super::{Act, WeightType, f16_at, scalar};

    #[inline(always)]
    fn hsum(s: V3, x: __m256) -> f32 {
        let hi = s.avx._mm256_extractf128_ps::<1>(x);
        let lo = s.avx._mm256_castps256_ps128(x);
        let r = s.sse._mm_add_ps(hi, lo);
        let r = s.sse._mm_add_ps(r, s.sse._mm_movehl_ps(r, r));
        let r = s.sse._mm_add_ss(r, s.sse3._mm_movehdup_ps(r));
        s.sse._mm_cvtss_f32(r)
    }

    #[inline(always)]
    fn nibbles(s: V3, b: &[u8]) -> __m256i {
        let mut a = [0u8; 16];
        a.copy_from_slice(b.get(..16).unwrap_or(&[0; 16]));
        let tmp: __m128i = bytemuck::cast(a);
        let hi = s.sse2._mm_srli_epi16::<4>(tmp);
        let both = s.avx._mm256_set_m128i(hi, tmp);
        s.avx2._mm256_and_si256(both, s.avx._mm256_set1_epi8(0x0F))
    }

    #[inline(always)]
    fn bytes32(b: &[u8]) -> __m256i {
        let mut a = [0u8; 32];
        a.copy_from_slice(b.get(..32).unwrap_or(&[0; 32]));
        bytemuck::cast(a)
    }

    /// Σ of products of unsigned `x` and signed `y` bytes, as 8 f32 lanes.
    #[inline(always)]
    fn mul_sum_us8(s: V3, x: __m256i, y: __m256i) -> __m256 {
        let p = s.avx2._mm256_maddubs_epi16(x, y);
        let p = s.avx2._mm256_madd_epi16(p, s.avx._mm256_set1_epi16(1));
        s.avx._mm256_cvtepi32_ps(p)
    }

    /// Σ of products of signed bytes, as 8 f32 lanes.
    #[inline(always)]
    fn mul_sum_i8(s: V3, x: __m256i, y: __m256i) -> __m256 {
        let ax = s.avx2._mm256_sign_epi8(x, x);
        let sy = s.avx2._mm256_sign_epi8(y, x);
        mul_sum_us8(s, ax, sy)
    }

    /// Prefetches the same offset `R` rows further on (the next call's rows: rows are
    /// contiguous), so the weights stream in ahead of the kernel.
    #[inline(always)]
    fn prefetch_next<const R: usize>(s: V3, row: &[u8], at: usize) {
        let ahead = row.as_ptr().wrapping_add(at + R * row.len());
        s.sse._mm_prefetch::<3>(ahead.cast());
    }

    /// `row_r · act` for R rows at once (single-token passes): the same operations in
    /// the same order as [`dot_n`] for each row, with the rows' independent chains
    /// interleaved, each activation block loaded once, and the next rows prefetched.
    #[inline(always)]
    pub fn dot_rows<const R: usize>(
        s: V3,
        ty: WeightType,
        rows: [&[u8]; R],
        act: Act<'_>,
    ) -> [f32; R] {
        let zero = s.avx._mm256_setzero_ps();
        let mut acc = [zero; R];
        let mut summs = [0f32; R];
        match ty {
            WeightType::Q4_1 => {
                for (b, a) in act.q8.iter().enumerate() {
                    let qy: __m256i = bytemuck::cast(a.qs);
                    for r in 0..R {
                        prefetch_next::<R>(s, rows[r], b * 20);
                        let Some(blk) = rows[r].get(b * 20..(b + 1) * 20) else {
                            continue;
                        };
                        let d = f16_at(blk, 0);
                        let m = f16_at(blk, 2);
                        let qx = nibbles(s, blk.get(4..20).unwrap_or_default());
                        let xy = mul_sum_us8(s, qx, qy);
                        acc[r] = s
                            .fma
                            ._mm256_fmadd_ps(s.avx._mm256_set1_ps(d * a.d), xy, acc[r]);
                        summs[r] += m * a.s;
                    }
                }
            }
            WeightType::Q4_0 => {
                for (b, a) in act.q8.iter().enumerate() {
                    let qy: __m256i = bytemuck::cast(a.qs);
                    for r in 0..R {
                        prefetch_next::<R>(s, rows[r], b * 18);
                        let Some(blk) = rows[r].get(b * 18..(b + 1) * 18) else {
                            continue;
                        };
                        let d = f16_at(blk, 0);
                        let qx = nibbles(s, blk.get(2..18).unwrap_or_default());
                        let qx = s.avx2._mm256_sub_epi8(qx, s.avx._mm256_set1_epi8(8));
                        let xy = mul_sum_i8(s, qx, qy);
                        acc[r] = s
                            .fma
                            ._mm256_fmadd_ps(s.avx._mm256_set1_ps(d * a.d), xy, acc[r]);
                    }
                }
            }
            WeightType::Q8_0 => {
                for (b, a) in act.q8.iter().enumerate() {
                    let qy: __m256i = bytemuck::cast(a.qs);
                    for r in 0..R {
                        prefetch_next::<R>(s, rows[r], b * 34);
                        let Some(blk) = rows[r].get(b * 34..(b + 1) * 34) else {
                            continue;
                        };
                        let d = f16_at(blk, 0);
                        let qx = bytes32(blk.get(2..34).unwrap_or_default());
                        let xy = mul_sum_i8(s, qx, qy);
                        acc[r] = s
                            .fma
                            ._mm256_fmadd_ps(s.avx._mm256_set1_ps(d * a.d), xy, acc[r]);
                    }
                }
            }
            WeightType::F16 | WeightType::F32 => {
                return rows.map(|row| scalar::dot(ty, row, act));
            }
        }
        let mut out = [0f32; R];
        for r in 0..R {
            out[r] = hsum(s, acc[r]) + summs[r];
        }
        out
    }

    /// `row · act_n` for N tokens at once (the weight blocks are unpacked once).
    #[inline(always)]
    pub fn dot_n<const N: usize>(
        s: V3,
        ty: WeightType,
        row: &[u8],
        acts: [Act<'_>; N],
    ) -> [f32; N] {
        let zero = s.avx._mm256_setzero_ps();
        let mut acc = [zero; N];
        match ty {
            WeightType::Q4_1 => {
                let mut summs = [0f32; N];
                for (b, blk) in row.chunks_exact(20).enumerate() {
                    let d = f16_at(blk, 0);
                    let m = f16_at(blk, 2);
                    let qx = nibbles(s, blk.get(4..20).unwrap_or_default());
                    for n in 0..N {
                        let Some(a) = acts[n].q8.get(b) else { continue };
                        let qy: __m256i = bytemuck::cast(a.qs);
                        let xy = mul_sum_us8(s, qx, qy);
                        acc[n] = s
                            .fma
                            ._mm256_fmadd_ps(s.avx._mm256_set1_ps(d * a.d), xy, acc[n]);
                        summs[n] += m * a.s;
                    }
                }
                let mut out = [0f32; N];
                for n in 0..N {
                    out[n] = hsum(s, acc[n]) + summs[n];
                }
                out
            }
            WeightType::Q4_0 => {
                for (b, blk) in row.chunks_exact(18).enumerate() {
                    let d = f16_at(blk, 0);
                    let qx = nibbles(s, blk.get(2..18).unwrap_or_default());
                    let qx = s.avx2._mm256_sub_epi8(qx, s.avx._mm256_set1_epi8(8));
                    for n in 0..N {
                        let Some(a) = acts[n].q8.get(b) else { continue };
                        let qy: __m256i = bytemuck::cast(a.qs);
                        let xy = mul_sum_i8(s, qx, qy);
                        acc[n] = s
                            .fma
                            ._mm256_fmadd_ps(s.avx._mm256_set1_ps(d * a.d), xy, acc[n]);
                    }
                }
                acc.map(|a| hsum(s, a))
            }
            WeightType::Q8_0 => {
                for (b, blk) in row.chunks_exact(34).enumerate() {
                    let d = f16_at(blk, 0);
                    let qx = bytes32(blk.get(2..34).unwrap_or_default());
                    for n in 0..N {
                        let Some(a) = acts[n].q8.get(b) else { continue };
                        let qy: __m256i = bytemuck::cast(a.qs);
                        let xy = mul_sum_i8(s, qx, qy);
                        acc[n] = s
                            .fma
                            ._mm256_fmadd_ps(s.avx._mm256_set1_ps(d * a.d), xy, acc[n]);
                    }
                }
                acc.map(|a| hsum(s, a))
            }
            WeightType::F16 | WeightType::F32 => acts.map(|a| scalar::dot(ty, row, a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        #[allow(clippy::cast_precision_loss)]
        let v = (*seed >> 40) as f32 / (1u64 << 24) as f32;
        v * 2.0 - 1.0
    }

    fn random_matrix(ty: GgmlDType, rows: usize, cols: usize, seed: &mut u64) -> QMatrix {
        let block = match ty {
            GgmlDType::Q4_0 => 18,
            GgmlDType::Q4_1 => 20,
            GgmlDType::Q8_0 => 34,
            _ => 0,
        };
        let mut data = Vec::new();
        for _ in 0..rows * cols / QK {
            let mut blk = vec![0u8; block];
            let d = f16::from_f32(0.01 + lcg(seed).abs() * 0.02).to_le_bytes();
            blk[0] = d[0];
            blk[1] = d[1];
            for b in blk.iter_mut().skip(2) {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                {
                    *b = ((lcg(seed) + 1.0) * 127.9) as u8;
                }
            }
            if ty == GgmlDType::Q4_1 {
                let m = f16::from_f32(-0.1 * lcg(seed).abs()).to_le_bytes();
                blk[2] = m[0];
                blk[3] = m[1];
            }
            data.extend(blk);
        }
        QMatrix::from_raw(ty, &[cols, rows], data).unwrap()
    }

    #[test]
    fn quantize_matches_ggml_rules() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
        let mut q = Vec::new();
        quantize_q8(&x, &mut q);
        assert_eq!(q.len(), 2);
        let amax = 3.15f32;
        assert_eq!(q[0].d, round_f16(amax / 127.0));
        assert_eq!(q[0].qs[0], -127);
        let sum: i32 = q[0].qs.iter().map(|&v| i32::from(v)).sum();
        assert_eq!(q[0].s, round_f16(amax / 127.0 * sum as f32));
        // Reconstruction error is within half a step.
        for (i, v) in x.iter().enumerate().take(32) {
            let r = f32::from(q[0].qs[i]) * amax / 127.0;
            assert!((r - v).abs() <= amax / 127.0 * 0.5 + 1e-6);
        }
    }

    #[test]
    fn simd_kernels_match_scalar_and_dequantized() {
        let simd = Simd::detect();
        let mut seed = 5;
        for ty in [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let (rows, cols) = (7, 256);
            let w = random_matrix(ty, rows, cols, &mut seed);
            let xs: Vec<Vec<f32>> = (0..6)
                .map(|_| (0..cols).map(|_| lcg(&mut seed)).collect())
                .collect();
            let q8s: Vec<Vec<Q8Block>> = xs
                .iter()
                .map(|x| {
                    let mut q = Vec::new();
                    quantize_q8(x, &mut q);
                    q
                })
                .collect();
            let acts: Vec<Act<'_>> = xs
                .iter()
                .zip(&q8s)
                .map(|(x, q)| Act { f32: x, q8: q })
                .collect();
            let mut out = vec![0f32; 6 * rows];
            w.matmul(simd, 0..rows, &acts, &mut out, rows);
            let mut deq = vec![0f32; cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut deq);
                for (m, a) in acts.iter().enumerate() {
                    let scalar = scalar::dot(w.ty(), w.row(r), *a);
                    let got = out[m * rows + r];
                    assert!(
                        (got - scalar).abs() <= 1e-4 * (1.0 + scalar.abs()),
                        "{ty:?} {got} vs {scalar}"
                    );
                    let exact: f32 = deq.iter().zip(&xs[m]).map(|(w, x)| w * x).sum();
                    assert!(
                        (got - exact).abs() < 0.05 * (1.0 + exact.abs()),
                        "{ty:?} {got} vs {exact}"
                    );
                }
            }
            // One token at a time (the multi-row path): the same values exactly.
            for (m, a) in acts.iter().enumerate() {
                let mut one = vec![0f32; rows];
                w.matmul(simd, 0..rows, std::slice::from_ref(a), &mut one, rows);
                for r in 0..rows {
                    assert_eq!(one[r], out[m * rows + r], "{ty:?} token {m} row {r}");
                }
            }
            // A sub-range of rows.
            let mut part = vec![0f32; 6 * 3];
            w.matmul(simd, 2..5, &acts, &mut part, 3);
            for m in 0..6 {
                for i in 0..3 {
                    assert_eq!(part[m * 3 + i], out[m * rows + 2 + i]);
                }
            }
        }
    }
}
