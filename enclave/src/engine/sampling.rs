//! Choosing the next token from logits: greedy at temperature 0, otherwise softmax with
//! temperature, then nucleus (top-p) filtering, then a draw from a seeded generator.
//!
//! The generator is xoshiro256** seeded through SplitMix64, written out here so that a
//! seed gives the same text on every platform and with every version of our dependencies.

use super::Sampling;

/// xoshiro256** (Blackman and Vigna), seeded with SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = &mut self.s;
        let result = s1.wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = *s1 << 17;
        *s2 ^= *s0;
        *s3 ^= *s1;
        *s1 ^= *s2;
        *s0 ^= *s3;
        *s2 ^= t;
        *s3 = s3.rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let v = (self.next_u64() >> 11) as f64;
        v * (1.0 / (1u64 << 53) as f64)
    }
}

/// The index of the largest logit (the first one on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    u32::try_from(best).unwrap_or(0)
}

/// A sampler for one generation.
#[derive(Debug, Clone)]
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: Rng,
    probs: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler with `params` (temperature ≤ 0 is greedy; top_p is clamped to (0, 1]).
    pub fn new(params: &Sampling) -> Self {
        Self {
            temperature: if params.temperature.is_finite() {
                params.temperature
            } else {
                0.0
            },
            top_p: if params.top_p.is_finite() && params.top_p > 0.0 {
                params.top_p.min(1.0)
            } else {
                1.0
            },
            rng: Rng::new(params.seed),
            probs: Vec::new(),
        }
    }

    /// Whether this sampler is greedy.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// The generator (backends that sample on their device draw from it).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Temperature and top-p.
    pub fn params(&self) -> (f64, f64) {
        (self.temperature, self.top_p)
    }

    /// Picks the next token.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.is_greedy() || logits.is_empty() {
            return argmax(logits);
        }
        #[allow(clippy::cast_possible_truncation)]
        let inv_t = (1.0 / self.temperature) as f32;
        let max = logits
            .iter()
            .copied()
            .filter(|v| !v.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return argmax(logits);
        }
        self.probs.clear();
        let mut sum = 0f64;
        for (i, &l) in (0u32..).zip(logits) {
            let p = if l.is_nan() {
                0.0
            } else {
                ((l - max) * inv_t).exp()
            };
            sum += f64::from(p);
            self.probs.push((p, i));
        }
        let u = self.rng.next_f64();
        if self.top_p >= 1.0 {
            let target = u * sum;
            let mut acc = 0f64;
            for &(p, i) in &self.probs {
                acc += f64::from(p);
                if acc > target {
                    return i;
                }
            }
            return self
                .probs
                .iter()
                .rev()
                .find(|(p, _)| *p > 0.0)
                .map_or(0, |x| x.1);
        }
        // Nucleus: the fewest most probable tokens whose mass reaches top_p. Sort only as
        // many candidates as needed, growing the prefix geometrically.
        let need = self.top_p * sum;
        let n = self.probs.len();
        let mut k = 64.min(n);
        loop {
            let cmp = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
            if k < n {
                self.probs.select_nth_unstable_by(k, cmp);
            }
            let head = self.probs.get_mut(..k).unwrap_or_default();
            head.sort_unstable_by(cmp);
            let mut acc = 0f64;
            let mut cut = None;
            for (j, &(p, _)) in head.iter().enumerate() {
                acc += f64::from(p);
                if acc >= need {
                    cut = Some((j + 1, acc));
                    break;
                }
            }
            if let Some((m, mass)) = cut.or((k == n).then_some((k, acc))) {
                let target = u * mass;
                let mut acc = 0f64;
                for &(p, i) in head.iter().take(m) {
                    acc += f64::from(p);
                    if acc > target {
                        return i;
                    }
                }
                return head.first().map_or(0, |x| x.1);
            }
            k = (k * 4).min(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_uniform_enough() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let mut c = Rng::new(43);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        let mut r = Rng::new(7);
        let mean: f64 = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -1.0]), 1);
        let mut s = Sampler::new(&Sampling {
            temperature: 0.0,
            top_p: 1.0,
            seed: 1,
        });
        assert_eq!(s.sample(&[0.0, 1.0, 5.0]), 2);
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // One token holds ~88 % of the mass: with top_p 0.5 it is always chosen.
        let mut logits = vec![0.0f32; 1000];
        logits[17] = 9.0;
        for seed in 0..50 {
            let mut s = Sampler::new(&Sampling {
                temperature: 1.0,
                top_p: 0.5,
                seed,
            });
            assert_eq!(s.sample(&logits), 17);
        }
        // With top_p 1 other tokens come up.
        let mut s = Sampler::new(&Sampling {
            temperature: 1.0,
            top_p: 1.0,
            seed: 3,
        });
        let picks: std::collections::HashSet<u32> = (0..200).map(|_| s.sample(&logits)).collect();
        assert!(picks.len() > 1);
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with probabilities 0.25 and 0.75.
        let logits = [0.0f32, 3f32.ln()];
        let mut s = Sampler::new(&Sampling {
            temperature: 1.0,
            top_p: 1.0,
            seed: 9,
        });
        let ones = (0..4000).filter(|_| s.sample(&logits) == 1).count();
        assert!((2800..3200).contains(&ones), "{ones}");
        // top_p large enough for both, through the sorting path.
        let mut s = Sampler::new(&Sampling {
            temperature: 1.0,
            top_p: 0.99,
            seed: 9,
        });
        let ones = (0..4000).filter(|_| s.sample(&logits) == 1).count();
        assert!((2800..3200).contains(&ones), "{ones}");
    }
}
