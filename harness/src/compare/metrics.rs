//! The one metrics module: how far the engine's numbers are from the oracle's, for a tap row
//! ([`TapMetrics`]) and for a position's logits ([`LogitMetrics`]). Compare, gate and selftest
//! all use these definitions; everything is accumulated in f64.
//!
//! Conventions (a = engine, b = oracle):
//! - Non-finite values are counted first, per side. Element `i` is a *non-finite mismatch* when
//!   the two sides disagree on its class (NaN, +Inf, -Inf, finite); any such element fails a
//!   comparison at once. The remaining metrics are computed over the elements finite on both
//!   sides.
//! - `cosine = a.b / (|a| |b|)`; 1 when both vectors are all zeros, 0 when only one is.
//! - `pearson` = cosine of the mean-centred vectors; `None` when either side is constant
//!   (the correlation is undefined there).
//! - `nmse = sum (a-b)^2 / sum b^2` (normalised by the oracle); 0 when both sums are 0, +Inf
//!   when only the oracle is all zeros.
//! - `rmse = sqrt(sum (a-b)^2 / n)`.
//! - `max_rel_diff = max |a_i - b_i| / max(|b_i|, floor)` with
//!   `floor = max(1e-3 * rms(b), 1e-30)`: elements of the oracle much smaller than the vector's
//!   typical size would otherwise turn float noise into huge relative errors; the absolute
//!   1e-30 guards an all-zero oracle.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::float_serde::{float, opt_float, FloatRepr};

/// Relative-difference floor as a fraction of the oracle row's RMS (see the module docs).
pub const REL_FLOOR_OF_RMS: f64 = 1e-3;

/// Differences between one engine row and the oracle's (see the module docs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TapMetrics {
    /// Elements compared (the row length).
    pub n: usize,
    pub nan_engine: usize,
    pub inf_engine: usize,
    pub nan_oracle: usize,
    pub inf_oracle: usize,
    /// Elements whose class (NaN, +Inf, -Inf, finite) differs between the sides.
    pub nonfinite_mismatch: usize,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub cosine: f64,
    #[serde(with = "opt_float")]
    #[schemars(with = "Option<FloatRepr>")]
    pub pearson: Option<f64>,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub max_abs_diff: f64,
    /// Index of the element with the largest |diff| (the first one on ties).
    pub max_abs_diff_index: usize,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub max_rel_diff: f64,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub nmse: f64,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub rmse: f64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Finite,
    Nan,
    PosInf,
    NegInf,
}

fn class(x: f32) -> Class {
    if x.is_nan() {
        Class::Nan
    } else if x == f32::INFINITY {
        Class::PosInf
    } else if x == f32::NEG_INFINITY {
        Class::NegInf
    } else {
        Class::Finite
    }
}

impl TapMetrics {
    /// Compare `engine` with `oracle` element by element. The caller pairs rows of equal
    /// length ([`super::align`] checks it); should they differ, only the common prefix is
    /// compared and `n` says how many.
    pub fn compute(engine: &[f32], oracle: &[f32]) -> TapMetrics {
        debug_assert_eq!(engine.len(), oracle.len(), "rows of different lengths");
        let n = engine.len().min(oracle.len());
        let (a, b) = (&engine[..n], &oracle[..n]);
        let m = TapMetrics {
            n,
            nan_engine: 0,
            inf_engine: 0,
            nan_oracle: 0,
            inf_oracle: 0,
            nonfinite_mismatch: 0,
            cosine: 0.0,
            pearson: None,
            max_abs_diff: 0.0,
            max_abs_diff_index: 0,
            max_rel_diff: 0.0,
            nmse: 0.0,
            rmse: 0.0,
        };
        // Rows with no NaN or Inf (nearly all) take loops without the class tests: the same
        // sums in the same order, so the same bits.
        let nonfinite = a
            .iter()
            .chain(b)
            .map(|v| u32::from(!v.is_finite()))
            .sum::<u32>();
        if nonfinite == 0 {
            m.scan::<true>(a, b)
        } else {
            m.scan::<false>(a, b)
        }
    }

