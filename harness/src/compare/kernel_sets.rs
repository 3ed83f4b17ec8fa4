//! `compare --kernel all`: each SIMD kernel set beside the scalar reference. The scalar
//! engine's comparison with the oracle is the receipt itself; every other set this CPU runs is
//! compared with the same oracle run (same ids, taps, limits, noise twin and replays) and with
//! the scalar engine value by value, and recorded here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use xval_engine::quant::kernels::Kernel;

use super::core::SideEval;
use super::verdict::Verdict;

/// One SIMD set's outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KernelSetRecord {
    #[schemars(with = "String")]
    pub kernel: Kernel,
    /// Whether its own comparison with the oracle passes the receipt's limits (a failing set
    /// fails the receipt: violation `KERNEL`).
    pub passes: bool,
    /// Its comparison's verdict.
    pub verdict: Verdict,
    /// Its comparison's first divergence (`tap NAME at position P`), if any.
    pub first_divergence: Option<String>,
    /// How many violations its comparison has.
    pub violations: usize,
    /// Against the scalar engine on the same ids.
    pub vs_scalar: KernelParity,
}

/// A kernel set's values against the scalar reference's: every tap element and logit of the
/// prompt and of every decode step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KernelParity {
    /// Values compared.
    pub values: u64,
    /// How many are bit-identical to scalar's.
    pub identical: u64,
    /// The largest |difference| over a tensor divided by that tensor's largest |scalar value|
    /// (0 when every value is identical); values where either side is not finite count in
    /// `non_finite_differences` instead.
    pub max_rel_diff: f64,
    /// Values that differ where either side is NaN or infinite.
    pub non_finite_differences: u64,
    /// The first tensor with a difference, in graph order, prompt first (`logits` for the
    /// logits; `step N:` before a decode step's).
    pub first_difference: Option<String>,
}

impl KernelParity {
    /// Compare `other`'s prompt and decode steps with `scalar`'s, tensor by tensor.
    pub fn of(scalar: (&SideEval, &[SideEval]), other: (&SideEval, &[SideEval])) -> KernelParity {
        let mut p = KernelParity::default();
        let evals = std::iter::once((None, scalar.0, other.0)).chain(
            scalar
                .1
                .iter()
                .zip(other.1)
                .enumerate()
                .map(|(i, (s, o))| (Some(i), s, o)),
        );
        for (step, s, o) in evals {
            let name = |n: &str| match step {
                Some(i) => format!("step {i}: {n}"),
                None => n.to_string(),
            };
            for (st, ot) in s.taps.iter().zip(&o.taps) {
                p.add(&name(&st.name), &st.data, &ot.data);
            }
            p.add(&name("logits"), &s.logits, &o.logits);
        }
        p
    }

    fn add(&mut self, name: &str, scalar: &[f32], other: &[f32]) {
        let scale = scalar
            .iter()
            .filter(|v| v.is_finite())
            .fold(0f64, |m, &v| m.max((v as f64).abs()));
        let mut differs = scalar.len() != other.len();
        for (&s, &o) in scalar.iter().zip(other) {
            self.values += 1;
            if s.to_bits() == o.to_bits() {
                self.identical += 1;
                continue;
            }
            differs = true;
            if !s.is_finite() || !o.is_finite() {
                self.non_finite_differences += 1;
                continue;
            }
            let d = (s as f64 - o as f64).abs();
            let rel = if scale > 0.0 { d / scale } else { d };
            self.max_rel_diff = self.max_rel_diff.max(rel);
        }
        if differs && self.first_difference.is_none() {
            self.first_difference = Some(name.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xval_engine::taps::Tap;

    fn eval(taps: &[(&str, Vec<f32>)], logits: Vec<f32>) -> SideEval {
        SideEval {
            tokens: vec![1],
            n_vocab: logits.len(),
            logits,
            taps: taps
                .iter()
                .map(|(n, d)| Tap::new(n.to_string(), vec![d.len()], d.clone()))
                .collect(),
        }
    }

    #[test]
    fn identical_sides_have_no_difference() {
        let a = eval(
            &[("attn_norm-0", vec![1.0, -2.0, f32::NAN])],
            vec![0.5, 0.25],
        );
        let p = KernelParity::of((&a, &[]), (&a, &[]));
        assert_eq!((p.values, p.identical, p.max_rel_diff), (5, 5, 0.0));
        assert_eq!(p.first_difference, None);
    }

    #[test]
    fn differences_are_measured_and_the_first_is_named() {
        let s = eval(&[("attn_norm-0", vec![1.0, -4.0])], vec![0.5, 0.25]);
        let o = eval(&[("attn_norm-0", vec![1.0, -4.0])], vec![0.5, 0.5]);
        let step_s = eval(&[("attn_norm-0", vec![2.0, f32::INFINITY])], vec![1.0, 1.0]);
        let step_o = eval(&[("attn_norm-0", vec![2.0, 3.0])], vec![1.0, 1.0]);
        let p = KernelParity::of((&s, &[step_s]), (&o, &[step_o]));
        assert_eq!(p.values, 8);
        assert_eq!(p.identical, 6);
        assert_eq!(p.non_finite_differences, 1);
        // 0.25 off where the largest scalar logit is 0.5.
        assert_eq!(p.max_rel_diff, 0.5);
        assert_eq!(p.first_difference.as_deref(), Some("logits"));
    }
}
