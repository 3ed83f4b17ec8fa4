//! Running both sides of a comparison on the same ids: the engine and the oracle evaluate the
//! prompt, then follow the oracle's greedy tokens through their KV caches; the engine's ops
//! are also replayed on the oracle's own inputs. What comes out is plain data for
//! [`crate::compare::compare_core`].

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use xval_cpp_sys::{Evaluation, Oracle};
use xval_engine::model::{Engine, Forward, KvCache};
use xval_engine::sampling::argmax;
use xval_engine::taps::{Tap, TapFilter};

use crate::compare::align::align;
use crate::compare::SideEval;
use crate::error::Error;

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

/// What both sides computed for one prompt.
pub struct Sides {
    pub engine_prefill: SideEval,
    pub oracle_prefill: SideEval,
    pub engine_steps: Vec<SideEval>,
    pub oracle_steps: Vec<SideEval>,
    /// The engine's prompt taps replayed on the oracle's inputs.
    pub replay: Vec<Tap>,
}

/// How to run both sides.
pub struct RunPlan<'a> {
    pub ids: &'a [u32],
    /// Greedy decode steps after the prompt (fewer when the context is full).
    pub steps: usize,
    pub taps: &'a TapFilter,
    /// Show a progress bar for the decode steps.
    pub progress: bool,
}

/// Evaluate the prompt on both sides, then follow the oracle's greedy tokens for `plan.steps`;
/// seconds per phase go into `timings`.
pub fn run_sides(
    engine: &Engine,
    cache: &mut KvCache,
    oracle: &mut dyn Oracle,
    plan: &RunPlan,
    timings: &mut BTreeMap<String, f64>,
) -> anyhow::Result<Sides> {
    let ids = plan.ids;
    cache.clear();
    let t = Instant::now();
    let e = engine.forward(cache, ids, plan.taps)?;
    timings.insert("engine_prefill".into(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let o = oracle.evaluate(ids, plan.taps).map_err(Error::Oracle)?;
    timings.insert("oracle_prefill".into(), t.elapsed().as_secs_f64());
    let mut next = argmax(o.logits_row(o.n_tokens() - 1));
    let (engine_prefill, oracle_prefill) = (SideEval::of_engine(ids, e), SideEval::of_oracle(o));
    let t = Instant::now();
    let replay = replay_on_oracle_inputs(engine, ids, &engine_prefill.taps, &oracle_prefill.taps);
    timings.insert("engine_replay".into(), t.elapsed().as_secs_f64());
    let steps = plan.steps.min(cache.capacity().saturating_sub(ids.len()));
    let bar = plan.progress.then(|| {
        let b = indicatif::ProgressBar::new(steps as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("decode {bar:30} {pos}/{len} steps {elapsed}")
                .expect("valid template"),
        );
        b
    });
    let (mut engine_steps, mut oracle_steps) = (Vec::new(), Vec::new());
    let (mut te, mut to) = (0.0, 0.0);
    for _ in 0..steps {
        let t = Instant::now();
        let e = engine.forward(cache, &[next], plan.taps)?;
        te += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let o = oracle.decode_step(next, plan.taps).map_err(Error::Oracle)?;
        to += t.elapsed().as_secs_f64();
        engine_steps.push(SideEval::of_engine(&[next], e));
        next = argmax(o.logits_row(0));
        oracle_steps.push(SideEval::of_oracle(o));
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    timings.insert("engine_decode".into(), te);
    timings.insert("oracle_decode".into(), to);
    Ok(Sides {
        engine_prefill,
        oracle_prefill,
        engine_steps,
        oracle_steps,
        replay,
    })
}

/// Every engine tap recomputed by the engine's own op from the oracle's inputs (op-level
/// replay). The oracle tap paired with each engine name (through the I2_S `_s` alias where it
/// applies) serves as that name's input. An op whose inputs are missing or shaped differently
/// (already reported by the alignment) is left out.
pub fn replay_on_oracle_inputs(
    engine: &Engine,
    ids: &[u32],
    engine_taps: &[Tap],
    oracle_taps: &[Tap],
) -> Vec<Tap> {
    let aligned = align(engine_taps, oracle_taps);
    let inputs: HashMap<&str, &[f32]> = aligned
        .pairs
        .iter()
        .map(|p| (p.engine.name.as_str(), &p.oracle.data[..]))
        .collect();
    let get = |name: &str| inputs.get(name).copied();
    engine_taps
        .iter()
        .filter_map(|t| match engine.replay(&t.name, ids, &get) {
            Ok(Some(data)) if data.len() == t.data.len() => {
                Some(Tap::new(t.name.clone(), t.shape.clone(), data))
            }
            _ => None,
        })
        .collect()
}