    /// [`TapMetrics::compute`]'s two passes, `self` holding zero counts: NaN and Inf counted
    /// and left out of the sums, or (`ALL_FINITE`, the caller has checked) no class tests at
    /// all. The relative difference is divided out only where it can raise the running maximum
    /// (`|d| > max * den` with a margin far above the product's rounding: a skipped quotient is
    /// below the maximum, so the maximum is the same; a division per element was most of the
    /// judging's time).
    fn scan<const ALL_FINITE: bool>(mut self, a: &[f32], b: &[f32]) -> TapMetrics {
        let finite = |x: f32, y: f32| ALL_FINITE || (x.is_finite() && y.is_finite());
        // First pass: classes, sums for the means and the oracle's RMS.
        let (mut cnt, mut sa, mut sb, mut sbb) = (0usize, 0f64, 0f64, 0f64);
        for (&x, &y) in a.iter().zip(b) {
            if !ALL_FINITE {
                let (cx, cy) = (class(x), class(y));
                self.nan_engine += (cx == Class::Nan) as usize;
                self.inf_engine += matches!(cx, Class::PosInf | Class::NegInf) as usize;
                self.nan_oracle += (cy == Class::Nan) as usize;
                self.inf_oracle += matches!(cy, Class::PosInf | Class::NegInf) as usize;
                self.nonfinite_mismatch += (cx != cy) as usize;
            }
            if finite(x, y) {
                cnt += 1;
                sa += x as f64;
                sb += y as f64;
                sbb += (y as f64) * (y as f64);
            }
        }
        if cnt == 0 {
            // Nothing finite to compare: identical (empty or all matching non-finite) rows
            // agree fully; the mismatch count carries any failure.
            self.cosine = 1.0;
            return self;
        }
        let (mean_a, mean_b) = (sa / cnt as f64, sb / cnt as f64);
        let floor = (REL_FLOOR_OF_RMS * (sbb / cnt as f64).sqrt()).max(1e-30);
        let (mut dot, mut aa, mut bb, mut dd) = (0f64, 0f64, 0f64, 0f64);
        let (mut cab, mut caa, mut cbb) = (0f64, 0f64, 0f64);
        let (mut max_abs, mut max_abs_at, mut max_rel) = (0f64, 0usize, 0f64);
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            if !finite(x, y) {
                continue;
            }
            let (x, y) = (x as f64, y as f64);
            let d = x - y;
            dot += x * y;
            aa += x * x;
            bb += y * y;
            dd += d * d;
            let (xc, yc) = (x - mean_a, y - mean_b);
            cab += xc * yc;
            caa += xc * xc;
            cbb += yc * yc;
            let ad = d.abs();
            if ad > max_abs {
                max_abs = ad;
                max_abs_at = i;
            }
            let den = y.abs().max(floor);
            if ad > max_rel * den * (1.0 - 1e-9) {
                max_rel = max_rel.max(ad / den);
            }
        }
        self.max_abs_diff = max_abs;
        self.max_abs_diff_index = max_abs_at;
        self.max_rel_diff = max_rel;
        self.finish((dot, aa, bb, dd), (cab, caa, cbb), cnt)
    }

    /// The ratios of the second pass's sums.
    fn finish(
        mut self,
        (dot, aa, bb, dd): (f64, f64, f64, f64),
        (cab, caa, cbb): (f64, f64, f64),
        cnt: usize,
    ) -> TapMetrics {
        self.cosine = match (aa == 0.0, bb == 0.0) {
            (true, true) => 1.0,
            (true, false) | (false, true) => 0.0,
            (false, false) => dot / (aa.sqrt() * bb.sqrt()),
        };
        self.pearson = (caa > 0.0 && cbb > 0.0).then(|| cab / (caa.sqrt() * cbb.sqrt()));
        self.nmse = if bb > 0.0 {
            dd / bb
        } else if dd == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        self.rmse = (dd / cnt as f64).sqrt();
        self
    }

    /// Whether any element is NaN/Inf on one side only (an immediate failure).
    pub fn has_nonfinite_mismatch(&self) -> bool {
        self.nonfinite_mismatch > 0
    }
}

/// The per-position metrics a receipt keeps for every tap and position, and that verdicts and
/// the gate judge (the full [`TapMetrics`] are kept for each tap's worst position only).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeyMetrics {
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub nmse: f64,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub cosine: f64,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub max_abs_diff: f64,
    pub nonfinite_mismatch: usize,
}

impl From<&TapMetrics> for KeyMetrics {
    fn from(m: &TapMetrics) -> Self {
        KeyMetrics {
            nmse: m.nmse,
            cosine: m.cosine,
            max_abs_diff: m.max_abs_diff,
            nonfinite_mismatch: m.nonfinite_mismatch,
        }
    }
}

