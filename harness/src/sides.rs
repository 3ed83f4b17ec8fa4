//! Running both sides of a comparison on the same ids: the engine and the oracle evaluate the
//! prompt, then follow the oracle's greedy tokens through their KV caches. Beside them run
//!
//! - the engine's **noise twin** (`Engine::with_plan(Plan::jitter(..))`): the same engine with
//!   every op's output moved by one ulp in about half its elements, fed the same ids. Its drift
//!   from the plain engine, tap by tap, is how far rounding noise carries in this model, and the
//!   chained limits follow it;
//! - the engine's **op replays**: every op recomputed from the oracle's own inputs, for the
//!   prompt and for every decode step (attention over the oracle's keys and values of every
//!   earlier position).
//!
//! The engine under test decodes one token at a time, as it would in use. The twin and the
//! replays know every step's token beforehand (the oracle chose them), so their steps run
//! together, every weight matrix read once for all of them, each row on one row's numerics
//! ([`Rows::Steps`]): bit for bit what step after step would give.
//!
//! What comes out is plain data for [`crate::compare::compare_core`].

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use xval_cpp_sys::{Evaluation, Oracle};
use xval_engine::model::{Engine, Forward, KvHistory, Plan, ReplayInputs, Rows};
use xval_engine::sampling::argmax;
use xval_engine::taps::{tap_name, Tap, TapFilter};

use crate::compare::align::align;
use crate::compare::{ReplayError, Side, SideEval, Twin};
use crate::error::Error;

/// The seed of the noise twin's jitter (fixed: the same inputs give the same receipt).
pub const TWIN_SEED: u64 = 0x7e1f_0d1d_5eed_0001;

impl SideEval {
    /// The engine's evaluation of `tokens`.
    pub fn of_engine(tokens: &[u32], f: Forward) -> SideEval {
        SideEval {
            tokens: tokens.to_vec(),
            n_vocab: f.n_vocab,
            logits: f.logits,
            taps: f.taps,
        }
    }

    /// An oracle's evaluation.
    pub fn of_oracle(e: Evaluation) -> SideEval {
        SideEval {
            tokens: e.tokens,
            n_vocab: e.n_vocab,
            logits: e.logits,
            taps: e.taps,
        }
    }
}

/// How to run both sides.
pub struct RunPlan<'a> {
    pub ids: &'a [u32],
    /// Greedy decode steps after the prompt (`Session::decode_steps` fits them to the context
    /// and to what a recording holds).
    pub steps: usize,
    pub taps: &'a TapFilter,
    /// Show a progress bar for the decode steps.
    pub progress: bool,
}

/// The oracle's side: the prompt, then its own greedy continuation.
#[derive(Clone)]
pub struct OracleRun {
    pub prefill: SideEval,
    pub steps: Vec<SideEval>,
}

impl OracleRun {
    /// The oracle's side of a comparison, `tokenized` being its own tokenizer's ids.
    pub fn into_side(self, tokenized: Vec<u32>) -> Side {
        Side {
            tokenized,
            prefill: self.prefill,
            decode: self.steps,
            ..Side::default()
        }
    }
}

/// The engine's side on the oracle's ids.
#[derive(Clone)]
pub struct EngineRun {
    pub prefill: SideEval,
    pub steps: Vec<SideEval>,
    pub twin: Twin,
    pub replays: Replays,
}

impl EngineRun {
    /// The engine's side of a comparison, `tokenized` being its own tokenizer's ids.
    pub fn into_side(self, tokenized: Vec<u32>) -> Side {
        Side {
            tokenized,
            prefill: self.prefill,
            decode: self.steps,
            replay: self.replays.prompt,
            step_replays: self.replays.steps,
            replay_errors: self.replays.errors,
            twin: Some(self.twin),
        }
    }
}

/// Evaluate the prompt on both sides, then follow the oracle's greedy tokens for
/// `plan.steps`; then the noise twin on the same ids and every op replay. Seconds per phase go
/// into `timings`.
pub fn run_sides(
    engine: &Engine,
    oracle: &mut dyn Oracle,
    plan: &RunPlan,
    timings: &mut BTreeMap<String, f64>,
) -> anyhow::Result<(OracleRun, EngineRun)> {
    let o = run_oracle(oracle, plan, timings)?;
    let e = run_engine(engine, &o, plan.taps, timings)?;
    Ok((o, e))
}

