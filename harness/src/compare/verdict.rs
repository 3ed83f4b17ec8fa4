//! Verdicts per position, the first divergence, and the words that explain them.
//!
//! - **MATCH**: no NaN/Inf on one side only, same top-1, KL within its limit, and every tap at
//!   the position within its class's NMSE and cosine limits.
//! - **DRIFT**: same top-1, but KL or some tap crosses its limit.
//! - **TIE-FLIP**: top-1 differs, the engine's top-1 is the oracle's runner-up, and the
//!   oracle's top-2 margin is within the largest |logit difference| at that position (the
//!   differences are big enough to swap a near tie). The runner-up condition is ours: any
//!   top-1 change implies `margin <= 2 * max|diff|`, so the margin test alone would call almost
//!   every flip a tie, however wrong the engine.
//! - **WRONG**: any other top-1 difference, or NaN/Inf on one side only.
//!
//! The same functions judge fresh comparisons and recorded receipts (`harness gate`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use xval_engine::numerics::{Numerics, Profile};

use super::metrics::{KeyMetrics, LogitMetrics};
use super::thresholds::{AppliedThresholds, LogitThreshold, TapThreshold};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Verdict {
    #[serde(rename = "MATCH")]
    Match,
    #[serde(rename = "DRIFT")]
    Drift,
    #[serde(rename = "TIE-FLIP")]
    TieFlip,
    #[serde(rename = "WRONG")]
    Wrong,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Match => "MATCH",
            Verdict::Drift => "DRIFT",
            Verdict::TieFlip => "TIE-FLIP",
            Verdict::Wrong => "WRONG",
        }
    }

    /// Whether the gate accepts it: MATCH always, TIE-FLIP when the thresholds let top-1
    /// differ, nothing else.
    pub fn passes(self, logits: &LogitThreshold) -> bool {
        match self {
            Verdict::Match => true,
            Verdict::TieFlip => !logits.top1_must_agree,
            Verdict::Drift | Verdict::Wrong => false,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A metric past its limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Crossing {
    /// `nonfinite_mismatch`, `nmse`, `cosine` or `kl`.
    pub metric: String,
    #[serde(with = "super::float_serde::float")]
    #[schemars(with = "super::float_serde::FloatRepr")]
    pub value: f64,
    #[serde(with = "super::float_serde::float")]
    #[schemars(with = "super::float_serde::FloatRepr")]
    pub limit: f64,
}

impl Crossing {
    fn new(metric: &str, value: f64, limit: f64) -> Crossing {
        Crossing {
            metric: metric.into(),
            value,
            limit,
        }
    }

    pub fn is_nonfinite(&self) -> bool {
        self.metric == "nonfinite_mismatch"
    }

    pub fn describe(&self) -> String {
        match self.metric.as_str() {
            "nonfinite_mismatch" => format!("{} elements NaN/Inf on one side only", self.value),
            "cosine" => format!("cosine {:.9} below {}", self.value, self.limit),
            m => format!("{m} {:.3e} above {:.1e}", self.value, self.limit),
        }
    }
}

/// `value <= limit`, false when `value` is NaN (a NaN metric crosses every limit).
fn within_max(value: f64, limit: f64) -> bool {
    matches!(
        value.partial_cmp(&limit),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    )
}

/// The first limit a tap's metrics at one position cross (NaN/Inf first, then NMSE, then
/// cosine); a NaN metric crosses.
pub fn check_tap(m: &KeyMetrics, th: &TapThreshold) -> Option<Crossing> {
    if m.nonfinite_mismatch > 0 {
        return Some(Crossing::new(
            "nonfinite_mismatch",
            m.nonfinite_mismatch as f64,
            0.0,
        ));
    }
    if !within_max(m.nmse, th.max_nmse) {
        return Some(Crossing::new("nmse", m.nmse, th.max_nmse));
    }
    if !within_max(th.min_cosine, m.cosine) {
        return Some(Crossing::new("cosine", m.cosine, th.min_cosine));
    }
    None
}

/// The first limit a tap crosses at one position: its op-level replay first (the engine's op on
/// the oracle's own inputs: isolates the op from upstream differences), then the chained
/// comparison's limits.
pub fn check_at(
    chained: &KeyMetrics,
    replay: Option<&KeyMetrics>,
    th: &TapThreshold,
) -> Option<Crossing> {
    if let (Some(r), Some(limit)) = (replay, th.max_replay_nmse) {
        if r.nonfinite_mismatch > 0 {
            return Some(Crossing::new(
                "replay_nonfinite_mismatch",
                r.nonfinite_mismatch as f64,
                0.0,
            ));
        }
        if !within_max(r.nmse, limit) {
            return Some(Crossing::new("replay_nmse", r.nmse, limit));
        }
    }
    check_tap(chained, th)
}

/// Which arithmetic the engine and the oracle do, and whether they are meant to agree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Pairing {
    /// The engine's numerics profile (`bitnet-cpp`, `ggml`, `f32`).
    #[schemars(with = "String")]
    pub engine_profile: Profile,
    /// The oracle's kind (`builtin`, `external`, `golden`, `engine`...).
    pub oracle_kind: String,
    /// The engine profile that mirrors the oracle's arithmetic (llama.cpp on TQ formats:
    /// `ggml`; bitnet.cpp on I2_S: `bitnet-cpp`), as the oracle's identity says.
    #[schemars(with = "String")]
    pub oracle_numerics: Profile,
    /// The engine's whole numerics setting (profile, KV type, F16 activations).
    #[schemars(with = "serde_json::Value")]
    pub engine: Numerics,
    /// The whole numerics setting that mirrors the oracle, as its identity says.
    #[schemars(with = "serde_json::Value")]
    pub oracle: Numerics,
    /// Whether the two are the same arithmetic (all three parts).
    pub matched: bool,
    /// What the pairing means for the numbers, in words.
    pub note: String,
}

impl Pairing {
    pub fn new(engine: Numerics, oracle_kind: &str, oracle: Numerics) -> Pairing {
        let (engine_profile, oracle_numerics) = (engine.profile, oracle.profile);
        let matched = engine == oracle;
        let note = if matched {
            format!(
                "engine profile {engine_profile} mirrors the {oracle_kind} oracle's numerics \
                 ({}): differences beyond the noise floor are bugs",
                oracle_numerics.describe()
            )
        } else if engine_profile == oracle_numerics {
            format!(
                "numerics differ by design: the engine runs {} while the {oracle_kind} oracle \
                 computes as {}; differences of the size f16 rounding causes are expected, not \
                 a bug (leave out --kv for a parity check)",
                engine.describe(),
                oracle.describe()
            )
        } else {
            format!(
                "numerics differ by design: the engine runs profile {engine_profile} ({}) while \
                 the {oracle_kind} oracle computes as {oracle_numerics} ({}); DRIFT of the size \
                 that activation quantization causes is expected, not a bug (run the engine \
                 with --profile {oracle_numerics} for a parity check)",
                engine_profile.describe(),
                oracle_numerics.describe()
            )
        };
        Pairing {
            engine_profile,
            oracle_kind: oracle_kind.into(),
            oracle_numerics,
            engine,
            oracle,
            matched,
            note,
        }
    }
}

/// A tap's limit crossing at one position, for verdicts.
#[derive(Clone, Debug, PartialEq)]
pub struct TapCrossing<'a> {
    pub tap: &'a str,
    pub crossing: Crossing,
}