/// Differences between the engine's logits and the oracle's at one position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogitMetrics {
    pub n_vocab: usize,
    /// Logits whose class (NaN, +-Inf, finite) differs between the sides.
    pub nonfinite_mismatch: usize,
    /// KL(oracle || engine) of the softmax distributions, in nats, f64 over the whole
    /// vocabulary. +Inf when a side has a non-finite logit.
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub kl: f64,
    /// NMSE of the logit vectors (normalised by the oracle's), as for taps.
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub nmse: f64,
    pub top1_engine: u32,
    pub top1_oracle: u32,
    /// The oracle's second-best token (its top-1 with a one-token vocabulary).
    pub top2_oracle: u32,
    pub top1_agree: bool,
    pub k: usize,
    /// How many of the oracle's top-k tokens are among the engine's top-k.
    pub topk_overlap: usize,
    /// 1-based rank of the oracle's top-1 token among the engine's logits (1 = also the
    /// engine's top-1; ties ranked by lower token id first, as the greedy sampler does).
    pub oracle_top1_rank_in_engine: usize,
    /// The oracle's top-1 logit minus its top-2 logit (+Inf with a one-token vocabulary).
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub oracle_top2_margin: f64,
    /// The oracle's top-1 logit minus the oracle's logit of the engine's top-1 (0 when they
    /// agree): how far down the oracle's own ranking the engine's choice sits.
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub oracle_gap_of_engine_top1: f64,
    #[serde(with = "float")]
    #[schemars(with = "FloatRepr")]
    pub max_abs_diff: f64,
}

/// `x - logsumexp(x)` in f64, the maximum subtracted first so no exp overflows.
fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
    let lse = max + sum.ln();
    x.iter().map(|&v| v as f64 - lse).collect()
}

/// The ranking of token ids by logit: largest first, lower id first on ties, NaN last (a
/// total order).
fn rank_order(x: &[f32], i: u32, j: u32) -> std::cmp::Ordering {
    let (a, b) = (x[i as usize], x[j as usize]);
    b.partial_cmp(&a)
        .unwrap_or_else(|| a.is_nan().cmp(&b.is_nan()))
        .then(i.cmp(&j))
}

/// The first `m` token ids in [`rank_order`]: selected, then only they sorted (the whole
/// vocabulary sorted twice per position made judging a 2B-4T comparison 3.6 s; this, 1.7 s).
fn top_ranked(x: &[f32], m: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..x.len() as u32).collect();
    let m = m.min(idx.len());
    if m == 0 {
        return Vec::new();
    }
    if m < idx.len() {
        idx.select_nth_unstable_by(m - 1, |&i, &j| rank_order(x, i, j));
        idx.truncate(m);
    }
    idx.sort_unstable_by(|&i, &j| rank_order(x, i, j));
    idx
}

/// The 1-based position of token `t` in [`rank_order`]: one more than the ids ranked before it.
fn rank_of(x: &[f32], t: u32) -> usize {
    1 + (0..x.len() as u32)
        .filter(|&j| rank_order(x, j, t) == std::cmp::Ordering::Less)
        .count()
}

