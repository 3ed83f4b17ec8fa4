//! Verdicts per position and decode step, the limits they use, and the words that explain them.
//!
//! - **MATCH**: no NaN/Inf on one side only, same top-1, KL within its limit, and every tap at
//!   the position within its limits: the op-level replay's, and the chained limit derived from
//!   the noise twin where the chained comparison is informative.
//! - **DRIFT**: same top-1, but KL or some tap crosses its limit.
//! - **TIE-FLIP**: top-1 differs, but every tap and the KL are within their limits (or the
//!   logits carry no information at all: the twin decorrelates them). The limits come from the
//!   noise twin, so a position whose logits moved no more than rounding noise moves them has
//!   flipped a near tie: any top-1 change implies that the engine's choice sits at most
//!   `2 * max|diff|` below the oracle's top-1 in the oracle's own logits, and `max|diff|` is
//!   within the noise. A margin test alone (without noise-derived limits) would call almost
//!   every flip a tie however wrong the engine; here a wrong engine crosses a limit first.
//!   The explanation says how near the tie was, and whether the twin's own top-1 flips there.
//! - **WRONG**: a top-1 difference with a tap past its limit or the KL beyond its limit, or
//!   NaN/Inf on one side only.
//!
//! The same functions judge fresh comparisons and recorded receipts (`harness gate`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use xval_engine::numerics::{Numerics, Profile};

use super::metrics::{KeyMetrics, LogitMetrics};
use super::thresholds::{ChainedScheme, LogitThreshold, TapThreshold};

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
    /// `nonfinite_mismatch`, `nmse`, `cosine`, `replay_nmse`, `replay_nonfinite_mismatch` or
    /// `kl`.
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
        self.metric.ends_with("nonfinite_mismatch")
    }

    pub fn describe(&self) -> String {
        match self.metric.as_str() {
            "nonfinite_mismatch" | "replay_nonfinite_mismatch" => {
                format!("{} elements NaN/Inf on one side only", self.value)
            }
            "cosine" => format!("cosine {:.9} below {}", self.value, self.limit),
            m => format!("{m} {:.3e} above {:.1e}", self.value, self.limit),
        }
    }
}

/// How far a metric sits from its limit: `value / limit` (for a cosine, `(1 - value) /
/// (1 - limit)`); above 1 the limit is crossed. +Inf for a NaN/Inf mismatch or a zero limit
/// crossed; 0 for a zero value.
pub fn ratio(metric: &str, value: f64, limit: f64) -> f64 {
    let (v, l) = if metric == "cosine" {
        (1.0 - value, 1.0 - limit)
    } else {
        (value, limit)
    };
    if v.is_nan() {
        f64::INFINITY
    } else if v <= 0.0 {
        0.0
    } else if l <= 0.0 {
        f64::INFINITY
    } else {
        v / l
    }
}

/// `value <= limit`, false when `value` is NaN (a NaN metric crosses every limit).
fn within_max(value: f64, limit: f64) -> bool {
    matches!(
        value.partial_cmp(&limit),
        Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
    )
}

/// The chained limit of one tap, derived from the noise twin's drift there.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ChainedLimit {
    #[serde(with = "super::float_serde::float")]
    #[schemars(with = "super::float_serde::FloatRepr")]
    pub max_nmse: f64,
    /// `1 - max_nmse`: for nearly parallel vectors `1 - cosine` is about `NMSE / 2`, so this
    /// allows twice the NMSE's share.
    #[serde(with = "super::float_serde::float")]
    #[schemars(with = "super::float_serde::FloatRepr")]
    pub min_cosine: f64,
    /// The twin's largest NMSE at this tap over the prompt and the decode steps.
    #[serde(with = "super::float_serde::opt_float")]
    #[schemars(with = "Option<super::float_serde::FloatRepr>")]
    pub reference_nmse: Option<f64>,
    /// Whether the chained comparison at this tap carries information: false where rounding
    /// noise alone (the twin) drifts past the scheme's `informative_max_nmse`; then only the
    /// op-level replay is judged there.
    pub informative: bool,
}

