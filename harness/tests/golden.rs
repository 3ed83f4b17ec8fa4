//! The committed golden recordings (`fixtures/golden/`) replayed through `GoldenOracle`: what
//! it answers, what it refuses and how, and the engine's `ggml` profile against the recorded
//! oracle numbers (runs without the C++ build). With the built-in oracle: the recordings are
//! what llama.cpp computes now, bit for bit.

mod common;
mod versus;

use std::path::PathBuf;

use common::fixtures_dir;
use versus::{check_bounds, engine_run, ggml_engine, Worst};
use xval_cpp_sys::golden::GoldenOracle;
use xval_cpp_sys::{Error, Oracle};
use xval_engine::taps::{all_names, TapFilter};
use xval_harness::fixtures::golden::{
    RecordingOracle, DECODE_STEPS, PROMPTS, RECORDED, TAP_DECODE_STEPS,
};

fn model(rel: &str) -> PathBuf {
    fixtures_dir().join(rel)
}

fn open(rel: &str) -> GoldenOracle {
    GoldenOracle::open(&fixtures_dir(), &model(rel)).unwrap()
}

#[test]
fn replays_every_recorded_prompt_and_its_greedy_continuation() {
    for r in &RECORDED {
        let mut g = open(r.model);
        let id = g.identity().clone();
        assert_eq!(id.kind, "golden");
        let from = id.recorded.as_ref().unwrap();
        assert!(
            from.golden && from.oracle_kind == r.oracle.label(),
            "{from:?}"
        );
        assert!(from.file.ends_with(&format!("{}.json", r.stem)), "{from:?}");
        assert_eq!(id.settings.threads, 1);
        let n_layer = g.model().n_layer;
        for text in PROMPTS {
            let tokens = g.tokenize(text, true, true).unwrap();
            assert!((8..=12).contains(&tokens.len()), "{text:?}: {tokens:?}");
            let e = g.evaluate(&tokens, &TapFilter::all()).unwrap();
            assert_eq!(e.logits.len(), tokens.len() * g.model().n_vocab);
            let names: Vec<&str> = e.taps.iter().map(|t| t.name.as_str()).collect();
            let mut want = all_names(n_layer);
            if r.oracle == RecordingOracle::BitnetCpp {
                // The fork names the output projection `attn_o_out`; an I2_S model has no
                // `.scale` tensors, so no `_s` taps.
                want = want
                    .into_iter()
                    .filter(|n| !n.starts_with("ffn_up_s") && !n.starts_with("ffn_gate_s"))
                    .map(|n| n.replace("attn_out", "attn_o_out"))
                    .collect();
            }
            let scaled = xval_engine::gguf::GgufFile::open(model(r.model))
                .unwrap()
                .tensor("blk.0.ffn_up.scale")
                .is_some();
            if r.oracle == RecordingOracle::Builtin && !scaled {
                // llama.cpp's `build_ffn` taps `ffn_up_s`/`ffn_gate_s` only when the model
                // has `.scale` tensors (the trained TQ2_0 model keeps its scales in `d`).
                want.retain(|n| !n.starts_with("ffn_up_s") && !n.starts_with("ffn_gate_s"));
            }
            assert_eq!(names, want, "{}", r.model);
            // result_output is rebuilt from the logits.
            assert_eq!(e.tap("result_output").unwrap().data, e.logits);
            let cont = g.greedy_continuation(&tokens).unwrap().to_vec();
            assert_eq!(cont.len(), DECODE_STEPS);
            let mut prev = e;
            for (s, &t) in cont.iter().enumerate() {
                // The recorded continuation is the argmax of the previous logits.
                let last = prev.logits_row(prev.n_tokens() - 1);
                let best = (0..last.len()).fold(0, |b, i| if last[i] > last[b] { i } else { b });
                assert_eq!(t as usize, best, "{text:?} step {}", s + 1);
                let d = g.decode_step(t, &TapFilter::parse("l_out-*")).unwrap();
                assert_eq!(d.start_pos, tokens.len() + s);
                let want = if s < TAP_DECODE_STEPS { n_layer } else { 0 };
                assert_eq!(d.taps.len(), want, "{text:?} step {}", s + 1);
                prev = d;
            }
            let err = g.decode_step(cont[0], &TapFilter::none()).unwrap_err();
            assert!(
                err.to_string().contains("ends after 16 decode steps"),
                "{err}"
            );
        }
    }
}