impl LogitMetrics {
    /// Compare one position's logits (`engine` and `oracle` over the same vocabulary).
    pub fn compute(engine: &[f32], oracle: &[f32], k: usize) -> LogitMetrics {
        debug_assert_eq!(
            engine.len(),
            oracle.len(),
            "logit rows of different lengths"
        );
        let n = engine.len().min(oracle.len());
        let (a, b) = (&engine[..n], &oracle[..n]);
        let nonfinite_mismatch = a
            .iter()
            .zip(b)
            .filter(|(&x, &y)| class(x) != class(y))
            .count();
        let all_finite = a.iter().chain(b).all(|v| v.is_finite());
        let kl = if n == 0 {
            0.0
        } else if all_finite {
            let (lq, lp) = (log_softmax(a), log_softmax(b));
            let kl: f64 = lp
                .iter()
                .zip(&lq)
                .map(|(&lp, &lq)| {
                    let p = lp.exp();
                    if p == 0.0 {
                        0.0
                    } else {
                        p * (lp - lq)
                    }
                })
                .sum();
            // KL >= 0 mathematically; rounding of nearly equal distributions can leave a
            // negative residue of order 1e-17.
            kl.max(0.0)
        } else {
            f64::INFINITY
        };
        let k = k.min(n);
        let (ra, rb) = (top_ranked(a, k.max(2)), top_ranked(b, k.max(2)));
        let topk_overlap = rb[..k].iter().filter(|t| ra[..k].contains(t)).count();
        let top1_oracle = rb.first().copied().unwrap_or(0);
        let top1_engine = ra.first().copied().unwrap_or(0);
        let oracle_top1_rank_in_engine = if n == 0 { 0 } else { rank_of(a, top1_oracle) };
        let oracle_top2_margin = if n >= 2 {
            b[rb[0] as usize] as f64 - b[rb[1] as usize] as f64
        } else {
            f64::INFINITY
        };
        let max_abs_diff = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (x as f64 - y as f64).abs())
            .fold(0.0, |m: f64, d| {
                if m.is_nan() || d.is_nan() {
                    f64::NAN
                } else {
                    m.max(d)
                }
            });
        let oracle_gap_of_engine_top1 = match (rb.first(), ra.first()) {
            (Some(&o), Some(&e)) => b[o as usize] as f64 - b[e as usize] as f64,
            _ => 0.0,
        };
        LogitMetrics {
            oracle_gap_of_engine_top1,
            n_vocab: n,
            nonfinite_mismatch,
            kl,
            nmse: TapMetrics::compute(a, b).nmse,
            top1_engine,
            top1_oracle,
            top2_oracle: rb.get(1).copied().unwrap_or(top1_oracle),
            top1_agree: top1_engine == top1_oracle,
            k,
            topk_overlap,
            oracle_top1_rank_in_engine,
            oracle_top2_margin,
            max_abs_diff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selection and the rank count equal a full sort in [`rank_order`], on vectors with
    /// many ties, NaNs and infinities, for every prefix length.
    #[test]
    fn top_ranked_and_rank_of_equal_a_full_sort() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in [1usize, 2, 3, 7, 64, 1000] {
            let x: Vec<f32> = (0..len)
                .map(|_| match next() % 10 {
                    0 => f32::NAN,
                    1 => f32::INFINITY,
                    2 => f32::NEG_INFINITY,
                    r => (r % 4) as f32 - 1.5,
                })
                .collect();
            let mut full: Vec<u32> = (0..len as u32).collect();
            full.sort_by(|&i, &j| rank_order(&x, i, j));
            for m in 0..=len + 1 {
                assert_eq!(top_ranked(&x, m), full[..m.min(len)], "len {len} m {m}");
            }
            for (p, &t) in full.iter().enumerate() {
                assert_eq!(rank_of(&x, t), p + 1, "len {len} token {t}");
            }
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn hand_computed_tap_metrics() {
        // a = [1, 2, 3], b = [1, 2, 4]: diff [0, 0, -1].
        let m = TapMetrics::compute(&[1.0, 2.0, 3.0], &[1.0, 2.0, 4.0]);
        assert_eq!(m.n, 3);
        // a.b = 17, |a| = sqrt 14, |b| = sqrt 21.
        assert!(close(m.cosine, 17.0 / (14f64.sqrt() * 21f64.sqrt())));
        // centred: a [-1, 0, 1], b [-4/3, -1/3, 5/3]: cov 3, var_a 2, var_b 42/9.
        assert!(close(
            m.pearson.unwrap(),
            3.0 / (2f64.sqrt() * (42f64 / 9.0).sqrt())
        ));
        assert_eq!(m.max_abs_diff, 1.0);
        assert_eq!(m.max_abs_diff_index, 2);
        assert!(close(m.max_rel_diff, 0.25));
        assert!(close(m.nmse, 1.0 / 21.0));
        assert!(close(m.rmse, (1f64 / 3.0).sqrt()));
        assert_eq!(m.nonfinite_mismatch, 0);
    }

    #[test]
    fn identical_rows_are_perfect() {
        let v = [0.5f32, -1.25, 3.0, 0.0];
        let m = TapMetrics::compute(&v, &v);
        assert!(close(m.cosine, 1.0));
        assert!(close(m.pearson.unwrap(), 1.0));
        assert_eq!(
            (m.nmse, m.rmse, m.max_abs_diff, m.max_rel_diff),
            (0.0, 0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn nan_on_one_side_counts_and_is_skipped() {
        let m = TapMetrics::compute(&[1.0, f32::NAN, 2.0], &[1.0, 5.0, 2.0]);
        assert_eq!(
            (m.nan_engine, m.nan_oracle, m.nonfinite_mismatch),
            (1, 0, 1)
        );
        assert!(m.has_nonfinite_mismatch());
        // The finite elements agree exactly.
        assert_eq!(m.nmse, 0.0);
        // NaN on both sides, and +Inf on both sides, are no mismatch; -Inf vs +Inf is one.
        let m = TapMetrics::compute(
            &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0],
            &[f32::NAN, f32::INFINITY, f32::INFINITY, 1.0],
        );
        assert_eq!((m.nan_engine, m.nan_oracle), (1, 1));
        assert_eq!((m.inf_engine, m.inf_oracle), (2, 2));
        assert_eq!(m.nonfinite_mismatch, 1);
    }

    #[test]
    fn constant_and_zero_vectors() {
        // Constant vectors: pearson undefined, cosine 1 when proportional.
        let m = TapMetrics::compute(&[2.0; 4], &[1.0; 4]);
        assert_eq!(m.pearson, None);
        assert!(close(m.cosine, 1.0));
        assert!(close(m.nmse, 1.0));
        assert!(close(m.max_rel_diff, 1.0));
        // Both zero: perfect.
        let m = TapMetrics::compute(&[0.0; 3], &[0.0; 3]);
        assert_eq!((m.cosine, m.nmse, m.max_rel_diff), (1.0, 0.0, 0.0));
        // Oracle zero, engine not: cosine 0, NMSE infinite, relative diff against the floor.
        let m = TapMetrics::compute(&[1.0, 0.0], &[0.0, 0.0]);
        assert_eq!(m.cosine, 0.0);
        assert_eq!(m.nmse, f64::INFINITY);
        assert!(close(m.max_rel_diff, 1e30));
        // Engine zero, oracle not: cosine 0, NMSE exactly 1.
        let m = TapMetrics::compute(&[0.0, 0.0], &[3.0, 4.0]);
        assert_eq!((m.cosine, m.nmse), (0.0, 1.0));
    }

    #[test]
    fn relative_diff_floor_ignores_tiny_oracle_elements() {
        // rms(b) = sqrt((1e-9^2 + 100^2)/2) ~ 70.7: floor ~ 0.0707, so the 1e-6 error on the
        // 1e-9 element counts as 1e-6 / 0.0707, not 1000.
        let m = TapMetrics::compute(&[1e-6 + 1e-9, 100.0], &[1e-9, 100.0]);
        let floor = 1e-3 * ((1e-18f64 + 1e4) / 2.0).sqrt();
        let d = (1e-6f32 + 1e-9f32) as f64 - 1e-9f32 as f64;
        assert!(close(m.max_rel_diff, d / floor));
    }

    #[test]
    fn hand_computed_logit_metrics() {
        // oracle logits [0, ln 3] -> p = [1/4, 3/4]; engine [0, 0] -> q = [1/2, 1/2].
        let ln3 = 3f64.ln() as f32;
        let m = LogitMetrics::compute(&[0.0, 0.0], &[0.0, ln3], 2);
        let p1 = 1.0 / (1.0 + (ln3 as f64).exp());
        let p2 = 1.0 - p1;
        let kl = p1 * (p1 / 0.5).ln() + p2 * (p2 / 0.5).ln();
        assert!((m.kl - kl).abs() < 1e-12, "{} vs {kl}", m.kl);
        assert_eq!((m.top1_oracle, m.top1_engine, m.top2_oracle), (1, 0, 0));
        assert!(!m.top1_agree);
        // Engine tie: token 0 ranks first, so the oracle's top-1 (token 1) ranks second.
        assert_eq!(m.oracle_top1_rank_in_engine, 2);
        assert_eq!(m.topk_overlap, 2);
        assert!(close(m.oracle_top2_margin, ln3 as f64));
        assert!(close(m.max_abs_diff, ln3 as f64));
    }

    #[test]
    fn logits_identical_and_shifted() {
        let o = [1.0f32, 5.0, 3.0, -2.0, 4.0];
        let m = LogitMetrics::compute(&o, &o, 3);
        assert_eq!(m.kl, 0.0);
        assert!(m.top1_agree);
        assert_eq!(
            (m.top1_oracle, m.topk_overlap, m.oracle_top1_rank_in_engine),
            (1, 3, 1)
        );
        assert_eq!(m.oracle_top2_margin, 1.0);
        // A constant shift changes no probability: KL 0 (up to rounding), max diff 10.
        let shifted: Vec<f32> = o.iter().map(|v| v + 10.0).collect();
        let m = LogitMetrics::compute(&shifted, &o, 3);
        assert!(m.kl < 1e-15);
        assert_eq!(m.max_abs_diff, 10.0);
        // Large logits do not overflow (stable log-softmax).
        let big = [1000.0f32, 999.0];
        let m = LogitMetrics::compute(&big, &[999.0, 1000.0], 1);
        assert!(m.kl.is_finite() && m.kl > 0.0);
        assert_eq!(m.topk_overlap, 0);
    }

    #[test]
    fn logits_with_nan() {
        let m = LogitMetrics::compute(&[f32::NAN, 1.0], &[0.0, 1.0], 2);
        assert_eq!(m.nonfinite_mismatch, 1);
        assert_eq!(m.kl, f64::INFINITY);
        assert!(m.max_abs_diff.is_nan());
    }

    #[test]
    fn non_finite_floats_round_trip_through_json() {
        let m = TapMetrics::compute(&[1.0, 0.0], &[0.0, 0.0]);
        let s = serde_json::to_string(&m).unwrap();
        assert!(s.contains("\"nmse\":\"inf\""), "{s}");
        let back: TapMetrics = serde_json::from_str(&s).unwrap();
        assert_eq!(back.nmse, f64::INFINITY);
        assert_eq!(
            (back.cosine, back.pearson, back.n),
            (m.cosine, m.pearson, m.n)
        );
        let l = LogitMetrics::compute(&[f32::NAN, 1.0], &[0.0, 1.0], 2);
        let s = serde_json::to_string(&l).unwrap();
        assert!(s.contains("\"max_abs_diff\":\"nan\""), "{s}");
        let back: LogitMetrics = serde_json::from_str(&s).unwrap();
        assert!(back.max_abs_diff.is_nan() && back.kl == f64::INFINITY);
        assert!(serde_json::from_str::<KeyMetrics>(
            r#"{"nmse":"bogus","cosine":1,"max_abs_diff":0,"nonfinite_mismatch":0}"#
        )
        .is_err());
    }

    /// The loops for rows without NaN or Inf give the class-testing loops' bits (every field),
    /// and the relative maximum, its divisions skipped where they cannot raise it, is the
    /// maximum of every quotient, whatever the values: equal quotients, zeros under the floor,
    /// differences from the subnormal to the huge.
    #[test]
    fn finite_rows_take_a_faster_path_to_the_same_bits() {
        use proptest::prelude::*;
        let value = prop_oneof![
            -1e3f32..1e3,
            Just(0.0f32),
            Just(-0.0f32),
            (-1e-40f32..1e-40),
            (-3e38f32..3e38),
            (1u32..4).prop_map(|k| k as f32 * 0.5),
        ];
        let rows = (1usize..200).prop_flat_map(move |n| {
            (
                proptest::collection::vec(value.clone(), n),
                proptest::collection::vec(value.clone(), n),
            )
        });
        proptest!(ProptestConfig::with_cases(2000), |((a, b) in rows)| {
            let zero = TapMetrics { n: a.len(), ..TapMetrics::compute(&[], &[]) };
            let fast = zero.clone().scan::<true>(&a, &b);
            let general = zero.scan::<false>(&a, &b);
            prop_assert_eq!(format!("{fast:?}"), format!("{general:?}"));
            prop_assert_eq!(fast.nmse.to_bits(), general.nmse.to_bits());
            prop_assert_eq!(fast.cosine.to_bits(), general.cosine.to_bits());
            // Every quotient divided out, as the metric is defined.
            let sbb = b.iter().fold(0f64, |s, &y| s + (y as f64) * (y as f64));
            let floor = (REL_FLOOR_OF_RMS * (sbb / b.len() as f64).sqrt()).max(1e-30);
            let every = a.iter().zip(&b).fold(0f64, |m, (&x, &y)| {
                m.max((x as f64 - y as f64).abs() / (y as f64).abs().max(floor))
            });
            prop_assert_eq!(fast.max_rel_diff.to_bits(), every.to_bits());
        });
    }
}