impl ChainedLimit {
    /// `max(k * reference, floor)`; no reference (no twin ran): the floor, informative.
    pub fn derive(reference_nmse: Option<f64>, th: &TapThreshold, s: &ChainedScheme) -> Self {
        let r = reference_nmse.unwrap_or(0.0);
        let max_nmse = (s.k * r).max(th.chained_floor);
        ChainedLimit {
            max_nmse,
            min_cosine: 1.0 - max_nmse,
            reference_nmse,
            // A NaN drift is no information either (the comparison is false).
            informative: r <= s.informative_max_nmse,
        }
    }
}

/// The logits' limits, derived from the noise twin.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogitLimit {
    #[serde(with = "super::float_serde::float")]
    #[schemars(with = "super::float_serde::FloatRepr")]
    pub max_kl: f64,
    /// The twin's largest KL and logit NMSE over the prompt and the decode steps.
    #[serde(with = "super::float_serde::opt_float")]
    #[schemars(with = "Option<super::float_serde::FloatRepr>")]
    pub reference_kl: Option<f64>,
    #[serde(with = "super::float_serde::opt_float")]
    #[schemars(with = "Option<super::float_serde::FloatRepr>")]
    pub reference_nmse: Option<f64>,
    /// Whether the logits carry information (the twin's logit NMSE within
    /// `informative_max_nmse`): when false, KL and top-1 changes are not judged, only the ops.
    pub informative: bool,
    pub top1_must_agree: bool,
}

impl LogitLimit {
    pub fn derive(
        reference_kl: Option<f64>,
        reference_nmse: Option<f64>,
        th: &LogitThreshold,
        s: &ChainedScheme,
    ) -> Self {
        let nmse = reference_nmse.unwrap_or(0.0);
        LogitLimit {
            max_kl: (s.kl_k * reference_kl.unwrap_or(0.0)).max(th.kl_floor),
            reference_kl,
            reference_nmse,
            informative: nmse <= s.informative_max_nmse,
            top1_must_agree: th.top1_must_agree,
        }
    }
}

