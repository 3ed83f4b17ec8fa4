//! `harness compare --oracle golden`: the engine against the recorded oracle outputs, which
//! needs no C++ at run time.

use std::path::{Path, PathBuf};
use std::process::Command;

use xval_harness::compare::Receipt;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// `harness compare FIXTURE --oracle golden [ARGS] [--out OUT]`: exit code and stderr.
fn golden(model: &str, args: &[&str], out: Option<&Path>) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.args(["compare", &fixture(model), "--oracle", "golden"])
        .args(args);
    if let Some(out) = out {
        c.arg("--out").arg(out);
    }
    let o = c.output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn golden_comparison_runs_every_recorded_prompt_and_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.json");
    let (code, stderr) = golden("bitnet-tq1_0.gguf", &[], Some(&out));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("RUST-ONLY"), "{stderr}");
    for i in 0..3 {
        let r = Receipt::read(&dir.path().join(format!("g.{i}.json"))).unwrap();
        assert!(r.summary.passes);
        assert_eq!(r.oracle["kind"], "golden");
        assert!(r.mode.warning.as_deref().unwrap().contains("RUST-ONLY"));
        assert_eq!(r.decode.steps.len(), 16);
    }
    // A prompt that was not recorded is refused, listing what was.
    let (code, stderr) = golden("bitnet-tq1_0.gguf", &["--prompt", "something else"], None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("recorded prompts"), "{stderr}");
    // The I2_S fixture (arch bitnet-b1.58) is recorded by the ggml-graph oracle; the engine
    // mirrors its ggml numerics without being told.
    let out = dir.path().join("i2s.json");
    let (code, stderr) = golden(
        "bitnet-b1.58-i2_s.gguf",
        &["--prompt", "the cat sat on"],
        Some(&out),
    );
    assert_eq!(code, Some(0), "{stderr}");
    let r = Receipt::read(&out).unwrap();
    assert_eq!(r.oracle["recorded"]["oracle_kind"], "ggml-graph");
    assert_eq!(r.engine.profile, xval_engine::numerics::Profile::Ggml);
    // The `bitnet` I2_S fixture is recorded by bitnet.cpp: every recorded prompt passes with
    // the engine in bitnet.cpp's numerics (int8 rows, F16 KV, F32 batches), no C++ running.
    let out = dir.path().join("bitnet-cpp.json");
    let (code, stderr) = golden("bitnet-i2_s.gguf", &[], Some(&out));
    assert_eq!(code, Some(0), "{stderr}");
    use xval_engine::numerics::{F16Activations, KvType, Numerics, Profile};
    for i in 0..3 {
        let r = Receipt::read(&dir.path().join(format!("bitnet-cpp.{i}.json"))).unwrap();
        assert!(r.summary.passes);
        assert_eq!(r.oracle["recorded"]["oracle_kind"], "external");
        assert_eq!(
            r.pairing.engine,
            Numerics::new(Profile::BitnetCpp)
                .with_kv(KvType::F16)
                .with_f16_activations(F16Activations::F32Batches)
        );
        assert!(r.pairing.matched);
    }
}
