//! Hostile input end to end, through the command line as a user meets it: models that lie about
//! their architecture or their sizes, tokenizers with duplicate or missing tokens, receipts
//! edited by hand, thresholds files with unknown keys or negative limits. Each must give a
//! message naming the file and what is wrong, and exit 2 (bad input); none may panic (101).

mod common;

use std::path::{Path, PathBuf};

use common::{fixtures_dir, harness, path_str, stderr};
use xval_engine::gguf::Value;
use xval_harness::fixtures::model::{build_model, Arch, ModelSpec, WeightFormat};
use xval_harness::fixtures::vocab::Vocab;

/// Run the harness and require a clean bad-input exit whose message contains every `needle`.
fn refused(args: &[&str], needles: &[&str]) {
    let out = harness(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: no {n:?} in: {err}");
    }
}

/// `harness run`, `harness compare` (built-in oracle) and `harness selftest` on a bad model all
/// refuse it with the same reasons.
fn every_command_refuses(model: &Path, needles: &[&str]) {
    let m = path_str(model);
    refused(&["run", m, "-p", "Hello", "-n", "1"], needles);
    refused(
        &["compare", m, "--tokens", "1,2,3", "--steps", "0"],
        needles,
    );
    refused(&["selftest", m], needles);
}

/// A copy of a GGUF file with its metadata edited and some tensors dropped.
fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl Fn(&str, &Value) -> Option<Value>,
    keep: impl Fn(&str) -> bool,
) {
    common::rewrite_gguf(src, dst, edit, None, keep)
}

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join("models").join(name)
}

#[test]
fn a_tensor_declared_larger_than_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("bitnet-tq2_0.gguf")).unwrap();
    // The descriptor: name, n_dims (u32), then the dims (u64 each). Double ne1 of one matrix
    // in the header; the data section stays as it was.
    let name = b"blk.0.ffn_up.weight";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("the descriptor");
    let ne1 = at + name.len() + 4 + 8;
    let old = u64::from_le_bytes(bytes[ne1..ne1 + 8].try_into().unwrap());
    bytes[ne1..ne1 + 8].copy_from_slice(&(old * 1000).to_le_bytes());
    let model = tmp.path().join("oversized.gguf");
    std::fs::write(&model, bytes).unwrap();
    refused(&["inspect", path_str(&model)], &["oversized.gguf"]);
    every_command_refuses(&model, &["oversized.gguf"]);
}

#[test]
fn a_bitnet_b158_header_over_a_llama_model() {
    // A llama-style model: F16 projections and no sub-norms, under the 2B-4T architecture name.
    let tmp = tempfile::tempdir().unwrap();
    let spec = ModelSpec {
        arch: Arch::BitnetB158,
        weights: WeightFormat::F16,
        scale_tensors: false,
        n_layer: 1,
        ..ModelSpec::tiny_bitnet(WeightFormat::F16)
    };
    let built = tmp.path().join("built.gguf");
    build_model(&spec, &Vocab::small())
        .unwrap()
        .write_file(&built)
        .unwrap();
    let model = tmp.path().join("llama-as-bitnet.gguf");
    rewrite(
        &built,
        &model,
        |_, v| Some(v.clone()),
        |t| !t.contains("sub_norm"),
    );
    every_command_refuses(
        &model,
        &["llama-as-bitnet.gguf", "blk.0.attn_sub_norm.weight"],
    );
}

#[test]
fn a_tokenizer_with_a_duplicate_token() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("dup-token.gguf");
    rewrite(
        &fixture("bitnet-tq2_0.gguf"),
        &model,
        |k, v| match (k, v) {
            ("tokenizer.ggml.tokens", Value::Array(ty, items)) => {
                let mut items = items.clone();
                items[300] = items[299].clone();
                Some(Value::Array(*ty, items))
            }
            _ => Some(v.clone()),
        },
        |_| true,
    );
    every_command_refuses(&model, &["dup-token.gguf", "appears at ids 299 and 300"]);
}