/// The first limit a tap crosses at one position: a NaN/Inf mismatch, then its op-level replay
/// (the engine's op on the oracle's own inputs: isolates the op from upstream differences),
/// then the chained limits where the chained comparison is informative.
pub fn check_at(
    chained: &KeyMetrics,
    replay: Option<&KeyMetrics>,
    op: &TapThreshold,
    limit: &ChainedLimit,
) -> Option<Crossing> {
    if chained.nonfinite_mismatch > 0 {
        return Some(Crossing::new(
            "nonfinite_mismatch",
            chained.nonfinite_mismatch as f64,
            0.0,
        ));
    }
    if let Some(r) = replay {
        if r.nonfinite_mismatch > 0 {
            return Some(Crossing::new(
                "replay_nonfinite_mismatch",
                r.nonfinite_mismatch as f64,
                0.0,
            ));
        }
        if !within_max(r.nmse, op.max_replay_nmse) {
            return Some(Crossing::new("replay_nmse", r.nmse, op.max_replay_nmse));
        }
    }
    if !limit.informative {
        return None;
    }
    if !within_max(chained.nmse, limit.max_nmse) {
        return Some(Crossing::new("nmse", chained.nmse, limit.max_nmse));
    }
    if !within_max(limit.min_cosine, chained.cosine) {
        return Some(Crossing::new("cosine", chained.cosine, limit.min_cosine));
    }
    None
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

/// The verdict at one position (or decode step) and why. `reference`: the noise twin's logits
/// against the engine's at the same position, when a twin ran.
pub fn position_verdict(
    logits: &LogitMetrics,
    reference: Option<&LogitMetrics>,
    crossings: &[TapCrossing<'_>],
    limit: &LogitLimit,
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
        let within = logits.oracle_gap_of_engine_top1 <= logits.max_abs_diff;
        let twin_flips = reference.is_some_and(|r| !r.top1_agree);
        let kl_beyond = limit.informative && !within_max(logits.kl, limit.max_kl);
        why.push(format!(
            "top-1 differs (oracle {}, engine {}, {}the oracle's runner-up; oracle's top-1 ranks \
             {} in the engine); the engine's top-1 sits {:.4} below the oracle's in the oracle's \
             logits, {} the max |logit diff| {:.4}",
            logits.top1_oracle,
            logits.top1_engine,
            if runner_up { "" } else { "not " },
            logits.oracle_top1_rank_in_engine,
            logits.oracle_gap_of_engine_top1,
            if within { "within" } else { "beyond" },
            logits.max_abs_diff
        ));
        if twin_flips {
            why.push(format!(
                "rounding noise alone moves the top-1 here (the noise twin's top-1 is {})",
                reference.map_or(0, |r| r.top1_engine)
            ));
        }
        if !limit.informative {
            why.push(format!(
                "the logits carry no information: rounding noise alone moves them by NMSE \
                 {:.2e}",
                limit.reference_nmse.unwrap_or(f64::NAN)
            ));
        }
        if kl_beyond {
            why.push(format!(
                "the logits drift beyond the noise (KL {:.3e} above {:.1e})",
                logits.kl, limit.max_kl
            ));
        }
        if !crossings.is_empty() || kl_beyond {
            Verdict::Wrong
        } else {
            Verdict::TieFlip
        }
    } else if (limit.informative && !within_max(logits.kl, limit.max_kl)) || !crossings.is_empty() {
        why.push(format!(
            "same top-1 ({}); KL {:.3e} {} {:.1e}",
            logits.top1_oracle,
            logits.kl,
            if !limit.informative {
                "not judged, limit"
            } else if logits.kl <= limit.max_kl {
                "within"
            } else {
                "above"
            },
            limit.max_kl
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

/// The first tap in graph order, and its first position, whose metric crosses its limit: over
/// the prompt first, then decode step by decode step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FirstDivergence {
    pub tap: String,
    pub layer: Option<usize>,
    /// The absolute position (for a decode step: the prompt's length plus the step).
    pub position: usize,
    /// The decode step, when it lies in one (`None`: in the prompt).
    pub step: Option<usize>,
    pub crossing: Crossing,
    pub metrics: KeyMetrics,
    /// The compared tap just before it in graph order, at the same position.
    pub before: Option<Neighbour>,
    /// The compared tap just after it in graph order, at the same position.
    pub after: Option<Neighbour>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::thresholds::{TapClass, ThresholdKey, Thresholds};
    use xval_engine::numerics::KvType;
    use xval_engine::quant::kernels::Backend;

    /// Tight limits, independent of the measured ci/thresholds.toml.
    const TIGHT: &str = r#"
version = 2
[chained]
k = 10
kl_k = 10
informative_max_nmse = 0.05
[[rule]]
class = "*"
max_replay_nmse = 1e-10
chained_floor = 1e-6
[[rule]]
class = "logits"
max_replay_nmse = 1e-10
chained_floor = 1e-6
kl_floor = 1e-6
top1_must_agree = false
"#;

    fn applied() -> crate::compare::thresholds::AppliedThresholds {
        Thresholds::parse(TIGHT, "tight")
            .unwrap()
            .resolve(&ThresholdKey {
                format: "tq2_0".into(),
                profile: Profile::Ggml,
                kv: KvType::F32,
                backend: Backend::Cpu,
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

    fn limit() -> LogitLimit {
        let th = applied();
        LogitLimit::derive(None, None, &th.logits, &th.chained)
    }

    fn matched() -> Pairing {
        Pairing::new(
            Numerics::new(Profile::Ggml),
            "builtin",
            Numerics::new(Profile::Ggml),
        )
    }

    #[test]
    fn verdicts_by_definition() {
        let th = applied();
        let (p, lim) = (matched(), limit());
        let o = [1.0f32, 3.0, 2.9, 0.0];
        // Identical: MATCH.
        let (v, _) = position_verdict(&logits(&o, &o), None, &[], &lim, &p);
        assert_eq!(v, Verdict::Match);
        // Same top-1, KL above 1e-6: DRIFT.
        let (v, why) = position_verdict(&logits(&[1.0, 3.0, 2.8, 0.0], &o), None, &[], &lim, &p);
        assert_eq!(v, Verdict::Drift, "{why}");
        // Same logits but a tap crossing: DRIFT naming the tap.
        let proj = &th.classes[&TapClass::Proj];
        let tight = ChainedLimit::derive(None, proj, &th.chained);
        let c = TapCrossing {
            tap: "ffn_down-1",
            crossing: check_at(&km(1e-3), None, proj, &tight).unwrap(),
        };
        let (v, why) = position_verdict(&logits(&o, &o), None, std::slice::from_ref(&c), &lim, &p);
        assert_eq!(v, Verdict::Drift);
        assert!(why.contains("ffn_down-1") && why.contains("nmse"), "{why}");
        // Top-1 flips within a margin of 0.1 by a diff of 0.2, where the noise twin moves the
        // logits as much: TIE-FLIP.
        let flip = logits(&[1.0, 2.9, 3.0, 0.0], &o);
        let noise = LogitLimit::derive(Some(flip.kl), Some(1e-3), &th.logits, &th.chained);
        let (v, _) = position_verdict(&flip, None, &[], &noise, &p);
        assert_eq!(v, Verdict::TieFlip);
        // The same flip with a tap past its limit is no tie: WRONG.
        let (v, _) = position_verdict(&flip, None, std::slice::from_ref(&c), &noise, &p);
        assert_eq!(v, Verdict::Wrong);
        // Top-1 moves to a token far down the oracle's ranking, the logits far beyond the
        // noise: WRONG.
        let far = logits(&[9.0, 3.0, 2.9, 0.0], &o);
        let (v, why) = position_verdict(&far, None, &[], &lim, &p);
        assert_eq!(v, Verdict::Wrong, "{why}");
        assert!(why.contains("not the oracle's runner-up"), "{why}");
        assert!(why.contains("beyond the noise"), "{why}");
        // The same flip where the noise is that large (the twin moves the logits as much and
        // its top-1 flips too): TIE-FLIP, and the explanation says so.
        let twin = logits(&[1.0, 3.0, 9.0, 0.0], &[9.0, 3.0, 2.9, 0.0]);
        let noisy = LogitLimit::derive(Some(twin.kl), Some(0.01), &th.logits, &th.chained);
        let (v, why) = position_verdict(&far, Some(&twin), &[], &noisy, &p);
        assert_eq!(v, Verdict::TieFlip, "{why}");
        assert!(why.contains("noise twin"), "{why}");
        // A three-way near tie: the engine picks the oracle's third token, 0.02 below its top,
        // with logits moving by 0.05 where the twin moves them as much: TIE-FLIP.
        let o3 = [1.0f32, 3.0, 2.99, 2.98];
        let three = logits(&[1.0, 2.97, 2.97, 3.01], &o3);
        let lim3 = LogitLimit::derive(Some(three.kl), Some(1e-4), &th.logits, &th.chained);
        let (v, why) = position_verdict(&three, None, &[], &lim3, &p);
        assert_eq!(v, Verdict::TieFlip, "{why}");
        assert!(why.contains("within the max |logit diff|"), "{why}");
        // ... or when the logits carry no information at all.
        let chaos = LogitLimit::derive(Some(3.0), Some(0.9), &th.logits, &th.chained);
        assert!(!chaos.informative);
        let (v, why) = position_verdict(&far, None, &[], &chaos, &p);
        assert_eq!(v, Verdict::TieFlip, "{why}");
        assert!(why.contains("no information"), "{why}");
        // The runner-up wins, but every logit moved less than the margin (0.5 vs 0.3): WRONG.
        let o2 = [0.0f32, 3.0, 2.5, 0.0];
        let (v, why) = position_verdict(&logits(&[0.0, 2.7, 2.8, 0.0], &o2), None, &[], &lim, &p);
        assert_eq!(v, Verdict::Wrong, "{why}");
        assert!(why.contains("beyond"), "{why}");
        // NaN on one side: WRONG even when the top-1 agrees.
        let (v, _) = position_verdict(&logits(&[1.0, 3.0, 2.9, f32::NAN], &o), None, &[], &lim, &p);
        assert_eq!(v, Verdict::Wrong);
        let nan_tap = TapCrossing {
            tap: "l_out-0",
            crossing: Crossing::new("nonfinite_mismatch", 1.0, 0.0),
        };
        let (v, _) = position_verdict(&logits(&o, &o), None, &[nan_tap], &lim, &p);
        assert_eq!(v, Verdict::Wrong);
    }

    #[test]
    fn chained_limits_follow_the_twin_with_a_floor() {
        let th = applied();
        let proj = &th.classes[&TapClass::Proj];
        let s = &th.chained;
        // No twin drift: the floor.
        let l = ChainedLimit::derive(Some(0.0), proj, s);
        assert_eq!(l.max_nmse, 1e-6);
        assert!(l.informative);
        // k times the twin's drift when that is larger.
        let l = ChainedLimit::derive(Some(3e-4), proj, s);
        assert!((l.max_nmse - 3e-3).abs() < 1e-15);
        assert!(check_at(&km(2e-3), None, proj, &l).is_none());
        assert_eq!(check_at(&km(4e-3), None, proj, &l).unwrap().metric, "nmse");
        // The replay is judged first and on its own limit.
        let c = check_at(&km(0.0), Some(&km(1e-9)), proj, &l).unwrap();
        assert_eq!(c.metric, "replay_nmse");
        // Chaotic: the twin drifts by NMSE 0.5; the chained comparison is not judged, the
        // replay and a NaN still are.
        let chaos = ChainedLimit::derive(Some(0.5), proj, s);
        assert!(!chaos.informative);
        assert!(check_at(&km(0.9), None, proj, &chaos).is_none());
        assert!(check_at(&km(0.9), Some(&km(1e-9)), proj, &chaos).is_some());
        let mut nan = km(0.0);
        nan.nonfinite_mismatch = 1;
        assert!(check_at(&nan, None, proj, &chaos).is_some());
        // A NaN twin drift is no information either.
        assert!(!ChainedLimit::derive(Some(f64::NAN), proj, s).informative);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio("nmse", 2e-3, 1e-3), 2.0);
        assert!((ratio("cosine", 0.999, 0.998) - 0.5).abs() < 1e-9);
        assert_eq!(ratio("nmse", 0.0, 0.0), 0.0);
        assert_eq!(ratio("nmse", 1.0, 0.0), f64::INFINITY);
        assert_eq!(ratio("nmse", f64::NAN, 1.0), f64::INFINITY);
    }

    #[test]
    fn mismatched_profile_explains_drift() {
        let p = Pairing::new(
            Numerics::new(Profile::F32),
            "builtin",
            Numerics::new(Profile::Ggml),
        );
        assert!(!p.matched);
        let o = [1.0f32, 3.0, 2.9, 0.0];
        let (v, why) =
            position_verdict(&logits(&[1.0, 3.0, 2.8, 0.0], &o), None, &[], &limit(), &p);
        assert_eq!(v, Verdict::Drift);
        assert!(
            why.contains("numerics differ by design") && why.contains("Q8_K"),
            "{why}"
        );
        assert!(matched().matched);
        let kv = Pairing::new(
            Numerics::new(Profile::Ggml).with_kv(KvType::F16),
            "builtin",
            Numerics::new(Profile::Ggml),
        );
        assert!(!kv.matched && kv.note.contains("kv f16"), "{}", kv.note);
    }
}