/// The verdict at one position (or decode step) and why.
pub fn position_verdict(
    logits: &LogitMetrics,
    crossings: &[TapCrossing<'_>],
    th: &LogitThreshold,
    pairing: &Pairing,
) -> (Verdict, String) {
    let first_tap = crossings.first().map(|c| {
        format!(
            "first tap past its limit: {} ({})",
            c.tap,
            c.crossing.describe()
        )
    });
    if logits.nonfinite_mismatch > 0 {
        return (
            Verdict::Wrong,
            format!(
                "{} logits NaN/Inf on one side only",
                logits.nonfinite_mismatch
            ),
        );
    }
    if let Some(c) = crossings.iter().find(|c| c.crossing.is_nonfinite()) {
        return (
            Verdict::Wrong,
            format!("{}: {}", c.tap, c.crossing.describe()),
        );
    }
    let mut why = Vec::new();
    let verdict = if !logits.top1_agree {
        let runner_up = logits.top1_engine == logits.top2_oracle;
        let within = logits.oracle_top2_margin <= logits.max_abs_diff;
        let flip = runner_up && within;
        why.push(format!(
            "top-1 differs (oracle {}, engine {}, {}the oracle's runner-up; oracle's top-1 ranks \
             {} in the engine); the oracle's top-2 margin {:.4} is {} the max |logit diff| {:.4}",
            logits.top1_oracle,
            logits.top1_engine,
            if runner_up { "" } else { "not " },
            logits.oracle_top1_rank_in_engine,
            logits.oracle_top2_margin,
            if within { "within" } else { "beyond" },
            logits.max_abs_diff
        ));
        if flip {
            Verdict::TieFlip
        } else {
            Verdict::Wrong
        }
    } else if !within_max(logits.kl, th.max_kl) || !crossings.is_empty() {
        why.push(format!(
            "same top-1 ({}); KL {:.3e} {} {:.1e}",
            logits.top1_oracle,
            logits.kl,
            if logits.kl <= th.max_kl {
                "within"
            } else {
                "above"
            },
            th.max_kl
        ));
        Verdict::Drift
    } else {
        return (
            Verdict::Match,
            format!(
                "same top-1 ({}), every metric within its limit",
                logits.top1_oracle
            ),
        );
    };
    why.extend(first_tap);
    if !pairing.matched {
        why.push(pairing.note.clone());
    }
    (verdict, why.join("; "))
}

/// The metrics of a tap next to the first divergence, at the same position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Neighbour {
    pub tap: String,
    pub metrics: KeyMetrics,
    /// Whether it crosses its own limit there.
    pub crossed: bool,
}