#[test]
fn a_tokenizer_with_missing_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    // Fewer token texts than the embedding has rows: ids the model can produce have no text.
    let short = tmp.path().join("short-vocab.gguf");
    rewrite(
        &fixture("bitnet-tq2_0.gguf"),
        &short,
        |k, v| match (k, v) {
            ("tokenizer.ggml.tokens", Value::Array(ty, items)) => {
                Some(Value::Array(*ty, items[..380].to_vec()))
            }
            ("tokenizer.ggml.token_type", Value::Array(ty, items)) => {
                Some(Value::Array(*ty, items[..380].to_vec()))
            }
            _ => Some(v.clone()),
        },
        |_| true,
    );
    every_command_refuses(&short, &["short-vocab.gguf", "380", "384"]);

    // No tokenizer at all.
    let none = tmp.path().join("no-tokenizer.gguf");
    rewrite(
        &fixture("bitnet-tq2_0.gguf"),
        &none,
        |k, v| (!k.starts_with("tokenizer.")).then(|| v.clone()),
        |_| true,
    );
    every_command_refuses(&none, &["no-tokenizer.gguf", "the file has no tokenizer"]);

    // A byte with no token: the text of id 72 ('H') replaced, so a lone "H" cannot be encoded.
    let gap = tmp.path().join("byte-gap.gguf");
    rewrite(
        &fixture("bitnet-tq2_0.gguf"),
        &gap,
        |k, v| match (k, v) {
            ("tokenizer.ggml.tokens", Value::Array(ty, items)) => {
                let mut items = items.clone();
                items[72] = Value::String("[gap]".into());
                Some(Value::Array(*ty, items))
            }
            _ => Some(v.clone()),
        },
        |_| true,
    );
    refused(
        &["run", path_str(&gap), "-p", "H", "-n", "1"],
        &["byte-gap.gguf", "'H'"],
    );
    refused(
        &["compare", path_str(&gap), "-p", "H", "--steps", "0"],
        &["byte-gap.gguf", "'H'"],
    );
}

/// A hand edit of a receipt's JSON.
type Edit = fn(&mut serde_json::Value);

#[test]
fn a_receipt_edited_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let src = common::repo_root().join("receipts/bitnet-tq2_0.ggml.json");
    let receipt: serde_json::Value = serde_json::from_slice(&std::fs::read(src).unwrap()).unwrap();
    let cases: [(&str, Edit, &[&str]); 5] = [
        (
            "verdict.json",
            |r| r["summary"]["verdict"] = "GREAT".into(),
            &["summary.verdict", "unknown variant `GREAT`"],
        ),
        (
            "index.json",
            |r| r["input"]["prompt_index"] = (-3).into(),
            &["input.prompt_index", "-3"],
        ),
        (
            "metric.json",
            |r| r["taps"][2]["worst"]["nmse"] = "small".into(),
            &["taps[2].worst.nmse"],
        ),
        (
            "missing.json",
            |r| {
                r["thresholds"].as_object_mut().unwrap().remove("key");
            },
            &["field `thresholds`", "missing field `key`"],
        ),
        (
            "version.json",
            |r| r["schema_version"] = 1.into(),
            &["schema_version 1", "reads version 2"],
        ),
    ];
    for (name, edit, needles) in cases {
        let mut r = receipt.clone();
        edit(&mut r);
        let path = tmp.path().join(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&r).unwrap()).unwrap();
        let mut want = vec![name];
        want.extend_from_slice(needles);
        refused(&["gate", path_str(&path)], &want);
    }
}

#[test]
fn a_thresholds_file_with_unknown_keys_or_negative_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let toml = std::fs::read_to_string(common::repo_root().join("ci/thresholds.toml")).unwrap();
    let receipt = common::repo_root().join("receipts/bitnet-tq2_0.ggml.json");
    let cases = [
        (
            "negative.toml",
            toml.replacen("max_replay_nmse = 1e-10", "max_replay_nmse = -1e-10", 1),
            vec!["max_replay_nmse", "must be a non-negative number"],
        ),
        (
            "typo.toml",
            toml.replacen("[[rule]]", "[[rule]]\nmax_replay_nsme = 1e-3", 1),
            vec!["unknown field `max_replay_nsme`", "line "],
        ),
        (
            "top.toml",
            format!("strictness = 3\n{toml}"),
            vec!["unknown field `strictness`"],
        ),
        (
            "nan.toml",
            toml.replacen("k = 10.0", "k = nan", 1),
            vec!["[chained] k", "must be a positive number"],
        ),
    ];
    for (name, text, needles) in cases {
        assert_ne!(text, toml, "{name}: the edit must change the file");
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut want = vec![name];
        want.extend(needles);
        refused(
            &["gate", path_str(&receipt), "--thresholds", path_str(&path)],
            &want,
        );
        refused(
            &[
                "compare",
                "fixtures/models/bitnet-tq2_0.gguf",
                "--tokens",
                "1,2",
                "--steps",
                "0",
                "--thresholds",
                path_str(&path),
            ],
            &want,
        );
    }
}
