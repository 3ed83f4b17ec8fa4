//! Depth on every CI run: a deep, narrow generated model (24 layers, width 256) compared with
//! the built-in llama.cpp over several prompts and decode steps must pass (the chained limits
//! follow the noise twin, not constants fitted to 2-3 layers), and faults at the first, middle
//! and last layer and in the decode KV path must still be caught where they sit.
#![cfg(feature = "llama-cpp")]

mod common;

use xval_harness::compare::Receipt;
use xval_harness::fixtures::{build_model, ModelSpec, Vocab, WeightFormat};

const LAYERS: u32 = 24;

fn deep_model(dir: &std::path::Path) -> std::path::PathBuf {
    // The committed TQ2_0 fixture's shape, deeper and narrower.
    let spec = ModelSpec {
        name: "xval deep narrow".into(),
        n_ff: 256,
        n_layer: LAYERS,
        n_head_kv: 1,
        seed: 0xdee9,
        ..ModelSpec::tiny_bitnet(WeightFormat::Tq2_0)
    };
    let path = dir.join("deep.gguf");
    build_model(&spec, &Vocab::small())
        .unwrap()
        .write_file(&path)
        .unwrap();
    path
}

#[test]
fn a_deep_narrow_model_passes_and_its_faults_are_caught_where_they_sit() {
    let dir = tempfile::tempdir().unwrap();
    let model = deep_model(dir.path());
    let s = common::path_str;
    let prompts = dir.path().join("prompts.txt");
    std::fs::write(
        &prompts,
        "The quick brown fox jumps over the lazy dog.\nHi, World! 42\nIn 1492, Columbus sailed.\n",
    )
    .unwrap();
    let out = dir.path().join("clean.json");
    let o = common::harness(&[
        "compare",
        s(&model),
        "--prompts",
        s(&prompts),
        "--steps",
        "8",
        "--out",
        s(&out),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stdout(&o));
    for i in 0..3 {
        let r = Receipt::read(&dir.path().join(format!("clean.{i}.json"))).unwrap();
        assert!(r.summary.passes, "prompt {i}");
        assert_eq!(
            r.taps.iter().filter_map(|t| t.layer).max(),
            Some(LAYERS as usize - 1)
        );
        // The limits follow the model: the deepest layers get looser chained limits than the
        // first, because the twin drifts more there.
        let limit = |name: &str| {
            r.taps
                .iter()
                .find(|t| t.name == name)
                .unwrap()
                .limit
                .max_nmse
        };
        assert!(limit("l_out-23") > limit("l_out-0"), "prompt {i}");
        let worst = r.summary.worst.as_ref().unwrap().ratio;
        assert!(worst < 1.0, "prompt {i}: worst metric/limit {worst}");
    }
    let fault = |spec: &str| {
        let out = dir.path().join("fault.json");
        let o = common::harness(&[
            "compare",
            s(&model),
            "--prompt",
            "The quick brown fox",
            "--steps",
            "3",
            "--fault",
            spec,
            "--out",
            s(&out),
        ]);
        assert_eq!(o.status.code(), Some(1), "{spec}: {}", common::stdout(&o));
        Receipt::read(&out).unwrap().first_divergence.unwrap()
    };
    for l in [0, LAYERS / 2, LAYERS - 1] {
        let fd = fault(&format!("scale:blk.{l}.ffn_down.weight:1.01"));
        assert_eq!(
            (fd.tap.as_str(), fd.step),
            (&*format!("ffn_down-{l}"), None)
        );
        assert_eq!(fd.crossing.metric, "replay_nmse");
    }
    let fd = fault("kv-one-short");
    assert_eq!((fd.tap.as_str(), fd.step), ("kqv_out-0", Some(0)));
}
