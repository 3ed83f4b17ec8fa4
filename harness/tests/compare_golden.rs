//! `harness compare --oracle golden`: the engine against the recorded oracle outputs, which
//! needs no C++ at run time.

use std::path::PathBuf;
use std::process::Command;

use xval_harness::compare::Receipt;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn golden_comparison_runs_every_recorded_prompt_and_says_so_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.json");
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "compare",
            &fixture("bitnet-tq1_0.gguf"),
            "--oracle",
            "golden",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("RUST-ONLY"), "{stderr}");
    for i in 0..3 {
        let r = Receipt::read(&dir.path().join(format!("g.{i}.json"))).unwrap();
        assert!(r.summary.passes);
        assert_eq!(r.oracle["kind"], "golden");
        assert!(r.mode.warning.as_deref().unwrap().contains("RUST-ONLY"));
        assert_eq!(r.decode.steps.len(), 16);
    }
    // A prompt that was not recorded is refused, listing what was.
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "compare",
            &fixture("bitnet-tq1_0.gguf"),
            "--oracle",
            "golden",
        ])
        .args(["--prompt", "something else"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("recorded prompts"), "{stderr}");
    // The I2_S fixture (arch bitnet-b1.58) is recorded by the ggml-graph oracle; the engine
    // mirrors its ggml numerics without being told.
    let out = dir.path().join("i2s.json");
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "compare",
            &fixture("bitnet-b1.58-i2_s.gguf"),
            "--oracle",
            "golden",
            "--prompt",
            "the cat sat on",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    let r = Receipt::read(&out).unwrap();
    assert_eq!(r.oracle["recorded"]["oracle_kind"], "ggml-graph");
    assert_eq!(r.engine.profile, xval_engine::numerics::Profile::Ggml);
    // The `bitnet` I2_S fixture is recorded by bitnet.cpp: every recorded prompt passes with
    // the engine in bitnet.cpp's numerics (int8 rows, F16 KV, F32 batches), no C++ running.
    let out = dir.path().join("bitnet-cpp.json");
    let o = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "compare",
            &fixture("bitnet-i2_s.gguf"),
            "--oracle",
            "golden",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
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
