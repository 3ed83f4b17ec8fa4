//! Q6_K embeddings end to end (newer bitnet.cpp conversions store `token_embd.weight` as Q6_K):
//! `fixtures gen --embd q6_k` writes one, and `compare` passes against a live ggml oracle, which
//! reads the same bytes with ggml's own Q6_K code. The tied model covers both Q6_K paths of the
//! engine in one file: `get_rows` (the embedding, `q6_k::dequantize`) and the lm_head matmul
//! (Q8_K activations, `q6_k::vec_dot_q8_k`), against mainline llama.cpp; the untied one covers
//! `output.weight` in Q6_K, against the ggml-graph oracle (mainline's `bitnet` graph refuses an
//! untied output).
#![cfg(feature = "llama-cpp")]

mod common;

use common::{harness, path_str, stderr, stdout};
use xval_engine::gguf::{GgmlType, GgufFile};
use xval_harness::compare::Receipt;

fn gen(dir: &std::path::Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut args = vec![
        "fixtures",
        "gen",
        "--out",
        path_str(&path),
        "--embd",
        "q6_k",
        "--layers",
        "2",
        "--seed",
        "6",
    ];
    args.extend_from_slice(extra);
    let o = harness(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    path
}

fn compare_passes(dir: &std::path::Path, model: &std::path::Path, oracle: &str) {
    let out = dir.join(format!("{oracle}.json"));
    let o = harness(&[
        "compare",
        path_str(model),
        "--oracle",
        oracle,
        "--prompt",
        "The quick brown fox jumps over the lazy dog.",
        "--steps",
        "4",
        "--out",
        path_str(&out),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{oracle}: {}\n{}",
        stdout(&o),
        stderr(&o)
    );
    let r = Receipt::read(&out).unwrap();
    assert!(r.summary.passes, "{oracle}");
    let worst = r.summary.worst.as_ref().unwrap().ratio;
    assert!(worst < 1.0, "{oracle}: worst metric/limit {worst}");
}

#[test]
fn tied_q6_k_embedding_passes_against_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let model = gen(dir.path(), "q6k-tied.gguf", &[]);
    let f = GgufFile::open(&model).unwrap();
    let e = f.tensor("token_embd.weight").unwrap();
    assert_eq!(e.info.ty, GgmlType::Q6_K);
    assert_eq!(e.info.n_bytes, 384 * 256 / 256 * 210);
    assert!(
        f.tensor("output.weight").is_none(),
        "tied: lm_head is token_embd"
    );
    compare_passes(dir.path(), &model, "builtin");
}

#[test]
fn untied_q6_k_output_passes_against_ggml_graph() {
    let dir = tempfile::tempdir().unwrap();
    let model = gen(
        dir.path(),
        "q6k-untied.gguf",
        &["--arch", "bitnet-b1.58", "--format", "i2_s", "--untied"],
    );
    let f = GgufFile::open(&model).unwrap();
    for name in ["token_embd.weight", "output.weight"] {
        assert_eq!(f.tensor(name).unwrap().info.ty, GgmlType::Q6_K, "{name}");
    }
    compare_passes(dir.path(), &model, "ggml-graph");
}

#[test]
fn q6_k_embedding_needs_whole_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let o = harness(&[
        "fixtures",
        "gen",
        "--out",
        path_str(&path),
        "--embd",
        "q6_k",
        "--n-embd",
        "128",
        "--heads",
        "2",
        "--kv-heads",
        "1",
        "--format",
        "i2_s",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("not a multiple of the q6_K block size 256"),
        "{}",
        stderr(&o)
    );
    assert!(!path.exists());
}
