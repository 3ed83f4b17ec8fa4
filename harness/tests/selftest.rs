//! `harness selftest` end to end: every fault of the catalogue on a `bitnet` TQ2_0 fixture
//! (built-in llama.cpp) and on the 2B-4T-architecture I2_S fixture (ggml-graph), the JSON
//! contract, the goals, and a fault restricted to a layer through `compare --fault`.
#![cfg(feature = "llama-cpp")]

mod common;

use std::process::Command;

fn fixture(name: &str) -> String {
    common::path_str(&common::fixtures_dir().join("models").join(name)).to_owned()
}

#[test]
fn every_fault_is_detected_localized_and_diagnosed_on_two_fixtures() {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["selftest", "--json"])
        .arg(fixture("bitnet-tq2_0.gguf"))
        .arg(fixture("bitnet-b1.58-i2_s.gguf"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let faults = v["faults"].as_array().unwrap();
    for f in faults {
        for key in [
            "name",
            "detected",
            "first_divergence",
            "expected_location",
            "localized",
            "diagnosis",
            "diagnosis_correct",
        ] {
            assert!(f.get(key).is_some(), "{key} missing in {f}");
        }
        if f["inert"] == true {
            continue;
        }
        assert_eq!(f["detected"], true, "{f}");
        assert_eq!(f["localized"], true, "{f}");
        assert_eq!(f["diagnosis_correct"], true, "{f}");
    }
    // The I2_S fixture takes every fault but acc-i16 (no integer sums under the ggml
    // profile), gqa-off-by-one (one KV head per query head) and output-tied (tied); the TQ2_0
    // one has no I2_S to misread (its per-tensor scales are `.scale` tensors).
    let on = |m: &str| {
        faults
            .iter()
            .filter(|f| f["model"].as_str().unwrap().ends_with(m))
            .count()
    };
    assert_eq!(on("bitnet-b1.58-i2_s.gguf"), 21);
    assert_eq!(on("bitnet-tq2_0.gguf"), 18);
    for key in ["detected_rate", "localized_rate", "diagnosis_rate"] {
        assert_eq!(v[key], 1.0, "{key}");
    }
    assert_eq!(v["false_alarms"], 0);
    assert_eq!(v["passes"], true);
    assert!(out.status.success());
}

#[test]
fn a_layered_fault_spec_goes_through_compare_and_into_the_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let receipt = dir.path().join("r.json");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "compare",
            "--steps",
            "2",
            "--fault",
            "wrong-activation@1",
            "--out",
        ])
        .arg(&receipt)
        .arg(fixture("bitnet-tq2_0.gguf"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("likely cause [activation]"),
        "the table names the cause: {stdout}"
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    assert_eq!(r["engine"]["faults"][0], "wrong-activation@1");
    assert_eq!(r["first_divergence"]["tap"], "ffn_sub_out-1");
    assert_eq!(r["summary"]["diagnosis"]["signature"], "activation");

    let bad = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["compare", "--fault", "no-bos@1"])
        .arg(fixture("bitnet-tq2_0.gguf"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not act per layer"));
}
