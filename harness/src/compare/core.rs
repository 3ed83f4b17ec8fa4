//! [`compare_core`]: two sides' outputs as plain data in, a [`Receipt`] out. Whoever runs the
//! engine and the oracle (the `compare` command, tests, selftest) only gathers data; the
//! verdicts come from [`super::judge`], the same judge `harness gate` uses.

use rayon::prelude::*;
use std::collections::BTreeMap;

use xval_engine::taps::{split_name, Tap};

use super::align::{align, TapPair};
use super::judge::judge;
use super::metrics::{KeyMetrics, LogitMetrics, TapMetrics};
use super::receipt::{
    AlignmentRecord, DecodeParity, DecodeStep, EngineIdentity, InputRecord, Mode, PositionRecord,
    Provenance, Receipt, ReferenceRecord, ReplayError, Summary, TapRecord, TokenizerParity,
    SCHEMA_VERSION,
};
use super::thresholds::{AppliedThresholds, TapClass};
use super::verdict::{ChainedLimit, Pairing, Verdict};
use crate::error::{Error, Result};

/// One evaluation of one side: `tokens` at consecutive positions, their logits and taps.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct SideEval {
    pub tokens: Vec<u32>,
    pub n_vocab: usize,
    /// `tokens.len() * n_vocab`, position by position.
    pub logits: Vec<f32>,
    /// Taps in the engine's layout (last dimension = position).
    pub taps: Vec<Tap>,
}

impl SideEval {
    /// The logits of the `i`-th evaluated position.
    pub fn logits_row(&self, i: usize) -> &[f32] {
        &self.logits[i * self.n_vocab..(i + 1) * self.n_vocab]
    }

    fn check(&self, side: &str, what: &str) -> Result<()> {
        if self.logits.len() != self.tokens.len() * self.n_vocab {
            return Err(Error::Invalid(format!(
                "{side} {what}: {} logits for {} tokens of a {}-token vocabulary",
                self.logits.len(),
                self.tokens.len(),
                self.n_vocab
            )));
        }
        for t in &self.taps {
            if t.shape.iter().product::<usize>() != t.data.len() {
                return Err(Error::Invalid(format!(
                    "{side} {what}: tap {} has shape {:?} but {} values",
                    t.name,
                    t.shape,
                    t.data.len()
                )));
            }
        }
        Ok(())
    }
}

/// The engine's noise twin: the same engine with one-ulp jitter, on the same ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Twin {
    pub seed: u64,
    pub prefill: SideEval,
    pub decode: Vec<SideEval>,
}

/// Everything one side produced.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Side {
    /// The ids this side's own tokenizer made of the prompt.
    pub tokenized: Vec<u32>,
    /// The prompt evaluation (both sides on the same ids).
    pub prefill: SideEval,
    /// Greedy decode steps, one token each, in order.
    pub decode: Vec<SideEval>,
    /// Engine side only: each prompt tap recomputed by the engine's op from the *oracle's*
    /// inputs (`Engine::replay`, run by [`crate::sides`]); empty when not computed.
    pub replay: Vec<Tap>,
    /// Engine side only: the same for every decode step.
    pub step_replays: Vec<Vec<Tap>>,
    /// Engine side only: replays that failed.
    pub replay_errors: Vec<ReplayError>,
    /// Engine side only: the noise twin, when one ran.
    pub twin: Option<Twin>,
}

/// Who and what is compared, and how strictly.
#[derive(Clone, Debug)]
pub struct CompareSettings {
    pub mode: Mode,
    pub provenance: Provenance,
    pub engine: EngineIdentity,
    pub oracle: serde_json::Value,
    pub pairing: Pairing,
    pub thresholds: AppliedThresholds,
    pub input: InputRecord,
    /// k of the top-k overlap.
    pub top_k: usize,
    /// Decode steps asked for (the sides may hold fewer if generation stopped).
    pub steps_requested: usize,
    /// When the comparison ran (RFC 3339).
    pub created: String,
    /// Seconds per phase, as measured by the caller; `compare` is added here.
    pub timings: BTreeMap<String, f64>,
}

/// Key metrics of every aligned pair at every position of one evaluation.
struct Compared {
    records: Vec<TapRecord>,
    alignment: AlignmentRecord,
}

