//! `harness inspect` on the committed fixtures and on broken files.

mod common;
use common::*;
use serde_json::Value as Json;

fn inspect_json(path: &std::path::Path) -> Json {
    let out = harness(&["inspect", "--json", path_str(path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn shapes(j: &Json) -> std::collections::HashMap<String, (String, Vec<u64>)> {
    j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap());
            (
                t["name"].as_str().unwrap().to_string(),
                (t["type"].as_str().unwrap().to_string(), shape.collect()),
            )
        })
        .collect()
}

#[test]
fn bitnet_fixtures_have_the_designed_tensors() {
    for (file, ty) in [("tq2_0", "tq2_0"), ("tq1_0", "tq1_0"), ("f32", "f32")] {
        let j = inspect_json(&fixtures_dir().join(format!("models/bitnet-{file}.gguf")));
        assert_eq!(j["architecture"], "bitnet");
        assert_eq!(j["version"], 3);
        assert_eq!(j["alignment"], 32);
        assert_eq!(j["type_dialect"], "mainline");
        // token_embd + output_norm + 2 layers x (4 norms + 7 projections + 7 scales)
        assert_eq!(j["tensors"].as_array().unwrap().len(), 2 + 2 * 18);
        let t = shapes(&j);
        assert_eq!(t["token_embd.weight"], ("f16".into(), vec![256, 384]));
        assert_eq!(t["output_norm.weight"], ("f32".into(), vec![256]));
        assert!(!t.contains_key("output.weight"));
        for il in 0..2 {
            let get = |s: &str| t[&format!("blk.{il}.{s}")].clone();
            assert_eq!(get("attn_q.weight"), (ty.into(), vec![256, 256]));
            assert_eq!(get("attn_k.weight"), (ty.into(), vec![256, 128]));
            assert_eq!(get("attn_v.weight"), (ty.into(), vec![256, 128]));
            assert_eq!(get("attn_output.weight"), (ty.into(), vec![256, 256]));
            assert_eq!(get("ffn_gate.weight"), (ty.into(), vec![256, 512]));
            assert_eq!(get("ffn_up.weight"), (ty.into(), vec![256, 512]));
            assert_eq!(get("ffn_down.weight"), (ty.into(), vec![512, 256]));
            assert_eq!(get("ffn_down.scale"), ("f32".into(), vec![1]));
            assert_eq!(get("attn_sub_norm.weight"), ("f32".into(), vec![256]));
            assert_eq!(get("ffn_sub_norm.weight"), ("f32".into(), vec![512]));
        }
        let m = &j["metadata"];
        assert_eq!(m["bitnet.attention.head_count_kv"], 2);
        assert_eq!(m["bitnet.rope.freq_base"], 10000.0);
        assert_eq!(m["bitnet.rope.dimension_count"], 64);
        assert_eq!(m["bitnet.attention.layer_norm_rms_epsilon"], 1e-5);
        assert_eq!(m["tokenizer.ggml.pre"], "llama-bpe");
        assert_eq!(m["tokenizer.ggml.tokens"]["len"], 384);
        let tok = &j["tokenizer"];
        assert_eq!(tok["vocab_size"], 384);
        assert_eq!(tok["merges"], 125);
        assert_eq!(tok["bos_text"], "<|begin_of_text|>");
        assert_eq!(tok["eos_text"], "<|end_of_text|>");
    }
}

#[test]
fn i2_s_fixture_mirrors_the_official_layout() {
    let j = inspect_json(&fixtures_dir().join("models/bitnet-b1.58-i2_s.gguf"));
    assert_eq!(j["architecture"], "bitnet-b1.58");
    assert_eq!(j["type_dialect"], "bitnet-cpp");
    assert_eq!(j["tensors"].as_array().unwrap().len(), 2 + 3 * 11);
    let t = shapes(&j);
    assert_eq!(t["blk.2.attn_k.weight"], ("i2_s".into(), vec![256, 64]));
    assert_eq!(t["blk.2.ffn_down.weight"], ("i2_s".into(), vec![512, 256]));
    assert!(!t.keys().any(|k| k.ends_with(".scale")));
    let q = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q["i2s_layout"], "block128");
    assert_eq!(q["bytes"], 256 * 256 / 4 + 32);
    let base = 1.0 / (2.0f64 / 3.0 * 256.0).sqrt();
    let f = q["i2s_scale"].as_f64().unwrap() / base;
    assert!(
        [0.75, 0.875, 1.0, 1.125, 1.25]
            .iter()
            .any(|g| (f - g).abs() < 1e-6),
        "{f}"
    );
    let m = &j["metadata"];
    assert!(m.get("tokenizer.ggml.pre").is_none());
    assert_eq!(j["tokenizer"]["pre_effective"], "default");
    assert_eq!(m["bitnet-b1.58.vocab_size"], 384);
    assert_eq!(m["bitnet-b1.58.attention.head_count_kv"], 1);
    assert_eq!(m["bitnet-b1.58.rope.freq_base"], 500000.0);
}

#[test]
fn text_form_describes_the_file() {
    let path = fixtures_dir().join("models/bitnet-b1.58-i2_s.gguf");
    let out = harness(&["inspect", path_str(&path)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "GGUF version:  3",
        "type dialect:  bitnet-cpp (type id 36",
        "pre-tokenizer  absent -> default",
        "BOS            381 \"<|begin_of_text|>\"",
        "layout block128 (official default), scale 0.",
        "bitnet-b1.58.block_count",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn full_arrays_prints_every_token() {
    let path = fixtures_dir().join("models/bitnet-tq2_0.gguf");
    let out = harness(&["inspect", "--json", "--full-arrays", path_str(&path)]);
    let j: Json = serde_json::from_slice(&out.stdout).unwrap();
    let tokens = j["metadata"]["tokenizer.ggml.tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 384);
    assert_eq!(tokens[32], "Ġ");
    assert_eq!(tokens[383], "<|eot_id|>");
}

#[test]
fn truncated_and_foreign_files_exit_2_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures_dir().join("models/bitnet-tq2_0.gguf")).unwrap();

    // Cut inside the data section: the last tensor runs past the end.
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let out = harness(&["inspect", path_str(&cut)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains("cut.gguf") && err.contains("blk.1.ffn_down") && err.contains("truncated"),
        "{err}"
    );

    // Cut inside the metadata: names the key and the byte offset.
    let head = tmp.path().join("head.gguf");
    std::fs::write(&head, &bytes[..3000]).unwrap();
    let out = harness(&["inspect", "--json", path_str(&head)]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("malformed GGUF at byte") && err.contains("metadata"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    let text = tmp.path().join("notes.txt");
    std::fs::write(&text, b"hello, not a model").unwrap();
    let out = harness(&["inspect", path_str(&text)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a GGUF file"), "{}", stderr(&out));

    let out = harness(&["inspect", path_str(&tmp.path().join("absent.gguf"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("absent.gguf"), "{}", stderr(&out));
}

#[test]
fn help_documents_exit_codes_and_bad_arguments_exit_2() {
    let out = harness(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    assert!(
        help.contains("Exit codes") && help.contains("3  oracle failure"),
        "{help}"
    );
    assert_eq!(harness(&["inspect"]).status.code(), Some(2));
    assert_eq!(harness(&["no-such-command"]).status.code(), Some(2));
}
