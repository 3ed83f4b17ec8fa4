//! `harness bench`: its `--json` contract (field names other tools read) and the arithmetic
//! behind its figures. Speeds themselves are not asserted (tests are not benchmarks); they must
//! only be positive and finite.

mod common;

use common::{fixtures_dir, harness, stderr, stdout};
use serde_json::Value;
use xval_engine::gguf::GgufFile;

fn bench_json(extra: &[&str]) -> Value {
    let mut args = vec![
        "bench",
        "fixtures/models/bitnet-tq2_0.gguf",
        "--prompt-tokens",
        "8",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = harness(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn positive(v: &Value, path: &str) -> f64 {
    let x = v
        .pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing in {v}"));
    assert!(x.is_finite() && x > 0.0, "{path} = {x}");
    x
}

#[test]
fn json_has_the_contract_fields_and_consistent_ratios() {
    let v = bench_json(&[]);
    let pp = positive(&v, "/engine/pp_tok_s");
    let tg = positive(&v, "/engine/tg_tok_s");
    // The default kernel set is `auto`: the best this CPU runs.
    assert_eq!(
        v["engine"]["kernel"],
        xval_engine::quant::kernels::Kernel::detect().name()
    );
    let name = v["peer"]["name"].as_str().unwrap();
    assert!(
        name.contains("llama.cpp") && name.contains("builtin"),
        "{name}"
    );
    let peer_pp = positive(&v, "/peer/pp_tok_s");
    let peer_tg = positive(&v, "/peer/tg_tok_s");
    assert!((positive(&v, "/ratio/pp") - pp / peer_pp).abs() < 1e-9 * pp / peer_pp);
    assert!((positive(&v, "/ratio/tg") - tg / peer_tg).abs() < 1e-9 * tg / peer_tg);
    positive(&v, "/bandwidth_gb_s");
    let bytes = positive(&v, "/decode_bytes_per_token");
    let gb_s = positive(&v, "/decode_gb_s");
    assert!((gb_s - bytes * tg / 1e9).abs() < 1e-9 * gb_s);
    assert_eq!(
        (v["threads"].as_u64(), v["prompt_tokens"].as_u64()),
        (Some(1), Some(8))
    );
    // As llama-bench times a prompt: the last position the only output.
    assert_eq!(v["prefill_outputs"], "last");
}

#[test]
fn without_a_peer_the_peer_and_ratio_are_null() {
    let v = bench_json(&["--vs", "none", "--kernel", "auto", "--all-logits"]);
    assert!(v["peer"].is_null() && v["ratio"].is_null(), "{v}");
    assert_eq!(v["prefill_outputs"], "all");
    positive(&v, "/engine/tg_tok_s");
}

/// Decode reads every tensor once per token except the embedding, of which it reads one row,
/// unless the embedding is also the (tied) lm_head; the one-element `.scale` tensors are read
/// at load.
#[test]
fn decode_bytes_per_token_is_every_weight_once() {
    let f = GgufFile::open(fixtures_dir().join("models/bitnet-tq2_0.gguf")).unwrap();
    let weights: u64 = f
        .tensors()
        .filter(|t| !t.info.name.ends_with(".scale"))
        .map(|t| t.info.n_bytes)
        .sum();
    let embd = f.tensor("token_embd.weight").unwrap().info;
    assert!(f.tensor("output.weight").is_none(), "the fixture is tied");
    let row = embd.n_bytes / embd.shape[1];
    let v = bench_json(&["--vs", "none"]);
    assert_eq!(v["decode_bytes_per_token"].as_u64(), Some(weights + row));
}

#[test]
fn a_context_too_short_is_bad_input() {
    let out = harness(&[
        "bench",
        "fixtures/models/bitnet-tq2_0.gguf",
        "--prompt-tokens",
        "250",
        "--steps",
        "16",
        "--vs",
        "none",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("need 266 positions; the model's context is 256"),
        "{}",
        stderr(&out)
    );
}

/// Against a bitnet.cpp tree (`XVAL_TEST_BITNET_CPP`), whose ggml has no op fusion: the bench
/// runs it unfused, as that tree always runs, instead of refusing (what it did when it asked
/// every peer for fusion). Skipped, saying so, without the tree.
#[test]
fn a_tree_without_op_fusion_is_benched_as_it_runs() {
    let Some(tree) = std::env::var_os("XVAL_TEST_BITNET_CPP") else {
        eprintln!("skipped: XVAL_TEST_BITNET_CPP is not set");
        return;
    };
    let peer = format!("dir:{}", tree.to_string_lossy());
    let v = bench_json(&["--vs", &peer]);
    positive(&v, "/peer/pp_tok_s");
    positive(&v, "/peer/tg_tok_s");
    let name = v["peer"]["name"].as_str().unwrap();
    assert!(name.contains(&peer), "{name}");
}