/// The key metrics, per position, of the tap of `taps` named like the pair's engine tap (a
/// replay or the twin) against `against` (the normaliser: the oracle for a replay, the engine
/// for the twin); `None` when the tap is missing or shaped otherwise.
fn series(taps: &[Tap], pair: &TapPair, against: &Tap) -> Option<Vec<KeyMetrics>> {
    let t = taps
        .iter()
        .find(|t| t.name == pair.engine.name && t.row_len() == against.row_len())?;
    let n = pair.n_positions().min(t.n_positions());
    Some(
        (0..n)
            .map(|p| KeyMetrics::from(&TapMetrics::compute(t.row(p), against.row(p))))
            .collect(),
    )
}

/// Chained metrics of every aligned pair; the replays against the oracle; the twin against the
/// engine (normalised by the engine).
fn compare_taps(engine: &[Tap], oracle: &[Tap], replay: &[Tap], twin: Option<&[Tap]>) -> Compared {
    let a = align(engine, oracle);
    // Each pair's metrics depend on that pair alone: computed in parallel, collected in order,
    // so the receipt is the same whatever the thread count.
    let records = a
        .pairs
        .par_iter()
        .map(|pair| {
            let n = pair.n_positions();
            let full: Vec<TapMetrics> = (0..n)
                .map(|p| TapMetrics::compute(pair.engine.row(p), pair.oracle.row(p)))
                .collect();
            // Worst: a non-finite mismatch first, then the largest NMSE (NaN counts as worst).
            let worst_position = (0..n)
                .max_by(|&i, &j| {
                    let key = |m: &TapMetrics| {
                        (
                            m.nonfinite_mismatch > 0,
                            if m.nmse.is_nan() {
                                f64::INFINITY
                            } else {
                                m.nmse
                            },
                        )
                    };
                    let (ki, kj) = (key(&full[i]), key(&full[j]));
                    ki.0.cmp(&kj.0)
                        .then(ki.1.total_cmp(&kj.1))
                        // Ties: the earliest position.
                        .then(j.cmp(&i))
                })
                .unwrap_or(0);
            let worst = full
                .get(worst_position)
                .cloned()
                .unwrap_or_else(|| TapMetrics::compute(&[], &[]));
            TapRecord {
                name: pair.engine.name.clone(),
                oracle_name: (pair.oracle.name != pair.engine.name)
                    .then(|| pair.oracle.name.clone()),
                layer: split_name(&pair.engine.name).1,
                class: TapClass::of_name(&pair.engine.name).unwrap_or(TapClass::Proj),
                engine_shape: pair.engine.shape.clone(),
                oracle_shape: pair.oracle.shape.clone(),
                worst_position,
                worst,
                positions: full.iter().map(KeyMetrics::from).collect(),
                replay: series(replay, pair, pair.oracle),
                reference: twin.and_then(|t| series(t, pair, pair.engine)),
                // Filled in by the judge.
                limit: ChainedLimit {
                    max_nmse: 0.0,
                    min_cosine: 1.0,
                    reference_nmse: None,
                    informative: true,
                },
            }
        })
        .collect();
    Compared {
        records,
        alignment: AlignmentRecord {
            engine_only: a.engine_only,
            oracle_only: a.oracle_only,
            aliases: a.aliases,
            shape_mismatches: a.shape_mismatches,
            notes: a.notes,
        },
    }
}

/// Position-0 metrics of every record, by name.
fn first_positions(
    records: &[TapRecord],
    pick: impl Fn(&TapRecord) -> Option<KeyMetrics>,
) -> BTreeMap<String, KeyMetrics> {
    records
        .iter()
        .filter_map(|r| Some((r.name.clone(), pick(r)?)))
        .collect()
}

