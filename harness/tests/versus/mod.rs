//! The engine (`ggml` profile, F32 K/V cache) run like an oracle, and the worst metrics of the
//! engine against an oracle's evaluation (`xval_harness::compare` metrics and alignment).
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use xval_cpp_sys::Evaluation;
use xval_engine::gguf::GgufFile;
use xval_engine::model::{Engine, KvCache, Model};
use xval_engine::numerics::{KvType, Numerics, Profile};
use xval_engine::quant::i2_s::I2sLayout;
use xval_engine::taps::{Tap, TapFilter};
use xval_harness::compare::align::align;
use xval_harness::compare::metrics::{LogitMetrics, TapMetrics};

pub fn ggml_engine(model: &Path) -> Engine {
    let file = Arc::new(GgufFile::open(model).unwrap());
    let model = Model::load(file, I2sLayout::Block128).unwrap();
    Engine::new(model, Numerics::new(Profile::Ggml).with_kv(KvType::F32), 1).unwrap()
}

/// The worst figures over every position and every paired tap.
#[derive(Debug, Default, Clone, Copy)]
pub struct Worst {
    pub logits_max_abs_diff: f64,
    pub kl: f64,
    pub top1_disagreements: usize,
    pub tap_nmse: f64,
    pub tap_max_abs_diff: f64,
    pub taps_compared: usize,
    pub positions: usize,
}

impl Worst {
    /// Fold in one evaluation: engine logits/taps against the oracle's.
    pub fn add(&mut self, what: &str, logits: &[f32], taps: &[Tap], oracle: &Evaluation) {
        let n = oracle.n_vocab;
        assert_eq!(logits.len(), oracle.logits.len(), "{what}: logits length");
        for p in 0..oracle.n_tokens() {
            let m = LogitMetrics::compute(&logits[p * n..(p + 1) * n], oracle.logits_row(p), 5);
            assert_eq!(m.nonfinite_mismatch, 0, "{what} position {p}");
            if std::env::var_os("XVAL_DEBUG_VERSUS").is_some() {
                eprintln!(
                    "{what} p{p}: max|diff| {:.3e} kl {:.3e}",
                    m.max_abs_diff, m.kl
                );
            }
            self.logits_max_abs_diff = self.logits_max_abs_diff.max(m.max_abs_diff);
            self.kl = self.kl.max(m.kl);
            self.top1_disagreements += usize::from(!m.top1_agree);
            self.positions += 1;
        }
        let a = align(taps, &oracle.taps);
        assert!(
            a.shape_mismatches.is_empty(),
            "{what}: {:?}",
            a.shape_mismatches
        );
        // With `.scale` tensors the oracle also has the unscaled product (`ffn_up` beside
        // `ffn_up_s`); the engine folds the scale in and names only the scaled one.
        let unscaled = |name: &String| {
            let (tag, layer) = xval_engine::taps::split_name(name);
            let scaled = xval_engine::taps::tap_name(&format!("{tag}_s"), layer);
            oracle.taps.iter().any(|t| t.name == scaled)
        };
        if !oracle.taps.is_empty() {
            assert!(
                a.engine_only.is_empty() && a.oracle_only.iter().all(unscaled),
                "{what}: engine only {:?}, oracle only {:?}",
                a.engine_only,
                a.oracle_only
            );
        }
        for pair in &a.pairs {
            for p in 0..pair.n_positions() {
                let m = TapMetrics::compute(pair.engine.row(p), pair.oracle.row(p));
                assert_eq!(
                    m.nonfinite_mismatch,
                    0,
                    "{what} {} position {p}",
                    pair.name()
                );
                self.tap_nmse = self.tap_nmse.max(m.nmse);
                self.tap_max_abs_diff = self.tap_max_abs_diff.max(m.max_abs_diff);
            }
            self.taps_compared += 1;
        }
    }
}

