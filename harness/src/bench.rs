//! What `harness bench` measures: prefill and decode speed of the engine and of an oracle on the
//! same token ids, and the machine's memory read bandwidth, all in one process and one sitting
//! so that their ratios mean something.

use std::hint::black_box;
use std::time::Instant;

use serde::Serialize;
use xval_cpp_sys::Oracle;
use xval_engine::model::{Engine, Outputs};
use xval_engine::sampling::argmax;
use xval_engine::taps::TapFilter;

use crate::error::{Error, Result};

/// Prefill and decode speed, tokens per second: the median over the repeats.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Speed {
    pub pp_tok_s: f64,
    pub tg_tok_s: f64,
}

/// Deterministic prompt ids spread over the vocabulary (no tokenizer involved: a model whose
/// tokenizer is odd still benchmarks).
pub fn prompt_ids(n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n as u64)
        .map(|i| ((i * 7919 + 1) % n_vocab.max(1) as u64) as u32)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What [`measure`] asks a side to evaluate.
enum Eval<'a> {
    /// A fresh sequence: these prompt ids from an empty KV cache.
    Prompt(&'a [u32]),
    /// One more token after what is cached.
    Step(u32),
}

/// Time `repeats` runs of: prefill `prompt`, then `steps` greedy single-token steps. `eval`
/// returns the logits of the last position it evaluated.
fn measure(
    prompt: &[u32],
    steps: usize,
    repeats: usize,
    mut eval: impl FnMut(Eval) -> Result<Vec<f32>>,
) -> Result<Speed> {
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let mut next = argmax(&eval(Eval::Prompt(prompt))?);
        pp.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        for _ in 0..steps {
            next = argmax(&eval(Eval::Step(next))?);
        }
        tg.push(steps as f64 / t.elapsed().as_secs_f64());
    }
    Ok(Speed {
        pp_tok_s: median(pp),
        tg_tok_s: median(tg),
    })
}

/// The engine's speed, no taps captured (each run starts from an empty KV cache).
pub fn engine_speed(
    engine: &Engine,
    prompt: &[u32],
    outputs: Outputs,
    steps: usize,
    repeats: usize,
) -> Result<Speed> {
    let none = TapFilter::none();
    let mut cache = engine.new_cache();
    measure(prompt, steps, repeats, |e| match e {
        Eval::Prompt(ids) => {
            cache = engine.new_cache();
            match outputs {
                Outputs::Last => Ok(engine.forward_last(&mut cache, ids)?),
                Outputs::All => Ok(engine
                    .forward(&mut cache, ids, &none)?
                    .last_logits()
                    .to_vec()),
            }
        }
        Eval::Step(id) => Ok(engine
            .forward(&mut cache, &[id], &none)?
            .last_logits()
            .to_vec()),
    })
}

/// An oracle's speed on the same ids, no taps captured. It runs in its worker process, so the
/// times include sending the logits back (a few milliseconds per prefill).
pub fn oracle_speed(
    oracle: &mut dyn Oracle,
    prompt: &[u32],
    outputs: Outputs,
    steps: usize,
    repeats: usize,
) -> Result<Speed> {
    let none = TapFilter::none();
    measure(prompt, steps, repeats, |e| {
        let out = match e {
            Eval::Prompt(ids) => match outputs {
                Outputs::Last => oracle.evaluate_last(ids)?,
                Outputs::All => oracle.evaluate(ids, &none)?,
            },
            Eval::Step(id) => oracle.decode_step(id, &none)?,
        };
        Ok(out.logits_row(out.n_tokens() - 1).to_vec())
    })
}

/// Bytes each read-bandwidth pass streams: well past any last-level cache.
const BANDWIDTH_BYTES: usize = 1 << 30;

/// The machine's memory read bandwidth in GB/s with `threads` threads: the best of five passes
/// summing a 1 GiB buffer (every thread its own contiguous part), as a decode that streams its
/// weights once would read them.
pub fn read_bandwidth(threads: usize) -> Result<f64> {
    let words = BANDWIDTH_BYTES / 8;
    let mut buf: Vec<u64> = Vec::new();
    buf.try_reserve_exact(words)
        .map_err(|e| Error::Invalid(format!("cannot allocate the bandwidth buffer: {e}")))?;
    buf.extend((0..words as u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let threads = threads.max(1);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        let sum = std::thread::scope(|s| {
            let parts: Vec<_> = buf
                .chunks(words.div_ceil(threads))
                .map(|part| {
                    s.spawn(move || {
                        // Eight independent sums so that the adds are not the limit.
                        let mut acc = [0u64; 8];
                        for c in part.chunks_exact(8) {
                            for (a, &x) in acc.iter_mut().zip(c) {
                                *a = a.wrapping_add(x);
                            }
                        }
                        acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                    })
                })
                .collect();
            parts
                .into_iter()
                .map(|h| h.join().expect("a summing thread does not panic"))
                .fold(0u64, u64::wrapping_add)
        });
        black_box(sum);
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(BANDWIDTH_BYTES as f64 / best / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_ids_stay_in_the_vocabulary() {
        let ids = prompt_ids(64, 384);
        assert_eq!(ids.len(), 64);
        assert!(ids.iter().all(|&i| i < 384));
        assert_eq!(ids[..3], [1, 7920 % 384, 15839 % 384]);
    }

    #[test]
    fn median_of_an_odd_and_an_even_count() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