/// The oracle on the prompt, then `plan.steps` greedy decode steps of its own.
pub fn run_oracle(
    oracle: &mut dyn Oracle,
    plan: &RunPlan,
    timings: &mut BTreeMap<String, f64>,
) -> anyhow::Result<OracleRun> {
    let steps = plan.steps;
    let t = Instant::now();
    let o = oracle
        .evaluate(plan.ids, plan.taps)
        .map_err(Error::Oracle)?;
    timings.insert("oracle_prefill".into(), t.elapsed().as_secs_f64());
    let mut next = argmax(o.logits_row(o.n_tokens() - 1));
    let prefill = SideEval::of_oracle(o);
    let bar = plan.progress.then(|| {
        let b = indicatif::ProgressBar::new(steps as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "oracle decode {bar:30} {pos}/{len} steps {elapsed}",
            )
            .expect("valid template"),
        );
        b
    });
    let t = Instant::now();
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let o = oracle.decode_step(next, plan.taps).map_err(Error::Oracle)?;
        next = argmax(o.logits_row(0));
        out.push(SideEval::of_oracle(o));
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    timings.insert("oracle_decode".into(), t.elapsed().as_secs_f64());
    Ok(OracleRun {
        prefill,
        steps: out,
    })
}

/// The engine on the oracle's ids (its prompt, then each token the oracle chose), its noise
/// twin on the same ids and every op replay on the oracle's inputs.
pub fn run_engine(
    engine: &Engine,
    oracle: &OracleRun,
    taps: &TapFilter,
    timings: &mut BTreeMap<String, f64>,
) -> anyhow::Result<EngineRun> {
    let ids = &oracle.prefill.tokens;
    let decode_tokens: Vec<u32> = oracle.steps.iter().map(|s| s.tokens[0]).collect();
    let mut cache = engine.new_cache();
    let t = Instant::now();
    let prefill = SideEval::of_engine(ids, engine.forward(&mut cache, ids, taps)?);
    timings.insert("engine_prefill".into(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let steps = decode_tokens
        .iter()
        .map(|&tok| {
            Ok(SideEval::of_engine(
                &[tok],
                engine.forward(&mut cache, &[tok], taps)?,
            ))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    timings.insert("engine_decode".into(), t.elapsed().as_secs_f64());
    // The noise twin and the op replays need nothing from each other: side by side, each on
    // its own threads (the twin is an engine of its own, with its own pool), so that each
    // fills the cores the other leaves idle between its parallel parts. Each is exact
    // whatever the threads, so the receipt is the same. Their timings overlap.
    let (twin, replays) = std::thread::scope(|s| {
        let twin = s.spawn(|| {
            let t = Instant::now();
            let twin = run_twin(engine, ids, &decode_tokens, taps);
            (twin, t.elapsed().as_secs_f64())
        });
        let t = Instant::now();
        let replays = replay_all(engine, (&prefill, &oracle.prefill), &steps, &oracle.steps);
        let replay_s = t.elapsed().as_secs_f64();
        let (twin, twin_s) = twin.join().expect("the noise twin's thread does not panic");
        (twin.map(|t| (t, twin_s)), (replays, replay_s))
    });
    let (twin, twin_s) = twin?;
    let (replays, replay_s) = replays;
    timings.insert("noise_twin".into(), twin_s);
    timings.insert("engine_replay".into(), replay_s);
    Ok(EngineRun {
        prefill,
        steps,
        twin,
        replays,
    })
}

/// The noise twin of `engine` on the prompt `ids`, then one step per token of `decode`.
pub fn run_twin(
    engine: &Engine,
    ids: &[u32],
    decode: &[u32],
    taps: &TapFilter,
) -> anyhow::Result<Twin> {
    // Tie flips at the last prompt position: its effect reaches every decode step. The twin is
    // the same engine: faults the engine was given stay.
    let Plan {
        jitter,
        flip_ties_at,
        f32_sums,
        ..
    } = Plan::twin(TWIN_SEED, ids.len().checked_sub(1));
    let twin = engine.with_plan(Plan {
        jitter,
        flip_ties_at,
        f32_sums,
        faults: engine.plan().map(|p| p.faults.clone()).unwrap_or_default(),
    })?;
    let mut cache = twin.new_cache();
    let prefill = SideEval::of_engine(ids, twin.forward(&mut cache, ids, taps)?);
    // The steps' tokens are known (the oracle chose them): evaluated together, each weight
    // matrix read once for all, bit for bit the one-token steps (`Engine::forward_steps`).
    let decode = if decode.is_empty() {
        Vec::new()
    } else {
        twin.forward_steps(&mut cache, decode, taps)?
            .into_iter()
            .zip(decode)
            .map(|(f, &t)| SideEval::of_engine(&[t], f))
            .collect()
    };
    Ok(Twin {
        seed: TWIN_SEED,
        prefill,
        decode,
    })
}

/// Every op replay of a comparison.
#[derive(Clone, Default)]
pub struct Replays {
    pub prompt: Vec<Tap>,
    pub steps: Vec<Vec<Tap>>,
    pub errors: Vec<ReplayError>,
}

/// Replay every engine op of the prompt and of every decode step on the oracle's inputs; each
/// step's attention runs over the oracle's keys and values of every earlier position.
pub fn replay_all(
    engine: &Engine,
    (engine_prefill, oracle_prefill): (&SideEval, &SideEval),
    engine_steps: &[SideEval],
    oracle_steps: &[SideEval],
) -> Replays {
    let n_layer = engine.model().hparams.n_layer;
    let mut errors = Vec::new();
    let mut history = Some(KvHistory::default());
    let prompt = replay_evaluation(
        engine,
        (&engine_prefill.tokens, 0),
        (&engine_prefill.taps, &oracle_prefill.taps),
        (history.as_ref(), Rows::Batch),
        None,
        &|_| true,
        &mut errors,
    );
    extend_history(&mut history, &oracle_prefill.taps, n_layer);
    let pos = engine_prefill.tokens.len();
    let pairs: Vec<(&SideEval, &SideEval)> = engine_steps.iter().zip(oracle_steps).collect();
    let together = replay_steps_together(engine, pos, &pairs, history.as_ref());
    // What could not be replayed together (an input missing from a step, an error), step by
    // step: each step over the history of every position before it, its errors its own.
    let mut steps = Vec::with_capacity(pairs.len());
    let mut pos = pos;
    for (i, (e, o)) in pairs.iter().enumerate() {
        let alone = |name: &str| !together.contains_key(name);
        let mut alone = if e.taps.iter().any(|t| alone(&t.name)) {
            replay_evaluation(
                engine,
                (&e.tokens, pos),
                (&e.taps, &o.taps),
                (history.as_ref(), Rows::Batch),
                Some(i),
                &alone,
                &mut errors,
            )
        } else {
            Vec::new()
        }
        .into_iter();
        // Every step's replays in the order of its taps, as one evaluation's are.
        let mut next_alone = alone.next();
        let mut out = Vec::with_capacity(e.taps.len());
        for t in &e.taps {
            if let Some(rows) = together.get(&t.name) {
                out.push(Tap::new(t.name.clone(), t.shape.clone(), rows[i].clone()));
            } else if next_alone.as_ref().is_some_and(|a| a.name == t.name) {
                out.extend(next_alone.take());
                next_alone = alone.next();
            }
        }
        steps.push(out);
        extend_history(&mut history, &o.taps, n_layer);
        pos += e.tokens.len();
    }
    Replays {
        prompt,
        steps,
        errors,
    }
}

/// The decode steps' replays computed together, per tap name: every step's tokens as one
/// evaluation from `start` (the oracle's inputs of each step joined in order, attention over
/// the prompt's history and the steps' own keys and values), each row with one row's numerics
/// ([`Rows::Steps`]), so each weight matrix is read once for all steps and every row is bit for
/// bit its step's own replay. Only taps whose inputs every step has (one token each, the same
/// lengths) and whose replay succeeds with every step's length; the rest is for
/// [`replay_evaluation`] step by step.
fn replay_steps_together(
    engine: &Engine,
    start: usize,
    steps: &[(&SideEval, &SideEval)],
    history: Option<&KvHistory>,
) -> HashMap<String, Vec<Vec<f32>>> {
    let mut out = HashMap::new();
    let Some((first, _)) = steps.first() else {
        return out;
    };
    if steps.len() < 2 || steps.iter().any(|(e, _)| e.tokens.len() != 1) {
        return out;
    }
    let per_step: Vec<HashMap<&str, &[f32]>> = steps
        .iter()
        .map(|(e, o)| {
            align(&e.taps, &o.taps)
                .pairs
                .iter()
                .map(|p| (p.engine.name.as_str(), &p.oracle.data[..]))
                .collect()
        })
        .collect();
    let joined: HashMap<&str, Vec<f32>> = per_step[0]
        .iter()
        .filter_map(|(&name, first)| {
            let parts: Option<Vec<&[f32]>> =
                per_step.iter().map(|m| m.get(name).copied()).collect();
            let parts = parts?;
            parts
                .iter()
                .all(|p| p.len() == first.len())
                .then(|| (name, parts.concat()))
        })
        .collect();
    let get = |name: &str| joined.get(name).map(|v| &v[..]);
    let tokens: Vec<u32> = steps.iter().map(|(e, _)| e.tokens[0]).collect();
    let inp = ReplayInputs {
        tokens: &tokens,
        start,
        get: &get,
        history,
        rows: Rows::Steps,
    };
    for t in &first.taps {
        let lens: Option<Vec<usize>> = steps
            .iter()
            .map(|(e, _)| {
                e.taps
                    .iter()
                    .find(|x| x.name == t.name)
                    .map(|x| x.data.len())
            })
            .collect();
        // Every step's tap of one non-zero length, so the joint result splits into one row each.
        let Some(len) = lens
            .filter(|l| l[0] > 0 && l.iter().all(|&n| n == l[0]))
            .map(|l| l[0])
        else {
            continue;
        };
        if let Ok(Some(data)) = engine.replay(&t.name, &inp) {
            if data.len() == len * steps.len() {
                out.insert(
                    t.name.clone(),
                    data.chunks_exact(len).map(<[f32]>::to_vec).collect(),
                );
            }
        }
    }
    out
}

/// Append an evaluation's keys and values (the oracle's `Kcur-L`/`Vcur-L` of every layer) to
/// the history; without them the history ends (later attention replays have no cache).
fn extend_history(history: &mut Option<KvHistory>, taps: &[Tap], n_layer: usize) {
    let Some(h) = history else {
        return;
    };
    let find = |tag: &str, l: usize| taps.iter().find(|t| t.name == tap_name(tag, Some(l)));
    if h.k.is_empty() {
        h.k = vec![Vec::new(); n_layer];
        h.v = vec![Vec::new(); n_layer];
    }
    for l in 0..n_layer {
        match (find("Kcur", l), find("Vcur", l)) {
            (Some(k), Some(v)) => {
                h.k[l].extend_from_slice(&k.data);
                h.v[l].extend_from_slice(&v.data);
            }
            _ => {
                *history = None;
                return;
            }
        }
    }
}

/// Every engine tap of one evaluation (`tokens` from position `start`) recomputed by the
/// engine's own op from the oracle's inputs (op-level replay). The oracle tap paired with each
/// engine name (through the I2_S `_s` alias where it applies) serves as that name's input;
/// `history` holds the oracle's keys and values of the positions before `start`. An op whose
/// inputs were not captured is left out; a replay that fails, or gives the wrong number of
/// values, is recorded in `errors` (the comparison fails on it). Only the taps `wanted` names
/// are replayed (the inputs come from every tap).
fn replay_evaluation(
    engine: &Engine,
    (tokens, start): (&[u32], usize),
    (engine_taps, oracle_taps): (&[Tap], &[Tap]),
    (history, rows): (Option<&KvHistory>, Rows),
    step: Option<usize>,
    wanted: &dyn Fn(&str) -> bool,
    errors: &mut Vec<ReplayError>,
) -> Vec<Tap> {
    let aligned = align(engine_taps, oracle_taps);
    let inputs: HashMap<&str, &[f32]> = aligned
        .pairs
        .iter()
        .map(|p| (p.engine.name.as_str(), &p.oracle.data[..]))
        .collect();
    let get = |name: &str| inputs.get(name).copied();
    let inp = ReplayInputs {
        tokens,
        start,
        get: &get,
        history,
        rows,
    };
    let mut out = Vec::new();
    for t in engine_taps.iter().filter(|t| wanted(&t.name)) {
        match engine.replay(&t.name, &inp) {
            Ok(None) => {}
            Ok(Some(data)) if data.len() == t.data.len() => {
                out.push(Tap::new(t.name.clone(), t.shape.clone(), data));
            }
            Ok(Some(data)) => errors.push(ReplayError {
                tap: t.name.clone(),
                step,
                error: format!(
                    "the replay gave {} values, the forward pass {}",
                    data.len(),
                    t.data.len()
                ),
            }),
            Err(e) => errors.push(ReplayError {
                tap: t.name.clone(),
                step,
                error: e.to_string(),
            }),
        }
    }
    out
}
