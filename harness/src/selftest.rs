//! The self-test: what the comparison catches. Each fault of the catalogue
//! ([`FaultKind::ALL`]) is injected into the engine through its plan, one at a time, and
//! compared with the oracle exactly as `harness compare --fault` would; the oracle runs once
//! per model and prompt, the unmodified engine once more to count false alarms.
//!
//! Per fault the self-test records whether the comparison fails (detected), its first
//! divergence, where the fault actually is (`expected_location`: the first tap where the
//! faulty engine departs from the *unmodified* engine by more than the comparison's own
//! limits, found by judging the two engines against each other with the same judge), the
//! ops the fault itself changes (`fault_sites`: taps where the faulty op, replayed on the
//! unmodified engine's inputs, differs at all), whether the
//! comparison names the expected tap and layer or another op the fault changes in that layer
//! (localized), and whether the diagnosis names the fault's signature. A fault that changes nothing on a model (bit-identical outputs: an int16
//! overflow that never happens there) is reported as inert and left out of the rates.

use std::collections::BTreeMap;

use serde::Serialize;
use xval_engine::model::{Fault, FaultKind, Plan};
use xval_engine::taps::{split_name, TapFilter};

use crate::compare::compare_core;
use crate::compare::receipt::{Diagnosis, InputRecord, Receipt};
use crate::session::Session;
use crate::sides::{replay_all, run_engine, run_oracle, EngineRun, OracleRun, RunPlan};

/// The prompt the self-test compares: prose, and digits after spaces (where the two
/// pre-tokenizers split differently).
pub const SELFTEST_PROMPT: &str = "The quick brown fox jumps over the lazy dog; x = 1 + 22.";

/// Decode steps after the prompt (the KV faults act only there).
pub const SELFTEST_STEPS: usize = 4;

/// The goals a self-test run is held to (exit 1 below them).
pub const GOAL_DETECTED: f64 = 1.0;
pub const GOAL_LOCALIZED: f64 = 0.95;
pub const GOAL_DIAGNOSED: f64 = 0.80;

/// The diagnosis signature each fault should get (see [`crate::compare::diagnose`]).
pub fn expected_signature(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::I2sBlockLayout
        | FaultKind::I2sSequential
        | FaultKind::I2sLsbFirst
        | FaultKind::I2sCodesPm2 => "weights",
        FaultKind::ScaleIgnored | FaultKind::ScaleTwice => "scale",
        FaultKind::ActGranularity => "quantization",
        FaultKind::AccI16 => "sparse",
        FaultKind::LayerNorm | FaultKind::RmsEps => "norm",
        FaultKind::SkipAttnSubNorm | FaultKind::SkipFfnSubNorm => "skipped",
        FaultKind::WrongActivation => "activation",
        FaultKind::RopeNorm | FaultKind::RopeBase => "position",
        FaultKind::GqaOffByOne => "heads",
        FaultKind::AttnScale => "attention",
        FaultKind::KvOneShort | FaultKind::KvStale => "decode-kv",
        FaultKind::EmbdOffByOne => "embedding",
        FaultKind::OutputTied => "output",
        FaultKind::ResidualF16 => "rounding",
        FaultKind::PreTokenizer | FaultKind::NoBos => "tokens",
    }
}

/// What a fault's bug is, for `--list` and the docs.
pub fn describe(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::I2sBlockLayout => "I2_S read with the other block layout (64 for 128 weights)",
        FaultKind::I2sSequential => "I2_S read sequentially instead of interleaved",
        FaultKind::I2sLsbFirst => "I2_S codes read LSB-first instead of MSB-first",
        FaultKind::I2sCodesPm2 => "I2_S codes mapped to -2, -1, +1 instead of -1, 0, +1",
        FaultKind::ScaleIgnored => "the per-tensor weight scale ignored",
        FaultKind::ScaleTwice => "the per-tensor weight scale applied twice",
        FaultKind::ActGranularity => {
            "activations quantized per 256-block where the profile says per row, or the reverse"
        }
        FaultKind::AccI16 => "I2_S integer dot products accumulated in 16 bits (wrapping)",
        FaultKind::LayerNorm => "LayerNorm (mean subtracted) instead of RMSNorm",
        FaultKind::RmsEps => "RMSNorm epsilon 1e-6 instead of the file's",
        FaultKind::SkipAttnSubNorm => "attn_sub_norm skipped",
        FaultKind::SkipFfnSubNorm => "ffn_sub_norm skipped",
        FaultKind::WrongActivation => "SiLU instead of ReLU^2, or the reverse",
        FaultKind::RopeNorm => "RoPE NORM instead of NEOX",
        FaultKind::RopeBase => "a wrong RoPE frequency base (500000 for 10000, or the reverse)",
        FaultKind::GqaOffByOne => "GQA head mapping off by one",
        FaultKind::AttnScale => "attention scale 1/head_dim instead of 1/sqrt(head_dim)",
        FaultKind::KvOneShort => "decode reads the KV cache one position short",
        FaultKind::KvStale => "decode reads a stale KV entry for the new token",
        FaultKind::EmbdOffByOne => "embedding row off by one",
        FaultKind::OutputTied => "untied output.weight ignored for the tied embedding",
        FaultKind::ResidualF16 => "residual stream rounded to f16",
        FaultKind::PreTokenizer => "the other pre-tokenizer (default for llama-bpe, or reverse)",
        FaultKind::NoBos => "BOS not added",
    }
}

