//! `harness oracle`: JSON and table output, and exit codes (2 bad input, 3 oracle failure).
#![cfg(feature = "llama-cpp")]

mod oracle_common;

use std::process::{Command, Output};

use oracle_common::{n_vocab, tiny_bitnet, write_model, Weights, N_LAYER};
use xval_harness::commands::worker::FAULT_ENV;

fn harness(args: &[&str], fault: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(args);
    match fault {
        Some(f) => cmd.env(FAULT_ENV, f),
        None => cmd.env_remove(FAULT_ENV),
    };
    cmd.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn json_output_has_identity_tokens_logits_and_taps() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), Weights::Tq2Scaled, 31);
    let m = model.to_str().unwrap();
    let out = harness(
        &[
            "oracle",
            m,
            "--tokens",
            "1,100,200",
            "--taps",
            "l_out-*,result_norm",
            "--json",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["oracle"]["kind"], "builtin");
    assert_eq!(v["oracle"]["settings"]["kv_type"], "f32");
    assert_eq!(v["oracle"]["settings"]["flash_attn"], false);
    assert_eq!(v["tokens"], serde_json::json!([1, 100, 200]));
    assert_eq!(v["n_vocab"], n_vocab());
    let logits = v["logits_last"].as_array().unwrap();
    assert_eq!(logits.len(), n_vocab());
    assert!(logits
        .iter()
        .all(|x| x.as_f64().is_some_and(f64::is_finite)));
    let taps = v["taps"].as_array().unwrap();
    let names: Vec<&str> = taps.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["l_out-0", "l_out-1", "result_norm"]);
    assert_eq!(taps[1]["layer"], 1);
    assert_eq!(taps[2]["layer"], serde_json::Value::Null);
    assert_eq!(taps[0]["shape"], serde_json::json!([256, 3]));
    assert_eq!(taps[0]["op"], "ADD");
}

#[test]
fn table_output_from_a_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), Weights::Tq1, 32);
    let out = harness(
        &[
            "oracle",
            model.to_str().unwrap(),
            "--prompt",
            "hello world",
            "--taps",
            "*",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("oracle    builtin (llama.cpp"), "{t}");
    assert!(t.contains("kv f32, flash-attn off, fusion off, reference kernels unavailable"));
    assert!(t.contains("tokens    [1, "), "{t}");
    assert!(t.contains("top logits at position"), "{t}");
    assert!(t.contains(&format!("taps ({}):", 15 * N_LAYER + 2)), "{t}");
    assert!(t.contains("ffn_sub_out-1      SWIGLU"), "{t}");
}

#[test]
fn exit_codes_say_whose_fault_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let model = write_model(dir.path(), Weights::Tq2, 33);
    let m = model.to_str().unwrap();
    let code = |o: &Output| o.status.code();

    // Bad input: 2.
    let missing = dir.path().join("missing.gguf");
    let o = harness(
        &["oracle", missing.to_str().unwrap(), "--tokens", "1"],
        None,
    );
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("missing.gguf"));
    let o = harness(&["oracle", m, "--tokens", "1,x"], None);
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    let oob = n_vocab().to_string();
    let o = harness(&["oracle", m, "--tokens", &oob], None);
    assert_eq!(code(&o), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("outside the vocabulary"));
    let o = harness(&["oracle", m], None);
    assert_eq!(code(&o), Some(2), "clap requires --prompt or --tokens");

    // Oracle failures: 3, with what happened.
    let o = harness(&["oracle", m, "--tokens", "1,2"], Some("abort:evaluate"));
    assert_eq!(code(&o), Some(3), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("crashed during evaluate") && err.contains("SIGABRT"),
        "{err}"
    );
    let o = harness(
        &["oracle", m, "--tokens", "1,2", "--timeout", "1"],
        Some("hang:evaluate"),
    );
    assert_eq!(code(&o), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("timed out"), "{}", text(&o.stderr));
    let b158 = dir.path().join("b158.gguf");
    tiny_bitnet(Weights::Tq2, 33, "bitnet-b1.58")
        .write_file(&b158)
        .unwrap();
    let o = harness(&["oracle", b158.to_str().unwrap(), "--tokens", "1"], None);
    assert_eq!(code(&o), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("unknown model architecture"));
}

/// `harness oracle --oracle ggml-graph` works like the built-in one: on a `bitnet` fixture the
/// same tokens, logits and taps; on the `bitnet-b1.58` fixture (which the built-in refuses) it
/// runs, in ggml's reference mode when asked.
#[test]
fn ggml_graph_oracle_from_the_cli() {
    let fixture = |n: &str| format!("{}/../fixtures/models/{n}", env!("CARGO_MANIFEST_DIR"));
    let run = |model: &str, extra: &[&str]| -> serde_json::Value {
        let mut args = vec![
            "oracle",
            model,
            "--prompt",
            "the cat sat on",
            "--taps",
            "*",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = harness(&args, None);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let tq2 = fixture("bitnet-tq2_0.gguf");
    let builtin = run(&tq2, &[]);
    let graph = run(&tq2, &["--oracle", "ggml-graph"]);
    assert_eq!(graph["oracle"]["kind"], "ggml-graph");
    for key in ["tokens", "logits_last", "taps"] {
        assert_eq!(graph[key], builtin[key], "{key}");
    }

    let i2s = fixture("bitnet-b1.58-i2_s.gguf");
    let v = run(&i2s, &["--oracle", "ggml-graph", "--reference-kernels"]);
    assert_eq!(
        v["oracle"]["settings"]["reference_kernels"]["enabled"],
        true
    );
    assert!(v["oracle"]["settings"]["model_input"]
        .as_str()
        .unwrap()
        .contains("relu^2"));
    assert!(!v["taps"].as_array().unwrap().is_empty());

    // The built-in oracle cannot switch reference mode on: it says so (exit 3).
    let out = harness(
        &["oracle", &tq2, "--tokens", "1,2", "--reference-kernels"],
        None,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("reference kernels"));
}
