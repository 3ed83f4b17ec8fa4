//! The ggml-graph oracle (our BitNet graph from ggml ops) against llama.cpp's own graph on
//! every committed `bitnet` fixture, before it is trusted with `bitnet-b1.58`: the same
//! tokenization, and every tap both capture plus the logits, for the recorded prompts and 16
//! greedy decode steps through both KV caches. The bar is NMSE <= 1e-6 on every tap;
//! the graph mirrors llama.cpp op for op, so the figures printed (`--nocapture`) are expected
//! to be exactly 0.
#![cfg(feature = "llama-cpp")]

mod common;

use common::fixtures_dir;
use xval_cpp_sys::{Oracle, OracleSettings};
use xval_engine::taps::TapFilter;
use xval_harness::compare::metrics::TapMetrics;
use xval_harness::fixtures::golden::{recorded_by_builtin, DECODE_STEPS, PROMPTS};

fn argmax(v: &[f32]) -> u32 {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b }) as u32
}

/// The bar the issue sets for using the oracle on `bitnet-b1.58`.
const MAX_TAP_NMSE: f64 = 1e-6;

fn settings() -> OracleSettings {
    OracleSettings {
        n_ctx: 256,
        ..OracleSettings::default()
    }
}

#[test]
fn ggml_graph_matches_llama_cpp_on_every_bitnet_fixture() {
    let all = TapFilter::all();
    for r in recorded_by_builtin() {
        let path = fixtures_dir().join(r.model);
        let mut reference = xval_cpp_sys::open_builtin(&path, &settings()).unwrap();
        let mut ours = xval_cpp_sys::open_ggml_graph(&path, &settings()).unwrap();
        assert_eq!(ours.identity().kind, "ggml-graph");
        let (mut worst_nmse, mut worst_tap, mut n_taps, mut bit_identical) =
            (0.0f64, String::new(), 0usize, true);
        for text in PROMPTS {
            let tokens = reference.tokenize(text, true, true).unwrap();
            assert_eq!(ours.tokenize(text, true, true).unwrap(), tokens, "{text:?}");
            assert_eq!(
                ours.detokenize(&tokens, false, true).unwrap(),
                reference.detokenize(&tokens, false, true).unwrap()
            );
            let mut a = reference.evaluate(&tokens, &all).unwrap();
            let mut b = ours.evaluate(&tokens, &all).unwrap();
            for step in 0..=DECODE_STEPS {
                let what = format!("{} {text:?} evaluation {step}", r.stem);
                let m = TapMetrics::compute(&b.logits, &a.logits);
                assert!(m.nmse <= MAX_TAP_NMSE, "{what} logits: {m:?}");
                bit_identical &= a.logits == b.logits;
                for ta in &a.taps {
                    let Some(tb) = b.tap(&ta.name) else {
                        panic!("{what}: ggml-graph lacks tap {}", ta.name)
                    };
                    assert_eq!(tb.shape, ta.shape, "{what} {}", ta.name);
                    let m = TapMetrics::compute(&tb.data, &ta.data);
                    assert!(m.nmse <= MAX_TAP_NMSE, "{what} {}: {m:?}", ta.name);
                    bit_identical &= tb.data == ta.data;
                    n_taps += 1;
                    if m.nmse > worst_nmse || worst_tap.is_empty() {
                        worst_nmse = m.nmse;
                        worst_tap = format!("{what} {}", ta.name);
                    }
                }
                assert_eq!(b.taps.len(), a.taps.len(), "{what}: tap sets differ");
                if step == DECODE_STEPS {
                    break;
                }
                let next = argmax(a.logits_row(a.n_tokens() - 1));
                assert_eq!(next, argmax(b.logits_row(b.n_tokens() - 1)), "{what}");
                a = reference.decode_step(next, &all).unwrap();
                b = ours.decode_step(next, &all).unwrap();
            }
        }
        eprintln!(
            "{}: {n_taps} taps over {} prompts x {} evaluations: worst NMSE {worst_nmse:.3e} \
             ({worst_tap}); logits and taps bit-identical: {bit_identical}",
            r.stem,
            PROMPTS.len(),
            DECODE_STEPS + 1
        );
    }
}