/// A place in a comparison: a tap (or `tokens`) at a prompt position or decode step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Location {
    pub tap: String,
    pub layer: Option<usize>,
    pub position: Option<usize>,
    pub step: Option<usize>,
}

impl Location {
    fn of(r: &Receipt) -> Option<Location> {
        if r.tokenizer.matched {
            r.first_divergence.as_ref().map(|f| Location {
                tap: f.tap.clone(),
                layer: f.layer,
                position: Some(f.position),
                step: f.step,
            })
        } else {
            Some(Location {
                tap: "tokens".into(),
                layer: None,
                position: None,
                step: None,
            })
        }
    }

    /// Same tap and layer (what localization asks).
    fn same_op(&self, other: &Location) -> bool {
        split_name(&self.tap).0 == split_name(&other.tap).0 && self.layer == other.layer
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.tap)?;
        match (self.step, self.position) {
            (Some(s), _) => write!(f, " (decode step {s})"),
            (None, Some(p)) => write!(f, " (position {p})"),
            _ => Ok(()),
        }
    }
}

/// The taps where a faulty engine's op, replayed on the unmodified engine's inputs (the
/// `truth` comparison), differs from the unmodified op, prompt or decode steps, in graph order.
fn fault_sites(truth: &Receipt) -> Vec<String> {
    // The faulty op on the unmodified engine's own inputs: bit-identical wherever the fault
    // does not act (same code, same inputs), so any difference is the fault's.
    let over = |_: &str, m: &crate::compare::metrics::KeyMetrics| {
        m.nonfinite_mismatch > 0 || m.nmse > 0.0 || m.max_abs_diff > 0.0
    };
    let mut sites: Vec<String> = truth
        .taps
        .iter()
        .filter(|t| {
            t.replay
                .as_ref()
                .is_some_and(|v| v.iter().any(|m| over(&t.name, m)))
        })
        .map(|t| t.name.clone())
        .collect();
    for s in &truth.decode.steps {
        for (name, m) in &s.tap_replay {
            if over(name, m) && !sites.contains(name) {
                sites.push(name.clone());
            }
        }
    }
    sites
}

/// One fault's outcome on one model.
#[derive(Clone, Debug, Serialize)]
pub struct FaultResult {
    /// The fault spec (`layernorm@1`).
    pub name: String,
    pub model: String,
    /// The comparison fails (exit 1): a verdict past TIE-FLIP, or a violation such as TOKENS.
    pub detected: bool,
    pub verdict: String,
    pub first_divergence: Option<Location>,
    /// Where the fault first departs from the unmodified engine by more than the limits.
    pub expected_location: Option<Location>,
    /// The ops the fault changes by itself (`ffn_sub_norm-2`): the faulty op replayed on the
    /// unmodified engine's inputs differs there (elsewhere it is bit-identical). A fault that
    /// changes every norm of a layer has several; which one the comparison with the oracle
    /// sees first depends on where the oracle's own rounding adds to it.
    pub fault_sites: Vec<String>,
    /// The first divergence is the expected location, or another of the fault's own ops in
    /// the same layer.
    pub localized: bool,
    pub diagnosis: Option<Diagnosis>,
    pub expected_diagnosis: String,
    pub diagnosis_correct: bool,
    /// The fault changed nothing on this model (left out of the rates).
    pub inert: bool,
    /// The fault changes the engine's numbers, but by less than legitimate rounding: judged
    /// against the *unmodified* engine with the same limits it passes, so no comparison can
    /// tell it from noise (an epsilon of 1e-6 for 1e-5 where every norm's input has a mean
    /// square far above both). Listed, left out of the rates, unless the comparison with the
    /// oracle fails anyway.
    pub below_noise: bool,
    /// The largest metric-to-limit ratio of the faulty engine against the unmodified one: how
    /// far the fault stands out of the noise (above 1: past the limits).
    pub effect_ratio: Option<f64>,
}

