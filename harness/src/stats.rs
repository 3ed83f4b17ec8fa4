//! Activation statistics of a model on prompts: what tells a trained BitNet model from a random
//! one, and what decides how per-token int8 scales, rounding flips and F16 caches behave.
//!
//! Per layer, from the engine's taps:
//! - the residual stream's outliers: `max_i |x_i| / rms(x)` of `l_out` at each position (a random
//!   model's residual is near Gaussian, about 3-4 for a few hundred features; a trained model's
//!   carries a few features tens of times its RMS);
//! - attention entropy: the softmax of `Qcur . Kcur / sqrt(head_dim)` over the causal window (the
//!   taps are after RoPE, as llama.cpp's), in nats, averaged over heads and the positions that
//!   see two or more keys; also as a fraction of the uniform distribution's `ln(t + 1)`.
//!
//! Per position: the top-1 logit margin (top-1 minus top-2) and the top-1 probability.

use serde::Serialize;
use xval_engine::taps::Tap;

/// One layer's figures over every position of every prompt.
#[derive(Clone, Debug, Serialize)]
pub struct LayerStats {
    pub layer: usize,
    /// Largest `max|x| / rms(x)` of the residual stream (`l_out`) over all positions.
    pub outlier_max: f64,
    /// Mean over positions of the same ratio.
    pub outlier_mean: f64,
    /// The feature that is largest at most positions, and at how many of them.
    pub outlier_feature: usize,
    pub outlier_feature_share: f64,
    /// Mean attention entropy in nats (positions with two or more keys).
    pub attn_entropy: f64,
    /// Mean of entropy / ln(keys): 1 is uniform attention, 0 attention on one key.
    pub attn_entropy_rel: f64,
}

/// The logits' margins over every position.
#[derive(Clone, Debug, Serialize)]
pub struct MarginStats {
    pub positions: usize,
    /// Top-1 minus top-2 logit: median and smallest.
    pub margin_median: f64,
    pub margin_min: f64,
    /// Mean softmax probability of the top-1 token.
    pub top1_prob_mean: f64,
}

/// Accumulates [`LayerStats`] and [`MarginStats`] over prompts.
#[derive(Debug, Default)]
pub struct StatsAccumulator {
    layers: Vec<LayerAcc>,
    margins: Vec<f64>,
    top1_probs: Vec<f64>,
}

#[derive(Clone, Debug, Default)]
struct LayerAcc {
    ratios: Vec<f64>,
    argmax: Vec<usize>,
    entropies: Vec<f64>,
    rel_entropies: Vec<f64>,
}

/// Attention geometry the entropy needs.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl StatsAccumulator {
    /// Add one prompt's forward pass: its `l_out`, `Qcur` and `Kcur` taps for `n_layer`
    /// layers and its logits (`n_vocab` per position).
    pub fn add(
        &mut self,
        taps: &[Tap],
        heads: Heads,
        n_layer: usize,
        logits: &[f32],
        n_vocab: usize,
    ) {
        if self.layers.len() < n_layer {
            self.layers.resize(n_layer, LayerAcc::default());
        }
        let find =
            |tag: &str, l: usize| taps.iter().find(|t| t.tag() == tag && t.layer() == Some(l));
        for (l, acc) in self.layers.iter_mut().enumerate().take(n_layer) {
            if let Some(x) = find("l_out", l) {
                for p in 0..x.n_positions() {
                    let (ratio, i) = outlier(x.row(p));
                    acc.ratios.push(ratio);
                    acc.argmax.push(i);
                }
            }
            if let (Some(q), Some(k)) = (find("Qcur", l), find("Kcur", l)) {
                for (h, rel) in attention_entropies(q, k, heads) {
                    acc.entropies.push(h);
                    acc.rel_entropies.push(rel);
                }
            }
        }
        for row in logits.chunks_exact(n_vocab) {
            let (margin, p) = margin(row);
            self.margins.push(margin);
            self.top1_probs.push(p);
        }
    }

    /// The figures so far.
    pub fn finish(&self) -> (Vec<LayerStats>, MarginStats) {
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(layer, a)| {
                let (outlier_feature, count) = mode(&a.argmax);
                LayerStats {
                    layer,
                    outlier_max: a.ratios.iter().copied().fold(0.0, f64::max),
                    outlier_mean: mean(&a.ratios),
                    outlier_feature,
                    outlier_feature_share: count as f64 / a.argmax.len().max(1) as f64,
                    attn_entropy: mean(&a.entropies),
                    attn_entropy_rel: mean(&a.rel_entropies),
                }
            })
            .collect();
        let mut sorted = self.margins.clone();
        sorted.sort_by(f64::total_cmp);
        let margins = MarginStats {
            positions: sorted.len(),
            margin_median: sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
            margin_min: sorted.first().copied().unwrap_or(f64::NAN),
            top1_prob_mean: mean(&self.top1_probs),
        };
        (layers, margins)
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The most frequent value and its count (the smallest value among ties).
fn mode(v: &[usize]) -> (usize, usize) {
    let mut sorted = v.to_vec();
    sorted.sort_unstable();
    let mut best = (0, 0);
    for run in sorted.chunk_by(|a, b| a == b) {
        if run.len() > best.1 {
            best = (run[0], run.len());
        }
    }
    best
}