/// The first tap in graph order, and its first position, whose metric crosses its limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FirstDivergence {
    pub tap: String,
    pub layer: Option<usize>,
    pub position: usize,
    pub crossing: Crossing,
    pub metrics: KeyMetrics,
    /// The compared tap just before it in graph order, at the same position.
    pub before: Option<Neighbour>,
    /// The compared tap just after it in graph order, at the same position.
    pub after: Option<Neighbour>,
}

/// One tap's per-position key metrics, in the order [`first_divergence`] reads them.
#[derive(Clone, Copy, Debug)]
pub struct TapSeries<'a> {
    pub name: &'a str,
    pub positions: &'a [KeyMetrics],
    /// Op-level replay metrics per position, when the op could be replayed.
    pub replay: Option<&'a [KeyMetrics]>,
}

/// Find the first divergence among `taps` (already in graph order).
pub fn first_divergence(taps: &[TapSeries<'_>], th: &AppliedThresholds) -> Option<FirstDivergence> {
    let (i, p, crossing) = taps.iter().enumerate().find_map(|(i, t)| {
        let limit = th.for_tap(t.name);
        t.positions.iter().enumerate().find_map(|(p, m)| {
            check_at(m, t.replay.and_then(|r| r.get(p)), limit).map(|c| (i, p, c))
        })
    })?;
    let neighbour = |j: usize| -> Option<Neighbour> {
        let t = taps.get(j)?;
        let m = *t.positions.get(p)?;
        Some(Neighbour {
            tap: t.name.to_string(),
            metrics: m,
            crossed: check_at(&m, t.replay.and_then(|r| r.get(p)), th.for_tap(t.name)).is_some(),
        })
    };
    let t = &taps[i];
    Some(FirstDivergence {
        tap: t.name.to_string(),
        layer: xval_engine::taps::split_name(t.name).1,
        position: p,
        crossing,
        metrics: t.positions[p],
        before: i.checked_sub(1).and_then(neighbour),
        after: neighbour(i + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::thresholds::{ThresholdKey, Thresholds};

    /// Tight limits, independent of the measured ci/thresholds.toml.
    const TIGHT: &str = r#"
version = 1
[[rule]]
class = "*"
max_nmse = 1e-6
min_cosine = 0.9999995
max_replay_nmse = 1e-10
[[rule]]
class = "logits"
max_nmse = 1e-6
min_cosine = 0.9999995
max_kl = 1e-6
top1_must_agree = true
"#;

    fn applied() -> AppliedThresholds {
        Thresholds::parse(TIGHT, "tight")
            .unwrap()
            .resolve(&ThresholdKey {
                format: "tq2_0".into(),
                profile: Profile::Ggml,
                backend: xval_engine::quant::kernels::Backend::Cpu,
            })
    }

    fn km(nmse: f64) -> KeyMetrics {
        KeyMetrics {
            nmse,
            cosine: 1.0 - nmse / 2.0,
            max_abs_diff: nmse.sqrt(),
            nonfinite_mismatch: 0,
        }
    }

    fn logits(engine: &[f32], oracle: &[f32]) -> LogitMetrics {
        LogitMetrics::compute(engine, oracle, 2)
    }

    #[test]
    fn verdicts_by_definition() {
        let th = applied();
        let p = Pairing::new(
            Numerics::new(Profile::Ggml),
            "builtin",
            Numerics::new(Profile::Ggml),
        );
        let o = [1.0f32, 3.0, 2.9, 0.0];
        // Identical: MATCH.
        let (v, _) = position_verdict(&logits(&o, &o), &[], &th.logits, &p);
        assert_eq!(v, Verdict::Match);
        // Same top-1, KL above 1e-6: DRIFT.
        let (v, why) = position_verdict(&logits(&[1.0, 3.0, 2.8, 0.0], &o), &[], &th.logits, &p);
        assert_eq!(v, Verdict::Drift, "{why}");
        // Same logits but a tap crossing: DRIFT naming the tap.
        let c = TapCrossing {
            tap: "ffn_down-1",
            crossing: check_tap(
                &km(1e-3),
                &th.classes[&crate::compare::thresholds::TapClass::Proj],
            )
            .unwrap(),
        };
        let (v, why) = position_verdict(&logits(&o, &o), std::slice::from_ref(&c), &th.logits, &p);
        assert_eq!(v, Verdict::Drift);
        assert!(why.contains("ffn_down-1") && why.contains("nmse"), "{why}");
        // Top-1 flips within a margin of 0.1 by a diff of 0.2: TIE-FLIP.
        let (v, _) = position_verdict(&logits(&[1.0, 2.9, 3.0, 0.0], &o), &[], &th.logits, &p);
        assert_eq!(v, Verdict::TieFlip);
        // Top-1 moves to a token that is not the oracle's runner-up: WRONG.
        let (v, why) = position_verdict(&logits(&[9.0, 3.0, 2.9, 0.0], &o), &[], &th.logits, &p);
        assert_eq!(v, Verdict::Wrong, "{why}");
        assert!(why.contains("not the oracle's runner-up"), "{why}");
        // The runner-up wins, but every logit moved less than the margin (0.5 vs 0.3): WRONG.
        let o2 = [0.0f32, 3.0, 2.5, 0.0];
        let (v, why) = position_verdict(&logits(&[0.0, 2.7, 2.8, 0.0], &o2), &[], &th.logits, &p);
        assert_eq!(v, Verdict::Wrong, "{why}");
        assert!(why.contains("beyond"), "{why}");
        // NaN on one side: WRONG even when the top-1 agrees.
        let (v, _) = position_verdict(&logits(&[1.0, 3.0, 2.9, f32::NAN], &o), &[], &th.logits, &p);
        assert_eq!(v, Verdict::Wrong);
        let nan_tap = TapCrossing {
            tap: "l_out-0",
            crossing: Crossing::new("nonfinite_mismatch", 1.0, 0.0),
        };
        let (v, _) = position_verdict(&logits(&o, &o), &[nan_tap], &th.logits, &p);
        assert_eq!(v, Verdict::Wrong);
    }

    #[test]
    fn mismatched_profile_explains_drift() {
        let th = applied();
        let p = Pairing::new(
            Numerics::new(Profile::F32),
            "builtin",
            Numerics::new(Profile::Ggml),
        );
        assert!(!p.matched);
        let o = [1.0f32, 3.0, 2.9, 0.0];
        let (v, why) = position_verdict(&logits(&[1.0, 3.0, 2.8, 0.0], &o), &[], &th.logits, &p);
        assert_eq!(v, Verdict::Drift);
        assert!(
            why.contains("numerics differ by design") && why.contains("Q8_K"),
            "{why}"
        );
        assert!(
            Pairing::new(
                Numerics::new(Profile::Ggml),
                "builtin",
                Numerics::new(Profile::Ggml)
            )
            .matched
        );
    }

    #[test]
    fn first_divergence_in_graph_order_with_neighbours() {
        let th = applied();
        let ok = vec![km(0.0); 3];
        let mut bad = ok.clone();
        bad[2] = km(1e-3);
        let mut later = ok.clone();
        later[0] = km(1e-2);
        let taps = [
            TapSeries {
                name: "ffn_sub_norm-1",
                positions: &ok,
                replay: None,
            },
            TapSeries {
                name: "ffn_down-1",
                positions: &bad,
                replay: None,
            },
            TapSeries {
                name: "l_out-1",
                positions: &later,
                replay: None,
            },
        ];
        let fd = first_divergence(&taps, &th).unwrap();
        // l_out-1 crosses at an earlier position, but ffn_down-1 comes first in graph order.
        assert_eq!(
            (fd.tap.as_str(), fd.layer, fd.position),
            ("ffn_down-1", Some(1), 2)
        );
        assert_eq!(fd.crossing.metric, "nmse");
        let before = fd.before.unwrap();
        assert_eq!(
            (before.tap.as_str(), before.crossed),
            ("ffn_sub_norm-1", false)
        );
        assert_eq!(fd.after.unwrap().tap, "l_out-1");
        assert!(first_divergence(&taps[..1], &th).is_none());
        // NaN metrics cross.
        let nan = vec![km(f64::NAN)];
        let fd = first_divergence(
            &[TapSeries {
                name: "result_norm",
                positions: &nan,
                replay: None,
            }],
            &th,
        );
        assert_eq!(fd.unwrap().layer, None);
    }

    #[test]
    fn gate_acceptance() {
        let mut th = applied().logits;
        assert!(Verdict::Match.passes(&th));
        assert!(!Verdict::TieFlip.passes(&th));
        th.top1_must_agree = false;
        assert!(Verdict::TieFlip.passes(&th));
        assert!(!Verdict::Drift.passes(&th) && !Verdict::Wrong.passes(&th));
    }
}