/// One model's figures.
#[derive(Clone, Debug, Serialize)]
pub struct ModelSummary {
    pub model: String,
    pub oracle: String,
    pub profile: String,
    pub faults: usize,
    pub inert: usize,
    /// Faults below the noise on this model (see [`FaultResult::below_noise`]).
    pub below_noise: usize,
    /// Faults that do not apply, and why.
    pub not_applicable: Vec<(String, String)>,
    pub detected_rate: f64,
    pub localized_rate: f64,
    pub diagnosis_rate: f64,
    /// The unmodified engine's comparison fails.
    pub false_alarm: bool,
    pub clean_verdict: String,
    pub seconds: f64,
}

/// The whole run (`harness selftest --json`).
#[derive(Clone, Debug, Serialize)]
pub struct SelftestReport {
    pub faults: Vec<FaultResult>,
    pub detected_rate: f64,
    pub localized_rate: f64,
    pub diagnosis_rate: f64,
    /// Models whose unmodified comparison fails.
    pub false_alarms: usize,
    pub models: Vec<ModelSummary>,
    pub goals: Goals,
    pub passes: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Goals {
    pub detected_rate: f64,
    pub localized_rate: f64,
    pub diagnosis_rate: f64,
    pub false_alarms: usize,
}

/// Rates over the faults that acted above the noise (neither inert nor below noise); 1 when
/// none did.
fn rates(faults: &[FaultResult]) -> (f64, f64, f64) {
    let live: Vec<&FaultResult> = faults
        .iter()
        .filter(|f| !f.inert && !f.below_noise)
        .collect();
    if live.is_empty() {
        return (1.0, 1.0, 1.0);
    }
    let rate = |p: &dyn Fn(&FaultResult) -> bool| {
        live.iter().filter(|f| p(f)).count() as f64 / live.len() as f64
    };
    (
        rate(&|f| f.detected),
        rate(&|f| f.localized),
        rate(&|f| f.diagnosis_correct),
    )
}

impl SelftestReport {
    pub fn new(models: Vec<ModelSummary>, faults: Vec<FaultResult>) -> SelftestReport {
        let (detected_rate, localized_rate, diagnosis_rate) = rates(&faults);
        let false_alarms = models.iter().filter(|m| m.false_alarm).count();
        let passes = detected_rate >= GOAL_DETECTED
            && localized_rate >= GOAL_LOCALIZED
            && diagnosis_rate >= GOAL_DIAGNOSED
            && false_alarms == 0;
        SelftestReport {
            faults,
            detected_rate,
            localized_rate,
            diagnosis_rate,
            false_alarms,
            models,
            goals: Goals {
                detected_rate: GOAL_DETECTED,
                localized_rate: GOAL_LOCALIZED,
                diagnosis_rate: GOAL_DIAGNOSED,
                false_alarms: 0,
            },
            passes,
        }
    }
}

/// How to self-test one model.
pub struct ModelPlan<'a> {
    pub label: String,
    pub prompt: &'a str,
    pub steps: usize,
    /// Faults to try (each checked for applicability).
    pub kinds: &'a [FaultKind],
    /// The layer per-layer faults go to [default: the middle layer].
    pub layer: Option<usize>,
}

/// The oracle's and the unmodified engine's runs on one input, shared by every fault.
struct Baseline {
    oracle: OracleRun,
    clean: EngineRun,
    oracle_ids: Vec<u32>,
    engine_ids: Vec<u32>,
}