#[test]
fn refusals_name_what_is_recorded() {
    let mut g = open(RECORDED[0].model);
    let none = TapFilter::none();

    let err = g.evaluate(&[1, 2, 3], &none).unwrap_err();
    assert!(matches!(err, Error::NotRecorded { .. }) && err.is_bad_input());
    let msg = err.to_string();
    assert!(
        msg.contains("[1, 2, 3]") && msg.contains(PROMPTS[0]),
        "{msg}"
    );

    let err = g.decode_step(5, &none).unwrap_err();
    assert!(matches!(err, Error::InvalidRequest(_)), "{err}");

    let tokens = g.tokenize(PROMPTS[1], true, true).unwrap();
    let cont = g.greedy_continuation(&tokens).unwrap().to_vec();
    g.evaluate(&tokens, &none).unwrap();
    g.decode_step(cont[0], &none).unwrap();
    let wrong = (cont[1] + 1) % 384;
    let msg = g.decode_step(wrong, &none).unwrap_err().to_string();
    assert!(
        msg.contains("engine chose a different token")
            && msg.contains(&format!("token {wrong} was not recorded"))
            && msg.contains(&format!("feeds {} here", cont[1])),
        "{msg}"
    );

    let msg = g
        .tokenize("something else", true, true)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("recorded prompts") && msg.contains(PROMPTS[1]),
        "{msg}"
    );
    assert!(g.tokenize(PROMPTS[0], false, true).is_err());
    assert!(g.detokenize(&tokens, false, false).is_err());
}

#[test]
fn finds_a_copy_by_content_and_explains_models_without_recordings() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("renamed.gguf");
    std::fs::copy(model(RECORDED[2].model), &copy).unwrap();
    let g = GoldenOracle::open(&fixtures_dir(), &copy).unwrap();
    assert_eq!(g.model().path, copy.display().to_string());
    assert_eq!(g.recording().model, RECORDED[2].model);

    // The bitnet-b1.58 fixture is recorded by the ggml-graph oracle.
    let g = GoldenOracle::open(&fixtures_dir(), &model(RECORDED[3].model)).unwrap();
    let from = g.identity().recorded.clone().unwrap();
    assert_eq!(from.oracle_kind, "ggml-graph");

    // A valid model with other weights (one byte of the last tensor changed) has none.
    let mut bytes = std::fs::read(model(RECORDED[0].model)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let other = tmp.path().join("other.gguf");
    std::fs::write(&other, &bytes).unwrap();
    let msg = GoldenOracle::open(&fixtures_dir(), &other)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("no recording of"), "{msg}");

    std::fs::write(&copy, b"not a model").unwrap();
    let msg = GoldenOracle::open(&fixtures_dir(), &copy)
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("no recording of") && msg.contains("models/bitnet-tq2_0.gguf"),
        "{msg}"
    );
}

#[test]
fn a_damaged_recording_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let golden = tmp.path().join("golden");
    std::fs::create_dir(&golden).unwrap();
    for f in ["index.json", "bitnet-f32.json", "bitnet-f32.f32"] {
        std::fs::copy(fixtures_dir().join("golden").join(f), golden.join(f)).unwrap();
    }
    let data = golden.join("bitnet-f32.f32");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[8] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let msg = GoldenOracle::open(tmp.path(), &model("models/bitnet-f32.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("bitnet-f32.f32: sha256"), "{msg}");
    bytes.truncate(bytes.len() - 4);
    std::fs::write(&data, &bytes).unwrap();
    let msg = GoldenOracle::open(tmp.path(), &model("models/bitnet-f32.gguf"))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("bytes, the recording says"), "{msg}");
}