/// Run the engine over `tokens` then each of `decode` (one token each) with the taps `taps`
/// asks for at the evaluations `want_taps` selects (by index: 0 = the prompt).
pub fn engine_run(
    e: &Engine,
    tokens: &[u32],
    decode: &[u32],
    taps: &TapFilter,
    want_taps: impl Fn(usize) -> bool,
) -> Vec<(Vec<f32>, Vec<Tap>)> {
    let mut cache: KvCache = e.new_cache();
    let none = TapFilter::none();
    let mut out = Vec::new();
    let f = e
        .forward(&mut cache, tokens, if want_taps(0) { taps } else { &none })
        .unwrap();
    out.push((f.logits, f.taps));
    for (i, &t) in decode.iter().enumerate() {
        let filter = if want_taps(i + 1) { taps } else { &none };
        let f = e.forward(&mut cache, &[t], filter).unwrap();
        out.push((f.logits, f.taps));
    }
    out
}

/// The agreement the engine's `ggml` profile must keep with llama.cpp on the tiny fixtures,
/// a few times above what was measured (see the report in the golden recordings' commit).
///
/// The prompts agree to float noise. Decode steps mostly do too, but Q8_K activation
/// quantization (`quantize_row_q8_K`: one int8 per element, round to nearest) turns an ulp of
/// difference at a rounding boundary into a whole quantization step: on "Hi, World! 42",
/// decode step 3 of the tq2_0/tq1_0 fixtures, `attn_sub_norm-0` agrees to 6e-7 and
/// `attn_out-0` (its Q8_K matmul) then differs by 2.6e-3, which the KV cache carries on
/// (logits max|diff| 0.11, KL 4.2e-4, the same top-1). Decode steps get bounds that admit
/// such a flip but still catch a wrong kernel (a real bug moves the top-1 or the KL by orders).
pub fn check_bounds(model: &str, prompt: &Worst, all: &Worst) {
    assert_eq!(all.top1_disagreements, 0, "{model}: {all:?}");
    // F32 weights: llama.cpp's F32 matmul (llamafile sgemm) sums in another order than the
    // engine's scalar dot, measured 1.7e-4 / KL 4e-9 / NMSE 3.6e-9; ternary weights: Q8_K
    // integer dots, measured 2.3e-5 / 8e-11 / 5.6e-11.
    // I2_S (bitnet-b1.58, ggml-graph recordings): one activation rounding flip in ffn_down-2
    // of the third prompt (the op itself replays at NMSE 3e-14) carries to the logits:
    // measured 5.0e-3 / KL 1.1e-6 / tap NMSE 3.9e-6.
    // Trained fixtures: peaked attention and larger activations turn more Q8_K rounding
    // boundaries into flips; on the SiLU TQ2_0 model (every op replays at NMSE <= 6e-14) the
    // prompt measured 4.1e-2 / KL 1.0e-4 / tap NMSE 2.7e-4 with the same top-1 everywhere. The
    // noise twin's chained limits judge them (tests/trained.rs); here they get bounds that
    // still catch a wrong kernel.
    let (max_diff, kl, nmse) = if model.contains("trained/") {
        (0.2, 1e-3, 2e-3)
    } else if model.contains("f32") {
        (1e-3, 3e-8, 2e-8)
    } else if model.contains("i2_s") {
        (2e-2, 5e-6, 2e-5)
    } else {
        (1e-4, 5e-10, 5e-10)
    };
    assert!(prompt.logits_max_abs_diff < max_diff, "{model}: {prompt:?}");
    assert!(prompt.kl < kl, "{model}: {prompt:?}");
    assert!(prompt.tap_nmse < nmse, "{model}: {prompt:?}");
    assert!(all.logits_max_abs_diff < 0.5, "{model}: {all:?}");
    assert!(all.kl < 2e-3, "{model}: {all:?}");
    assert!(all.tap_nmse < 5e-3, "{model}: {all:?}");
}
