//! [`compare_core`]: two sides' outputs as plain data in, a [`Receipt`] out. Whoever runs the
//! engine and the oracle (the `compare` command, tests, selftest) only gathers data.

use std::collections::BTreeMap;

use xval_engine::taps::{split_name, Tap};

use super::align::align;
use super::metrics::{KeyMetrics, LogitMetrics, TapMetrics};
use super::receipt::{
    AlignmentRecord, DecodeParity, DecodeStep, EngineIdentity, Mode, PositionRecord, Provenance,
    Receipt, Summary, TapRecord, TokenizerParity, SCHEMA_VERSION,
};
use super::thresholds::{AppliedThresholds, TapClass};
use super::verdict::{
    check_at, first_divergence, position_verdict, Pairing, TapCrossing, TapSeries, Verdict,
};
use crate::error::{Error, Result};

/// One evaluation of one side: `tokens` at consecutive positions, their logits and taps.
#[derive(Clone, Debug, PartialEq)]
pub struct SideEval {
    pub tokens: Vec<u32>,
    pub n_vocab: usize,
    /// `tokens.len() * n_vocab`, position by position.
    pub logits: Vec<f32>,
    /// Taps in the engine's layout (last dimension = position).
    pub taps: Vec<Tap>,
}

impl SideEval {
    fn logits_row(&self, i: usize) -> &[f32] {
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

/// Everything one side produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// The ids this side's own tokenizer made of the prompt.
    pub tokenized: Vec<u32>,
    /// The prompt evaluation (both sides on the same ids).
    pub prefill: SideEval,
    /// Greedy decode steps, one token each, in order.
    pub decode: Vec<SideEval>,
    /// Engine side only: each prompt tap recomputed by the engine's op from the *oracle's*
    /// inputs (`Engine::replay`, run by [`crate::sides::replay_on_oracle_inputs`]); empty when
    /// not computed.
    pub replay: Vec<Tap>,
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

fn compare_taps(engine: &[Tap], oracle: &[Tap], replay: &[Tap]) -> Compared {
    let a = align(engine, oracle);
    let records = a
        .pairs
        .iter()
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
                replay: replay
                    .iter()
                    .find(|r| r.name == pair.engine.name && r.row_len() == pair.oracle.row_len())
                    .map(|r| {
                        (0..n.min(r.n_positions()))
                            .map(|p| {
                                KeyMetrics::from(&TapMetrics::compute(r.row(p), pair.oracle.row(p)))
                            })
                            .collect()
                    }),
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

/// The taps past their limit at position `p`, in graph order.
fn crossings_at<'a>(
    records: &'a [TapRecord],
    p: usize,
    th: &AppliedThresholds,
) -> Vec<TapCrossing<'a>> {
    records
        .iter()
        .filter_map(|r| {
            let m = r.positions.get(p)?;
            let replay = r.replay.as_ref().and_then(|v| v.get(p));
            check_at(m, replay, th.for_tap(&r.name)).map(|crossing| TapCrossing {
                tap: &r.name,
                crossing,
            })
        })
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
    let th = &settings.thresholds;
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

    let prefill = compare_taps(&engine.prefill.taps, &oracle.prefill.taps, &engine.replay);
    let positions: Vec<PositionRecord> = (0..engine.prefill.tokens.len())
        .map(|p| {
            let logits = LogitMetrics::compute(
                engine.prefill.logits_row(p),
                oracle.prefill.logits_row(p),
                settings.top_k,
            );
            let crossings = crossings_at(&prefill.records, p, th);
            let (verdict, explanation) =
                position_verdict(&logits, &crossings, &th.logits, &settings.pairing);
            PositionRecord {
                position: p,
                token: engine.prefill.tokens[p],
                logits,
                verdict,
                explanation,
                taps_crossed: crossings.len(),
            }
        })
        .collect();
    let series: Vec<TapSeries> = prefill
        .records
        .iter()
        .map(|r| TapSeries {
            name: &r.name,
            positions: &r.positions,
            replay: r.replay.as_deref(),
        })
        .collect();
    let first = first_divergence(&series, th);

    let n_prompt = engine.prefill.tokens.len();
    let mut steps = Vec::new();
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
        let logits = LogitMetrics::compute(e.logits_row(0), o.logits_row(0), settings.top_k);
        let c = compare_taps(&e.taps, &o.taps, &[]);
        let crossings = crossings_at(&c.records, 0, th);
        let (verdict, explanation) =
            position_verdict(&logits, &crossings, &th.logits, &settings.pairing);
        steps.push(DecodeStep {
            step: i,
            position: n_prompt + i,
            input_token: e.tokens[0],
            engine_token: logits.top1_engine,
            oracle_token: logits.top1_oracle,
            taps: c
                .records
                .iter()
                .filter_map(|r| Some((r.name.clone(), *r.positions.first()?)))
                .collect(),
            first_diverging_tap: crossings.first().map(|c| c.tap.to_string()),
            logits,
            verdict,
            explanation,
        });
    }
    let decode = DecodeParity {
        steps_requested: settings.steps_requested,
        first_divergent_step: steps.iter().position(|s| s.verdict != Verdict::Match),
        steps,
    };
    let summary = summarize(&positions, &decode, prefill.records.len());
    let mut timings = settings.timings.clone();
    timings.insert("compare".into(), t0.elapsed().as_secs_f64());
    let mut receipt = Receipt {
        schema_version: SCHEMA_VERSION,
        created: settings.created.clone(),
        mode: settings.mode.clone(),
        provenance: settings.provenance.clone(),
        engine: settings.engine.clone(),
        oracle: settings.oracle.clone(),
        pairing: settings.pairing.clone(),
        thresholds: th.clone(),
        tokenizer,
        alignment: prefill.alignment,
        taps: prefill.records,
        positions,
        first_divergence: first,
        decode,
        summary,
        timings,
    };
    // One judge: the gate's, with the receipt's own thresholds.
    receipt.summary.passes = super::gate::violations(&receipt, th).is_empty();
    Ok(receipt)
}

fn summarize(positions: &[PositionRecord], decode: &DecodeParity, taps_compared: usize) -> Summary {
    let count = |vs: &mut dyn Iterator<Item = Verdict>| {
        let mut m = BTreeMap::new();
        for v in vs {
            *m.entry(v).or_insert(0) += 1;
        }
        m
    };
    let all = || {
        positions
            .iter()
            .map(|p| p.verdict)
            .chain(decode.steps.iter().map(|s| s.verdict))
    };
    Summary {
        verdict: all().max().unwrap_or(Verdict::Match),
        positions: count(&mut positions.iter().map(|p| p.verdict)),
        decode_steps: count(&mut decode.steps.iter().map(|s| s.verdict)),
        taps_compared,
        // Set by compare_core from the gate's verdict.
        passes: false,
    }
}