/// Compare the two sides and write up the result.
pub fn compare_core(engine: &Side, oracle: &Side, settings: &CompareSettings) -> Result<Receipt> {
    let t0 = std::time::Instant::now();
    engine.prefill.check("engine", "prefill")?;
    oracle.prefill.check("oracle", "prefill")?;
    if engine.prefill.tokens != oracle.prefill.tokens {
        return Err(Error::Invalid(format!(
            "the sides evaluated different ids (engine {:?}, oracle {:?}): both must run the \
             same ids",
            engine.prefill.tokens, oracle.prefill.tokens
        )));
    }
    if engine.prefill.n_vocab != oracle.prefill.n_vocab {
        return Err(Error::Invalid(format!(
            "vocabulary sizes differ: engine {}, oracle {}",
            engine.prefill.n_vocab, oracle.prefill.n_vocab
        )));
    }
    let twin = engine.twin.as_ref();
    if let Some(t) = twin {
        t.prefill.check("noise twin", "prefill")?;
        if t.prefill.tokens != engine.prefill.tokens || t.prefill.n_vocab != engine.prefill.n_vocab
        {
            return Err(Error::Invalid(
                "the noise twin evaluated other ids than the engine".into(),
            ));
        }
    }
    let tokenizer = TokenizerParity::new(
        &engine.tokenized,
        &oracle.tokenized,
        if engine.prefill.tokens == oracle.tokenized {
            "oracle"
        } else if engine.prefill.tokens == engine.tokenized {
            "engine"
        } else {
            "given"
        },
    );

    let prefill = compare_taps(
        &engine.prefill.taps,
        &oracle.prefill.taps,
        &engine.replay,
        twin.map(|t| &t.prefill.taps[..]),
    );
    let logits_at = |p: usize| {
        LogitMetrics::compute(
            engine.prefill.logits_row(p),
            oracle.prefill.logits_row(p),
            settings.top_k,
        )
    };
    // Each position's logits are a vocabulary's worth of sorting and exponentials: in parallel,
    // collected in order.
    let positions: Vec<PositionRecord> = (0..engine.prefill.tokens.len())
        .into_par_iter()
        .map(|p| PositionRecord {
            position: p,
            token: engine.prefill.tokens[p],
            logits: logits_at(p),
            reference: twin.map(|t| {
                LogitMetrics::compute(
                    t.prefill.logits_row(p),
                    engine.prefill.logits_row(p),
                    settings.top_k,
                )
            }),
            verdict: Verdict::Match,
            explanation: String::new(),
            taps_crossed: 0,
        })
        .collect();

    let n_prompt = engine.prefill.tokens.len();
    for (i, (e, o)) in engine.decode.iter().zip(&oracle.decode).enumerate() {
        let what = format!("decode step {i}");
        e.check("engine", &what)?;
        o.check("oracle", &what)?;
        if e.tokens.len() != 1 || e.tokens != o.tokens || e.n_vocab != o.n_vocab {
            return Err(Error::Invalid(format!(
                "{what}: the sides must evaluate the same single token (engine {:?}, oracle {:?})",
                e.tokens, o.tokens
            )));
        }
    }
    // Every step's logits against the oracle's and the twin's, in parallel as the positions'.
    let step_logits: Vec<(LogitMetrics, Option<LogitMetrics>)> = engine
        .decode
        .par_iter()
        .zip(&oracle.decode)
        .enumerate()
        .map(|(i, (e, o))| {
            let tw = twin.and_then(|t| t.decode.get(i));
            (
                LogitMetrics::compute(e.logits_row(0), o.logits_row(0), settings.top_k),
                tw.map(|t| LogitMetrics::compute(t.logits_row(0), e.logits_row(0), settings.top_k)),
            )
        })
        .collect();
    let mut steps = Vec::new();
    for (i, ((e, o), (logits, reference))) in engine
        .decode
        .iter()
        .zip(&oracle.decode)
        .zip(step_logits)
        .enumerate()
    {
        let tw = twin.and_then(|t| t.decode.get(i));
        let no_replay = Vec::new();
        let c = compare_taps(
            &e.taps,
            &o.taps,
            engine.step_replays.get(i).unwrap_or(&no_replay),
            tw.map(|t| &t.taps[..]),
        );
        steps.push(DecodeStep {
            step: i,
            position: n_prompt + i,
            input_token: e.tokens[0],
            engine_token: logits.top1_engine,
            oracle_token: logits.top1_oracle,
            reference,
            taps: first_positions(&c.records, |r| r.positions.first().copied()),
            tap_replay: first_positions(&c.records, |r| r.replay.as_ref()?.first().copied()),
            tap_reference: first_positions(&c.records, |r| r.reference.as_ref()?.first().copied()),
            first_diverging_tap: None,
            logits,
            verdict: Verdict::Match,
            explanation: String::new(),
        });
    }
    let mut timings = settings.timings.clone();
    let mut receipt = Receipt {
        schema_version: SCHEMA_VERSION,
        created: settings.created.clone(),
        mode: settings.mode.clone(),
        provenance: settings.provenance.clone(),
        engine: settings.engine.clone(),
        oracle: settings.oracle.clone(),
        pairing: settings.pairing.clone(),
        thresholds: settings.thresholds.clone(),
        input: settings.input.clone(),
        tokenizer,
        alignment: prefill.alignment,
        reference: ReferenceRecord {
            kind: if twin.is_some() { "noise-twin" } else { "none" }.into(),
            seed: twin.map(|t| t.seed),
            description: if twin.is_some() {
                "the engine again with one-ulp jitter on about half the elements of every op's \
                 output (embedding rows included): another valid rounding; its drift from the \
                 engine, per tap, sets the chained limits"
            } else {
                "no noise twin ran: chained limits are the class floors"
            }
            .into(),
            // Filled in by the judge.
            logits: super::verdict::LogitLimit::derive(
                None,
                None,
                &settings.thresholds.logits,
                &settings.thresholds.chained,
            ),
            uninformative_taps: Vec::new(),
        },
        taps: prefill.records,
        positions,
        first_divergence: None,
        decode: DecodeParity {
            steps_requested: settings.steps_requested,
            first_divergent_step: None,
            steps,
        },
        replay_errors: engine.replay_errors.clone(),
        summary: Summary {
            verdict: Verdict::Match,
            positions: BTreeMap::new(),
            decode_steps: BTreeMap::new(),
            taps_compared: 0,
            passes: false,
            basis: String::new(),
            worst: None,
            diagnosis: None,
        },
        timings: BTreeMap::new(),
        kernel_sets: Vec::new(),
    };
    apply_judgement(&mut receipt);
    receipt.summary.diagnosis = super::diagnose::diagnose(&receipt, engine, oracle);
    timings.insert("compare".into(), t0.elapsed().as_secs_f64());
    receipt.timings = timings;
    Ok(receipt)
}

