//! The ggml-graph oracle (our BitNet graph from ggml ops) against llama.cpp's own graph on
//! every committed `bitnet` fixture, before it is trusted with `bitnet-b1.58`: the same
//! tokenization, and every tap both capture plus the logits, for the recorded prompts and 16
//! greedy decode steps through both KV caches. The bar is NMSE <= 1e-6 on every tap;
//! the graph mirrors llama.cpp op for op, so the figures printed (`--nocapture`) are expected
//! to be exactly 0.
#![cfg(feature = "llama-cpp")]

mod common;

use common::fixtures_dir;
use xval_cpp_sys::OracleSettings;
use xval_engine::gguf::{GgufFile, Value};
use xval_engine::sampling::argmax;
use xval_engine::taps::TapFilter;
use xval_harness::compare::metrics::TapMetrics;
use xval_harness::fixtures::golden::{recorded_by_builtin, DECODE_STEPS, PROMPTS, RECORDED};

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
                // Same capture code: the same node (op, occurrence) behind every tap.
                assert_eq!(b.tap_sources, a.tap_sources, "{what}");
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

/// Every node llama.cpp's graph names (`cb(cur, "kq", il)` ...) is in ours, with the same op
/// and shape: the graphs are the same graph, not merely the same numbers.
#[test]
fn the_graph_inventory_is_llama_cpps() {
    let path = fixtures_dir().join(RECORDED[0].model);
    let mut reference = xval_cpp_sys::open_builtin(&path, &settings()).unwrap();
    let mut ours = xval_cpp_sys::open_ggml_graph(&path, &settings()).unwrap();
    let tokens = reference.tokenize(PROMPTS[0], true, true).unwrap();
    let none = TapFilter::none();
    let a = reference.evaluate(&tokens, &none).unwrap();
    let b = ours.evaluate(&tokens, &none).unwrap();
    let named: Vec<_> = a.graph.iter().filter(|n| n.is_named_by_model()).collect();
    assert!(named.len() > 50, "{}", named.len());
    let missing: Vec<_> = named
        .iter()
        .filter(|n| {
            !b.graph
                .iter()
                .any(|m| m.name == n.name && m.op == n.op && m.ne == n.ne)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "llama.cpp nodes without a twin in the ggml-graph oracle: {missing:?}"
    );
}

/// ggml's reference mode (reachable here because the oracle owns its backend) against its
/// optimized kernels: it only turns off llamafile's sgemm for F32/F16 products and op fusion,
/// so ternary projections are unchanged and the F32 products (attention; every projection of
/// the F32 fixture) differ by summation order. The figures are printed; the bound is loose.
#[test]
fn reference_mode_differs_from_optimized_only_by_summation_order() {
    let all = TapFilter::all();
    for r in recorded_by_builtin() {
        let path = fixtures_dir().join(r.model);
        let mut fast = xval_cpp_sys::open_ggml_graph(&path, &settings()).unwrap();
        let reference = OracleSettings {
            reference_kernels: true,
            ..settings()
        };
        let mut slow = xval_cpp_sys::open_ggml_graph(&path, &reference).unwrap();
        assert!(slow.identity().settings.reference_kernels.enabled);
        let mut worst = (0.0f64, String::new());
        for text in PROMPTS {
            let tokens = fast.tokenize(text, true, true).unwrap();
            let a = fast.evaluate(&tokens, &all).unwrap();
            let b = slow.evaluate(&tokens, &all).unwrap();
            for (ta, tb) in a.taps.iter().zip(&b.taps) {
                let m = TapMetrics::compute(&tb.data, &ta.data);
                if m.nmse > worst.0 {
                    worst = (m.nmse, format!("{text:?} {}", ta.name));
                }
            }
            let m = TapMetrics::compute(&b.logits, &a.logits);
            assert!(m.nmse < 1e-3, "{} {text:?}: {m:?}", r.stem);
        }
        eprintln!(
            "{}: reference vs optimized kernels, worst tap NMSE {:.3e} ({})",
            r.stem, worst.0, worst.1
        );
    }
}

/// The activation is what makes `bitnet-b1.58` need this oracle: the same file run as SiLU
/// (what mainline llama.cpp would do) departs from the engine at the first FFN activation,
/// while everything before it still matches.
#[test]
fn a_silu_graph_on_a_relu2_model_is_caught_at_the_activation() {
    let path = fixtures_dir().join("models/bitnet-b1.58-i2_s.gguf");
    let dir = tempfile::tempdir().unwrap();
    let silu = dir.path().join("silu.gguf");
    // Same weights, activation overridden to SiLU.
    let arch = GgufFile::open(&path)
        .unwrap()
        .header()
        .architecture()
        .unwrap()
        .to_string();
    let key = format!("{arch}.hidden_activation");
    common::rewrite_gguf(
        &path,
        &silu,
        |_, v| Some(v.clone()),
        Some((key, Value::String("silu".into()))),
        |_| true,
    );

    let all = TapFilter::all();
    let engine = xval_harness_engine(&path);
    let mut right = xval_cpp_sys::open_ggml_graph(&path, &settings()).unwrap();
    let mut wrong = xval_cpp_sys::open_ggml_graph(&silu, &settings()).unwrap();
    let tokens = right.tokenize(PROMPTS[0], true, true).unwrap();
    let mut cache = engine.new_cache();
    let e = engine.forward(&mut cache, &tokens, &all).unwrap();
    let ok = right.evaluate(&tokens, &all).unwrap();
    let bad = wrong.evaluate(&tokens, &all).unwrap();
    // (engine tap, oracle tap): the engine folds the I2_S scale into `ffn_gate`.
    let nmse = |o: &xval_cpp_sys::Evaluation, (en, on): (&str, &str)| {
        let t = e.taps.iter().find(|t| t.name == en).unwrap();
        TapMetrics::compute(&t.data, &o.tap(on).unwrap().data).nmse
    };
    for pair in [
        ("attn_out-0", "attn_out-0"),
        ("ffn_norm-0", "ffn_norm-0"),
        ("ffn_gate-0", "ffn_gate_s-0"),
    ] {
        assert!(nmse(&ok, pair) < 1e-10, "{pair:?}");
        assert!(nmse(&bad, pair) < 1e-10, "{pair:?}");
    }
    let act = ("ffn_sub_out-0", "ffn_sub_out-0");
    assert!(nmse(&ok, act) < 1e-10);
    let wrong_act = nmse(&bad, act);
    assert!(
        wrong_act > 1e-2,
        "SiLU for ReLU^2 went unnoticed: {wrong_act:e}"
    );
    eprintln!("ffn_sub_out-0 NMSE with SiLU in place of ReLU^2: {wrong_act:.3e}");
}

fn xval_harness_engine(path: &std::path::Path) -> xval_engine::model::Engine {
    use std::sync::Arc;
    use xval_engine::model::{Engine, Model};
    use xval_engine::numerics::{KvType, Numerics, Profile};
    let model = Model::load(
        Arc::new(GgufFile::open(path).unwrap()),
        xval_engine::quant::i2_s::I2sLayout::Block128,
    )
    .unwrap();
    Engine::new(model, Numerics::new(Profile::Ggml).with_kv(KvType::F32), 1).unwrap()
}

/// Bad input is named, never an abort inside ggml: a missing tensor, an architecture it does
/// not build, settings it cannot honour.
#[test]
fn bad_models_and_settings_are_refused_by_name() {
    let path = fixtures_dir().join(RECORDED[0].model);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gguf");
    common::rewrite_gguf(
        &path,
        &missing,
        |_, v| Some(v.clone()),
        None,
        |n| n != "blk.1.ffn_down.weight",
    );
    let e = xval_cpp_sys::open_ggml_graph(&missing, &settings())
        .err()
        .unwrap();
    assert!(e.is_bad_input(), "{e}");
    assert!(e.to_string().contains("blk.1.ffn_down.weight"), "{e}");

    let llama = dir.path().join("llama.gguf");
    common::rewrite_gguf(
        &path,
        &llama,
        |k, v| {
            Some(if k == "general.architecture" {
                Value::String("llama".into())
            } else {
                v.clone()
            })
        },
        None,
        |_| true,
    );
    let e = xval_cpp_sys::open_ggml_graph(&llama, &settings())
        .err()
        .unwrap();
    assert!(e.to_string().contains("architecture 'llama'"), "{e}");

    let flash = OracleSettings {
        flash_attn: true,
        ..settings()
    };
    let e = xval_cpp_sys::open_ggml_graph(&path, &flash).err().unwrap();
    assert!(e.to_string().contains("flash attention"), "{e}");
}