/// `max|x| / rms(x)` and the index of the largest feature.
pub fn outlier(x: &[f32]) -> (f64, usize) {
    let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len().max(1) as f64;
    let (i, m) = x.iter().enumerate().fold((0, 0f64), |(bi, bm), (i, &v)| {
        if (v as f64).abs() > bm {
            (i, (v as f64).abs())
        } else {
            (bi, bm)
        }
    });
    if ms > 0.0 {
        (m / ms.sqrt(), i)
    } else {
        (0.0, i)
    }
}

/// Top-1 minus top-2 logit and the top-1 softmax probability.
pub fn margin(logits: &[f32]) -> (f64, f64) {
    let (mut a, mut b) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &v in logits {
        let v = v as f64;
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    let z: f64 = logits.iter().map(|&v| (v as f64 - a).exp()).sum();
    (a - b, 1.0 / z)
}

/// Causal attention entropies of every head at every position with two or more keys:
/// `(entropy in nats, entropy / ln(keys))`. `q` holds `n_head` heads per position, `k`
/// `n_head_kv` (grouped-query: head `h` reads kv head `h / (n_head / n_head_kv)`).
pub fn attention_entropies(q: &Tap, k: &Tap, heads: Heads) -> Vec<(f64, f64)> {
    let Heads {
        n_head,
        n_head_kv,
        head_dim: hd,
    } = heads;
    let n = q.n_positions().min(k.n_positions());
    let group = (n_head / n_head_kv.max(1)).max(1);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = Vec::new();
    let mut scores = Vec::with_capacity(n);
    for t in 1..n {
        let qt = q.row(t);
        for h in 0..n_head {
            let qh = &qt[h * hd..(h + 1) * hd];
            let kv = h / group;
            scores.clear();
            scores.extend((0..=t).map(|s| {
                let ks = &k.row(s)[kv * hd..(kv + 1) * hd];
                qh.iter()
                    .zip(ks)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale
            }));
            let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            let entropy: f64 = scores
                .iter()
                .map(|s| {
                    let p = (s - m).exp() / z;
                    if p > 0.0 {
                        -p * p.ln()
                    } else {
                        0.0
                    }
                })
                .sum();
            out.push((entropy, entropy / ((t + 1) as f64).ln()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_margins_and_entropies() {
        let (r, i) = outlier(&[1.0, -1.0, 1.0, -7.0]);
        assert_eq!(i, 3);
        assert!((r - 7.0 / (13.0f64).sqrt()).abs() < 1e-12);
        let (m, p) = margin(&[0.0, 3.0, 1.0]);
        assert_eq!(m, 2.0);
        assert!((p - 1.0 / (1.0 + (-3f64).exp() + (-2f64).exp())).abs() < 1e-12);

        // One head, head_dim 2: zero queries attend uniformly (relative entropy 1); a query
        // aligned with one huge key attends to it alone (entropy near 0).
        let heads = Heads {
            n_head: 2,
            n_head_kv: 1,
            head_dim: 2,
        };
        let q = Tap::new("Qcur-0".into(), vec![2, 2, 3], vec![0.0; 12]);
        let k = Tap::new(
            "Kcur-0".into(),
            vec![2, 1, 3],
            vec![1.0, 0.0, 2.0, 0.0, 3.0, 0.0],
        );
        let e = attention_entropies(&q, &k, heads);
        assert_eq!(e.len(), 4); // positions 1 and 2, two heads each
        assert!(e
            .iter()
            .all(|&(h, rel)| (rel - 1.0).abs() < 1e-12 && h > 0.0));
        let q = Tap::new(
            "Qcur-0".into(),
            vec![2, 2, 3],
            vec![
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 100.0, 0.0, 100.0, 0.0,
            ],
        );
        let e = attention_entropies(&q, &k, heads);
        assert!(e[2].1 < 1e-6 && e[3].1 < 1e-6, "{e:?}");
    }
}