/// Judge the receipt by its own thresholds and write the verdicts, limits, first divergence
/// and summary into it.
pub fn apply_judgement(r: &mut Receipt) {
    let j = judge(r, &r.thresholds);
    for t in &mut r.taps {
        if let Some(l) = j.limits.get(&t.name) {
            t.limit = *l;
        }
    }
    r.reference.logits = j.logits;
    r.reference.uninformative_taps = j.uninformative.clone();
    for (p, judged) in r.positions.iter_mut().zip(&j.positions) {
        p.verdict = judged.verdict;
        p.explanation = judged.explanation.clone();
        p.taps_crossed = judged.taps_crossed;
    }
    for (s, judged) in r.decode.steps.iter_mut().zip(&j.steps) {
        s.verdict = judged.verdict;
        s.explanation = judged.explanation.clone();
        s.first_diverging_tap = judged.first_tap.clone();
    }
    r.decode.first_divergent_step = r
        .decode
        .steps
        .iter()
        .position(|s| s.verdict != Verdict::Match);
    r.first_divergence = j.first_divergence.clone();
    let count = |vs: &mut dyn Iterator<Item = Verdict>| {
        let mut m = BTreeMap::new();
        for v in vs {
            *m.entry(v).or_insert(0) += 1;
        }
        m
    };
    let all = r
        .positions
        .iter()
        .map(|p| p.verdict)
        .chain(r.decode.steps.iter().map(|s| s.verdict));
    r.summary = Summary {
        verdict: all.max().unwrap_or(Verdict::Match),
        positions: count(&mut r.positions.iter().map(|p| p.verdict)),
        decode_steps: count(&mut r.decode.steps.iter().map(|s| s.verdict)),
        taps_compared: r.taps.len(),
        passes: j.violations.is_empty(),
        basis: j.basis(),
        worst: j.worst.clone(),
        // Read from the tensors by the comparison; a re-judgement keeps it.
        diagnosis: r.summary.diagnosis.take(),
    };
}