/// The engine's `ggml` profile against the recorded oracle, every prompt and decode step.
/// Bounds: a few times the figures measured when the recordings were made. (bitnet.cpp's
/// recording is judged in its own numerics by compare_golden.rs.)
#[test]
fn engine_ggml_profile_agrees_with_the_recordings() {
    for r in RECORDED
        .iter()
        .filter(|r| r.oracle != RecordingOracle::BitnetCpp)
    {
        let mut g = open(r.model);
        let engine = ggml_engine(&model(r.model));
        let all = TapFilter::all();
        let (mut prompt, mut worst) = (Worst::default(), Worst::default());
        for text in PROMPTS {
            let tokens = g.tokenize(text, true, true).unwrap();
            let cont = g.greedy_continuation(&tokens).unwrap().to_vec();
            let runs = engine_run(&engine, &tokens, &cont, &all, |i| i <= TAP_DECODE_STEPS);
            let o = g.evaluate(&tokens, &all).unwrap();
            prompt.add(text, &runs[0].0, &runs[0].1, &o);
            worst.add(text, &runs[0].0, &runs[0].1, &o);
            for (s, &t) in cont.iter().enumerate() {
                let o = g.decode_step(t, &all).unwrap();
                let (logits, taps) = &runs[s + 1];
                worst.add(&format!("{text:?} step {}", s + 1), logits, taps, &o);
            }
        }
        eprintln!("engine ggml vs golden {} prompts: {prompt:?}", r.stem);
        eprintln!(
            "engine ggml vs golden {} prompts and decode steps: {worst:?}",
            r.stem
        );
        check_bounds(r.model, &prompt, &worst);
    }
}

/// The recordings are what the built-in oracle computes now, bit for bit (a stale recording
/// fails here even when the MANIFEST was updated with it).
#[cfg(feature = "llama-cpp")]
#[test]
fn recordings_match_the_live_oracle_bit_for_bit() {
    use xval_cpp_sys::OracleSettings;
    // One recording per built-in recording oracle: llama.cpp's and the ggml-graph oracle's
    // (bitnet.cpp's is checked against the live tree in oracle_bitnet_cpp.rs).
    for (r, kind) in [
        (&RECORDED[0], xval_cpp_sys::OracleKind::Builtin),
        (&RECORDED[3], xval_cpp_sys::OracleKind::GgmlGraph),
    ] {
        let mut g = open(r.model);
        let settings = OracleSettings {
            n_ctx: 256,
            ..OracleSettings::default()
        };
        let mut live = xval_cpp_sys::open(&kind, &model(r.model), &settings).unwrap();
        let all = TapFilter::all();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for text in PROMPTS {
            let tokens = live.tokenize(text, true, true).unwrap();
            assert_eq!(tokens, g.tokenize(text, true, true).unwrap(), "{text:?}");
            let (a, b) = (
                live.evaluate(&tokens, &all).unwrap(),
                g.evaluate(&tokens, &all).unwrap(),
            );
            assert_eq!(bits(&a.logits), bits(&b.logits), "{text:?}");
            assert_eq!(a.taps.len(), b.taps.len());
            for (x, y) in a.taps.iter().zip(&b.taps) {
                assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
                assert_eq!(bits(&x.data), bits(&y.data), "{text:?} {}", x.name);
            }
            assert_eq!(a.tap_sources, b.tap_sources, "{text:?}");
            for &t in g
                .greedy_continuation(&tokens)
                .unwrap()
                .to_vec()
                .iter()
                .take(3)
            {
                let (a, b) = (
                    live.decode_step(t, &all).unwrap(),
                    g.decode_step(t, &all).unwrap(),
                );
                assert_eq!(bits(&a.logits), bits(&b.logits), "{text:?}");
            }
        }
        let mut want = live.identity().clone();
        want.kind = "golden".into();
        want.recorded = g.identity().recorded.clone();
        assert_eq!(g.identity(), &want);
    }
}
