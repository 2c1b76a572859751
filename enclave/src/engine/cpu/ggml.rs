//! The small numeric routines of ggml's x86 CPU backend (AVX2 + FMA build), reproduced
//! operation for operation, so that this engine's logits follow llama.cpp's to the last
//! bits where it matters: 8-bit activation quantization magnifies any difference in the
//! values it rounds, and greedy decoding then parts ways at the first near tie.
//!
//! Reproduced: `ggml_v_expf` (the vectorised exponential, evaluated here lane by lane
//! with the same fused operations), SiLU as `ggml_v_silu`, the soft-max's sums over
//! groups of eight, and `ggml_vec_dot_f16`'s four accumulators of eight lanes and their
//! reduction order (single-token passes), and llamafile's tinyBLAS f16 kernel with one
//! accumulator of eight lanes (what llama.cpp uses for the attention products of
//! prompts: two tokens or more).

fn f(bits: u32) -> f32 {
    f32::from_bits(bits)
}

/// ggml's AVX2 `ggml_v_expf` for one lane (ARM optimized-routines' algorithm).
pub fn expf(x: f32) -> f32 {
    let r = f(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(f(0x3fb8_aa3b), r);
    let n = z - r;
    let b = (-n).mul_add(f(0x35bf_be8e), (-n).mul_add(f(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = f(e.wrapping_add(1f32.to_bits()));
    let c = n.abs() > 126.0;
    let u = b * b;
    let j = f(0x3c07_2010)
        .mul_add(b, f(0x3d2b_9f17))
        .mul_add(u, f(0x3e2a_af33).mul_add(b, f(0x3eff_fedb)))
        .mul_add(u, f(0x3f7f_fff6) * b);
    if !c {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f(g.wrapping_add(0x7f00_0000));
    let s2 = f(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// `silu(x) * g` as `ggml_vec_swiglu_f32`: the vector formula for elements in whole
/// groups of eight of the row (`vector`), libm's `expf` for the rest.
pub fn swiglu(x: f32, g: f32, vector: bool) -> f32 {
    if vector {
        (x / (1.0 + expf(0.0 - x))) * g
    } else {
        (x / (1.0 + (-x).exp())) * g
    }
}

/// Soft-max of `x` in place as `ggml_compute_forward_soft_max_f32` with
/// `ggml_vec_soft_max_f32`: exponentials in groups of eight (the row is padded with
/// masked entries to a multiple of eight, which add nothing), each group summed
/// horizontally in f32 and the groups in f64, then one f32 scale.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f64;
    for group in x.chunks_mut(8) {
        let mut a = [0f32; 8];
        for (v, slot) in group.iter_mut().zip(a.iter_mut()) {
            *v = expf(*v - max);
            *slot = *v;
        }
        // (hi + lo), then movehl, then movehdup, as ggml's hsum.
        let v0 = a[0] + a[4];
        let v1 = a[1] + a[5];
        let v2 = a[2] + a[6];
        let v3 = a[3] + a[7];
        let w0 = v0 + v2;
        let w1 = v1 + v3;
        sum += f64::from(w0 + w1);
    }
    #[allow(clippy::cast_possible_truncation)]
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The reduction of `GGML_F32x8_REDUCE` over four accumulators of eight lanes
/// (`acc[8 * a + lane]`).
fn reduce32(acc: &[f32; 32]) -> f32 {
    let mut x0 = [0f32; 8];
    for (l, x) in x0.iter_mut().enumerate() {
        let a = acc[l] + acc[16 + l];
        let b = acc[8 + l] + acc[24 + l];
        *x = a + b;
    }
    let t0 = [x0[0] + x0[4], x0[1] + x0[5], x0[2] + x0[6], x0[3] + x0[7]];
    (t0[0] + t0[1]) + (t0[2] + t0[3])
}

/// `ggml_vec_dot_f16` of two f16-valued vectors (given widened to f32).
pub fn dot_f16(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let np = n & !31;
    let mut acc = [0f32; 32];
    // Element `i` goes to lane `i % 32`, lanes in order: whole chunks of 32 keep each
    // lane's sequence of fused multiply-adds and let the compiler use vector FMAs.
    for (a, b) in x.chunks_exact(32).zip(y.chunks_exact(32)) {
        for ((s, &a), &b) in acc.iter_mut().zip(a).zip(b) {
            *s = a.mul_add(b, *s);
        }
    }
    let mut sum = f64::from(reduce32(&acc));
    for (a, b) in x.iter().zip(y).take(n).skip(np) {
        sum += f64::from(a * b);
    }
    #[allow(clippy::cast_possible_truncation)]
    let s = sum as f32;
    s
}

/// tinyBLAS's horizontal sum of eight lanes: `(hi + lo)`, then movehl, then movehdup.
fn reduce8(acc: &[f32; 8]) -> f32 {
    let t = [
        acc[4] + acc[0],
        acc[5] + acc[1],
        acc[6] + acc[2],
        acc[7] + acc[3],
    ];
    (t[0] + t[2]) + (t[1] + t[3])
}

/// tinyBLAS's f16 dot product (`KN = 8`; the length is a multiple of 8 in every use).
pub fn dot8(x: &[f32], y: &[f32]) -> f32 {
    let n = x.len().min(y.len());
    let (x, y) = (
        x.get(..n).unwrap_or_default(),
        y.get(..n).unwrap_or_default(),
    );
    let mut acc = [0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for ((s, &a), &b) in acc.iter_mut().zip(a).zip(b) {
            *s = a.mul_add(b, *s);
        }
    }
    for ((s, &a), &b) in acc.iter_mut().zip(xr).zip(yr) {
        *s = a.mul_add(b, *s);
    }
    reduce8(&acc)
}

/// Accumulates `Σ_j w_j · v_j` over rows `v_j` of length `hd` as `ggml_vec_dot_f16`
/// would compute each output element over `j` (rows padded with zeros to a multiple of
/// 32, as llama.cpp's KV cache is): `acc` holds `32 × hd` partial sums.
///
/// With `lanes == 8` the order is tinyBLAS's instead (prompt passes).
#[derive(Debug, Default)]
pub struct WeightedSum {
    acc: Vec<f32>,
    hd: usize,
    lanes: usize,
}

impl WeightedSum {
    /// Starts a sum of rows of length `hd`, in `ggml_vec_dot_f16`'s order (`lanes` 32)
    /// or tinyBLAS's (`lanes` 8).
    pub fn start(&mut self, hd: usize, lanes: usize) {
        self.hd = hd;
        self.lanes = if lanes == 8 { 8 } else { 32 };
        self.acc.clear();
        self.acc.resize(self.lanes * hd, 0.0);
    }

    /// Adds `w · v` for row index `j`.
    pub fn add(&mut self, j: usize, w: f32, v: &[f32]) {
        let base = (j % self.lanes) * self.hd;
        if let Some(slot) = self.acc.get_mut(base..base + self.hd) {
            for (a, x) in slot.iter_mut().zip(v) {
                *a = w.mul_add(*x, *a);
            }
        }
    }

    /// Writes the sums into `out` (`hd` long).
    pub fn finish(&self, out: &mut [f32]) {
        let hd = self.hd;
        for (d, o) in out.iter_mut().enumerate().take(hd) {
            if self.lanes == 8 {
                let mut lanes = [0f32; 8];
                for (s, lane) in lanes.iter_mut().enumerate() {
                    *lane = self.acc.get(s * hd + d).copied().unwrap_or(0.0);
                }
                *o = reduce8(&lanes);
            } else {
                let mut lanes = [0f32; 32];
                for (s, lane) in lanes.iter_mut().enumerate() {
                    *lane = self.acc.get(s * hd + d).copied().unwrap_or(0.0);
                }
                *o = reduce32(&lanes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expf_is_close_to_libm() {
        for i in -1000..1000 {
            let x = i as f32 * 0.0871;
            let a = expf(x);
            let b = x.exp();
            assert!((a - b).abs() <= b * 4e-7, "{x}: {a} vs {b}");
        }
        assert_eq!(expf(f32::NEG_INFINITY), 0.0);
        assert_eq!(expf(0.0), 1.0);
        assert!(expf(-120.0) < 1e-50f64 as f32 + 1e-40);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![
            1.0f32,
            2.0,
            3.0,
            f32::NEG_INFINITY,
            0.5,
            -1.0,
            4.0,
            2.0,
            1.0,
            0.0,
        ];
        softmax(&mut x);
        let s: f32 = x.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert_eq!(x[3], 0.0);
    }

    #[test]
    fn dots_agree_with_plain_sums() {
        let x: Vec<f32> = (0..70).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = (0..70).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert!((dot_f16(&x, &y) - plain).abs() < 1e-5);
        assert!(
            (dot8(&x[..64], &y[..64])
                - x[..64]
                    .iter()
                    .zip(&y[..64])
                    .map(|(a, b)| a * b)
                    .sum::<f32>())
            .abs()
                < 1e-5
        );
        let mut ws = WeightedSum::default();
        ws.start(3, 32);
        let mut want = [0f32; 3];
        for j in 0..70 {
            let v = [x[j], y[j], 1.0];
            ws.add(j, 0.5, &v);
            for (w, vv) in want.iter_mut().zip(v) {
                *w += 0.5 * vv;
            }
        }
        let mut out = [0f32; 3];
        ws.finish(&mut out);
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-4);
        }
    }
}