/// Self-test one model in `session` (its engine unmodified).
pub fn run_model(
    session: &mut Session,
    plan: &ModelPlan,
) -> anyhow::Result<(ModelSummary, Vec<FaultResult>)> {
    let t0 = std::time::Instant::now();
    let taps = TapFilter::all();
    let oracle_ids = session
        .oracle
        .oracle
        .get()
        .tokenize(plan.prompt, true, true)
        .map_err(crate::error::Error::Oracle)?;
    let engine_ids = session.tokenizer.encode_complete(plan.prompt, true, true)?;
    let run_plan = RunPlan {
        ids: &oracle_ids,
        steps: session.decode_steps(&oracle_ids, plan.steps),
        taps: &taps,
        progress: false,
    };
    let mut timings = BTreeMap::new();
    let oracle = run_oracle(session.oracle.oracle.get(), &run_plan, &mut timings)?;
    let clean = run_engine(&session.engine, &oracle, &taps, &mut timings)?;
    let base = Baseline {
        oracle,
        clean,
        oracle_ids,
        engine_ids,
    };
    let record = InputRecord {
        prompt: Some(plan.prompt.to_string()),
        prompt_index: 0,
        prompts_total: 1,
        prompts_sha256: String::new(),
        shard: None,
    };
    let judge = |engine_ids: &[u32],
                 run: &EngineRun,
                 against: &OracleRun,
                 against_ids: &[u32],
                 identity: &crate::compare::receipt::EngineIdentity|
     -> anyhow::Result<Receipt> {
        Ok(compare_core(
            &run.clone().into_side(engine_ids.to_vec()),
            &against.clone().into_side(against_ids.to_vec()),
            &session.settings(identity, record.clone(), plan.steps, BTreeMap::new()),
        )?)
    };
    let clean_receipt = judge(
        &base.engine_ids,
        &base.clean,
        &base.oracle,
        &base.oracle_ids,
        &session.engine_identity,
    )?;

    let model = session.engine.model();
    let layer = plan
        .layer
        .unwrap_or(model.hparams.n_layer / 2)
        .min(model.hparams.n_layer - 1);
    let profile = session.engine.numerics().profile;
    let mut results = Vec::new();
    let mut not_applicable = Vec::new();
    // The unmodified engine as the reference of where each fault is.
    let clean_as_oracle = OracleRun {
        prefill: base.clean.prefill.clone(),
        steps: base.clean.steps.clone(),
    };
    for &kind in plan.kinds {
        if let Some(why) = kind.not_applicable(model, profile) {
            not_applicable.push((kind.name().to_string(), why.to_string()));
            continue;
        }
        let fault = Fault::Bug {
            kind,
            layer: kind.layered().then_some(layer),
        };
        let (engine, tokenizer, identity) = session.planned(Plan::fault(fault.clone()))?;
        let ids = tokenizer.encode_complete(plan.prompt, true, true)?;
        let mut t = BTreeMap::new();
        let run = run_engine(&engine, &base.oracle, &taps, &mut t)?;
        let inert = ids == base.engine_ids && same_outputs(&run, &base.clean);
        let receipt = judge(&ids, &run, &base.oracle, &base.oracle_ids, &identity)?;
        // Where the fault is: the faulty engine judged against the unmodified one (replays on
        // the unmodified engine's inputs), with the same limits.
        let replays = replay_all(
            &engine,
            (&run.prefill, &clean_as_oracle.prefill),
            &run.steps,
            &clean_as_oracle.steps,
        );
        let against_clean = EngineRun { replays, ..run };
        let truth = judge(
            &ids,
            &against_clean,
            &clean_as_oracle,
            &base.engine_ids,
            &identity,
        )?;
        let first = Location::of(&receipt).filter(|_| !receipt.summary.passes);
        let expected = Location::of(&truth).filter(|_| !truth.summary.passes);
        let sites = fault_sites(&truth);
        let localized = first.as_ref().is_some_and(|a| {
            expected.as_ref().is_some_and(|b| a.same_op(b)) || sites.contains(&a.tap)
        });
        let detected = !receipt.summary.passes;
        let want = expected_signature(kind);
        let diagnosis = receipt.summary.diagnosis.clone();
        results.push(FaultResult {
            name: fault.to_string(),
            model: plan.label.clone(),
            detected,
            verdict: receipt.summary.verdict.to_string(),
            first_divergence: first,
            expected_location: expected,
            fault_sites: sites,
            localized,
            diagnosis_correct: diagnosis.as_ref().is_some_and(|d| d.signature == want),
            diagnosis,
            expected_diagnosis: want.to_string(),
            inert,
            below_noise: !inert && !detected && truth.summary.passes,
            effect_ratio: truth.summary.worst.as_ref().map(|w| w.ratio),
        });
    }
    let (detected_rate, localized_rate, diagnosis_rate) = rates(&results);
    let summary = ModelSummary {
        model: plan.label.clone(),
        oracle: session
            .oracle_identity
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_string(),
        profile: profile.to_string(),
        faults: results.len(),
        inert: results.iter().filter(|r| r.inert).count(),
        below_noise: results.iter().filter(|r| r.below_noise).count(),
        not_applicable,
        detected_rate,
        localized_rate,
        diagnosis_rate,
        false_alarm: !clean_receipt.summary.passes,
        clean_verdict: clean_receipt.summary.verdict.to_string(),
        seconds: t0.elapsed().as_secs_f64(),
    };
    Ok((summary, results))
}

/// Bit-identical logits and taps, prompt and decode steps.
fn same_outputs(a: &EngineRun, b: &EngineRun) -> bool {
    let same = |x: &crate::compare::SideEval, y: &crate::compare::SideEval| {
        // Tap equality includes the data.
        x.logits == y.logits && x.taps == y.taps
    };
    same(&a.prefill, &b.prefill)
        && a.steps.len() == b.steps.len()
        && a.steps.iter().zip(&b.steps).all(|(x, y)| same(x, y))
}
