//! Choosing the next token: greedy or temperature + nucleus (top-p) sampling with a seed, and the
//! log-probabilities OpenAI's `logprobs` / `top_logprobs` report.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to pick tokens.
#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 = no cut.
    pub top_p: f32,
    /// Seed for reproducible sampling; `None` = fresh entropy.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
        }
    }
}

/// A token and its log-probability under the model (temperature 1, no top-p cut).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLogprob {
    /// Token id.
    pub id: u32,
    /// Natural-log probability.
    pub logprob: f32,
}

/// Stateful sampler (owns the RNG so a seed gives one reproducible sequence).
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

/// `log_softmax` of a logit row.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&l| l - lse).collect()
}

/// The `n` most likely tokens, best first.
pub fn top_n(logprobs: &[f32], n: usize) -> Vec<TokenLogprob> {
    let mut best: Vec<TokenLogprob> = Vec::with_capacity(n + 1);
    for (id, &lp) in logprobs.iter().enumerate() {
        if best.len() < n || best.last().is_some_and(|b| lp > b.logprob) {
            let at = best.partition_point(|b| b.logprob >= lp);
            best.insert(
                at,
                TokenLogprob {
                    id: id as u32,
                    logprob: lp,
                },
            );
            best.truncate(n);
        }
    }
    best
}

/// Index of the largest logit (first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

impl Sampler {
    /// A sampler for one request.
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng }
    }

    /// Picks the next token from a logit row.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let t = self.params.temperature;
        if t <= 0.0 || logits.is_empty() {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut probs: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l - max) / t).exp()))
            .collect();
        let total: f32 = probs.iter().map(|p| p.1).sum();
        let top_p = self.params.top_p.clamp(f32::MIN_POSITIVE, 1.0);
        if top_p < 1.0 {
            probs.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p.1 / total;
                if acc >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let mass: f32 = probs.iter().map(|p| p.1).sum();
        let mut r = self.rng.random::<f32>() * mass;
        for &(id, p) in &probs {
            r -= p;
            if r <= 0.0 {
                return id;
            }
        }
        probs.last().map_or(0, |p| p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0]), 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_varies() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_p: 1.0,
            seed: Some(7),
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params.clone());
            (0..40).map(|_| s.sample(&logits)).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..40).map(|_| s.sample(&logits)).collect()
        };
        assert_eq!(a, b);
        assert!(
            a.iter().any(|&x| x != a[0]),
            "sampling should not be constant"
        );
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // token 0 has ~88% of the mass: top_p 0.5 must always pick it.
        let logits = [5.0, 3.0, 0.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: Some(1),
        });
        assert!((0..200).all(|_| s.sample(&logits) == 0));
    }

    #[test]
    fn logprobs_are_normalised_and_ranked() {
        let lp = log_softmax(&[1.0, 2.0, 3.0, 0.5]);
        let total: f32 = lp.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-5);
        let top = top_n(&lp, 3);
        assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), vec![2, 1, 0]);
    }
}
