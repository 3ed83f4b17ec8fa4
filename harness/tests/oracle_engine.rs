//! The built-in llama.cpp oracle against the engine's `ggml` profile (F32 K/V cache) on every
//! committed `bitnet` fixture: logits and every tap, the prompts and 16 greedy decode steps
//! through both KV caches. Prints the measured figures; bounds are a few times above them.
#![cfg(feature = "llama-cpp")]

mod common;
mod versus;

use common::fixtures_dir;
use versus::{check_bounds, engine_run, ggml_engine, Worst};
use xval_cpp_sys::OracleSettings;
use xval_engine::sampling::argmax;
use xval_engine::taps::TapFilter;
use xval_harness::compare::metrics::TapMetrics;
use xval_harness::fixtures::golden::{recorded_by_builtin, DECODE_STEPS, PROMPTS};

#[test]
fn oracle_and_engine_ggml_profile_agree_on_the_bitnet_fixtures() {
    let settings = OracleSettings {
        n_ctx: 256,
        ..OracleSettings::default()
    };
    let all = TapFilter::all();
    for r in recorded_by_builtin() {
        let path = fixtures_dir().join(r.model);
        let mut oracle = xval_cpp_sys::open_builtin(&path, &settings).unwrap();
        let engine = ggml_engine(&path);
        let (mut prompt, mut worst) = (Worst::default(), Worst::default());
        for text in PROMPTS {
            let tokens = oracle.tokenize(text, true, true).unwrap();
            let mut evals = vec![oracle.evaluate(&tokens, &all).unwrap()];
            let mut cont = Vec::new();
            for _ in 0..DECODE_STEPS {
                let last = evals.last().unwrap();
                let next = argmax(last.logits_row(last.n_tokens() - 1));
                cont.push(next);
                evals.push(oracle.decode_step(next, &all).unwrap());
            }
            let runs = engine_run(&engine, &tokens, &cont, &all, |_| true);
            for (i, (o, (logits, taps))) in evals.iter().zip(&runs).enumerate() {
                let what = format!("{} {text:?} evaluation {i}", r.stem);
                if std::env::var_os("XVAL_DEBUG_VERSUS").is_some() {
                    for t in taps {
                        if let Some(ot) = o.tap(&t.name) {
                            let m = TapMetrics::compute(&t.data, &ot.data);
                            eprintln!(
                                "{what} {}: nmse {:.2e} max {:.2e}",
                                t.name, m.nmse, m.max_abs_diff
                            );
                        }
                    }
                }
                if i == 0 {
                    prompt.add(&what, logits, taps, o);
                }
                worst.add(&what, logits, taps, o);
            }
        }
        eprintln!("oracle vs engine ggml {} prompts: {prompt:?}", r.stem);
        eprintln!(
            "oracle vs engine ggml {} prompts and decode steps: {worst:?}",
            r.stem
        );
        check_bounds(r.model, &prompt, &worst);
    }
}
