//! The built-in llama.cpp oracle in-process: taps (names, ops, layout), logits, decode steps,
//! determinism, tokenizer calls, identity, the I2_S transcode path and its refusals.
#![cfg(feature = "llama-cpp")]

mod oracle_common;

use std::collections::BTreeSet;

use oracle_common::{n_vocab, tiny_bitnet, write_model, Weights, N_LAYER};
use xval_cpp_sys::llama_cpp::LlamaCppOracle;
use xval_cpp_sys::{Error, Evaluation, Oracle, OracleSettings};
use xval_engine::sampling::argmax;
use xval_engine::taps::{all_names, split_name, TapFilter};

const PROMPT: [u32; 7] = [1, 100, 200, 270, 5, 9, 40];

fn load(path: &std::path::Path) -> LlamaCppOracle {
    LlamaCppOracle::load(path, &OracleSettings::default()).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The op llama.cpp's bitnet graph gives each tag's last node (src/models/bitnet.cpp and
/// llm_graph_context::build_qkv/build_ffn/build_attn in the pinned tree), with the 0-based
/// occurrence kept and the number of nodes carrying the name.
fn expected_source(tag: &str) -> (&'static str, usize, usize) {
    match tag {
        "Qcur" | "Kcur" => ("ROPE", 2, 3), // scaled MUL, RESHAPE, ROPE
        "Vcur" => ("RESHAPE", 1, 2),       // scaled MUL, RESHAPE
        "kqv_out" => ("CONT", 0, 1),
        "ffn_inp" | "l_out" => ("ADD", 0, 1),
        "ffn_up" | "ffn_gate" | "result_output" => ("MUL_MAT", 0, 1),
        "ffn_sub_out" => ("SWIGLU", 0, 1),
        _ => ("MUL", 0, 1), // norms (after the weight), scaled projections
    }
}

fn check_layout(e: &Evaluation, n: usize) {
    for t in &e.taps {
        let (tag, layer) = split_name(&t.name);
        let width = match tag {
            "ffn_up" | "ffn_up_s" | "ffn_gate" | "ffn_gate_s" | "ffn_sub_out" | "ffn_sub_norm" => {
                vec![512]
            }
            "Qcur" => vec![64, 4],
            "Kcur" | "Vcur" => vec![64, 2],
            "result_output" => vec![n_vocab()],
            _ => vec![256],
        };
        let want: Vec<usize> = width.into_iter().chain([n]).collect();
        assert_eq!(t.shape, want, "{}", t.name);
        assert_eq!(t.data.len(), want.iter().product::<usize>(), "{}", t.name);
        assert_eq!(t.layer(), layer);
        assert!(t.data.iter().all(|x| x.is_finite()), "{}", t.name);
    }
}

#[test]
fn taps_cover_the_catalogue_with_llamas_ops_and_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = load(&write_model(dir.path(), Weights::Tq2Scaled, 1));
    let e = o.evaluate(&PROMPT, &TapFilter::all()).unwrap();

    // With .scale tensors every engine tap exists in llama.cpp's graph, in graph order.
    let names: Vec<&str> = e.taps.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, all_names(N_LAYER));
    for s in &e.tap_sources {
        let want = expected_source(split_name(&s.name).0);
        assert_eq!(
            (s.op.as_str(), s.occurrence, s.occurrences),
            want,
            "{}",
            s.name
        );
    }
    check_layout(&e, PROMPT.len());

    // The logits tap is the logits, position by position: the capture reads the layout right.
    let out = e.tap("result_output").unwrap();
    for p in 0..PROMPT.len() {
        assert_eq!(bits(out.row(p)), bits(e.logits_row(p)), "position {p}");
    }

    // What llama.cpp names beyond the engine's catalogue (reported, not an error).
    let catalogue: BTreeSet<String> = all_names(N_LAYER).into_iter().collect();
    let extras: BTreeSet<(String, String)> = e
        .graph
        .iter()
        .filter(|g| g.is_named_by_model() && !catalogue.contains(&g.name))
        .map(|g| (split_name(&g.name).0.to_string(), g.op.clone()))
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("embd", "GET_ROWS"),
        ("norm", "RMS_NORM"),
        ("kq", "MUL_MAT"),
        ("kq_soft_max", "SOFT_MAX"),
        ("kqv", "MUL_MAT"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(extras, want);
}

#[test]
fn without_scale_tensors_the_scale_taps_are_absent() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = load(&write_model(dir.path(), Weights::Tq2, 2));
    let e = o.evaluate(&PROMPT[..3], &TapFilter::parse("*")).unwrap();
    let got: BTreeSet<String> = e.taps.iter().map(|t| t.name.clone()).collect();
    let lacking: Vec<String> = all_names(N_LAYER)
        .into_iter()
        .filter(|n| !got.contains(n))
        .collect();
    assert_eq!(
        lacking,
        ["ffn_up_s-0", "ffn_gate_s-0", "ffn_up_s-1", "ffn_gate_s-1"]
    );
    check_layout(&e, 3);
}

#[test]
fn tap_filter_selects_and_taps_do_not_change_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = load(&write_model(dir.path(), Weights::Tq1, 3));
    let none = o.evaluate(&PROMPT, &TapFilter::none()).unwrap();
    assert!(none.taps.is_empty());
    // The inventory is there even when nothing is captured.
    assert!(none.graph.iter().any(|g| g.name == "l_out-1"));
    let some = o
        .evaluate(&PROMPT, &TapFilter::parse("l_out-*,result_norm"))
        .unwrap();
    let names: Vec<&str> = some.taps.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["l_out-0", "l_out-1", "result_norm"]);
    let all = o.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    // Capturing splits the graph computation at every tap; with fusion off that must not move
    // a single bit.
    assert_eq!(bits(&none.logits), bits(&some.logits));
    assert_eq!(bits(&none.logits), bits(&all.logits));
    assert_eq!(
        bits(&some.tap("l_out-1").unwrap().data),
        bits(&all.tap("l_out-1").unwrap().data)
    );
}

#[test]
fn same_input_same_bits_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), Weights::Tq2, 4);
    let mut one = load(&path);
    let a = one.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    let b = one.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    assert_eq!(bits(&a.logits), bits(&b.logits));
    let mut two = LlamaCppOracle::load(
        &path,
        &OracleSettings {
            threads: 2,
            ..OracleSettings::default()
        },
    )
    .unwrap();
    assert_eq!(two.identity().settings.threads, 2);
    let c = two.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    assert_eq!(bits(&a.logits), bits(&c.logits));
    for (x, y) in a.taps.iter().zip(&c.taps) {
        assert_eq!(bits(&x.data), bits(&y.data), "{}", x.name);
    }
}

#[test]
fn decode_steps_continue_through_the_kv_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = load(&write_model(dir.path(), Weights::Tq2Scaled, 5));
    let full = o.evaluate(&PROMPT, &TapFilter::none()).unwrap();
    let prefix = o.evaluate(&PROMPT[..5], &TapFilter::none()).unwrap();
    assert_eq!(prefix.start_pos, 0);
    for (i, &t) in PROMPT[5..].iter().enumerate() {
        let step = o.decode_step(t, &TapFilter::all()).unwrap();
        let pos = 5 + i;
        assert_eq!((step.start_pos, step.tokens.as_slice()), (pos, &[t][..]));
        check_layout(&step, 1);
        // One token through the cache vs the same position in one batch: the matmul paths
        // differ (batch of 1 vs 7), so not bit for bit, but far inside any threshold.
        let (a, b) = (full.logits_row(pos), step.logits_row(0));
        let max = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(max < 1e-4, "position {pos}: max |diff| {max}");
        assert_eq!(argmax(a), argmax(b), "position {pos}");
    }
    // A fresh evaluation restarts the sequence: same numbers as the first time.
    let again = o.evaluate(&PROMPT, &TapFilter::none()).unwrap();
    assert_eq!(bits(&again.logits), bits(&full.logits));
}

#[test]
fn i2s_model_runs_through_the_lossless_transcode() {
    let dir = tempfile::tempdir().unwrap();
    let mut i2s = load(&write_model(dir.path(), Weights::I2s, 6));
    let mut tq2 = load(&write_model(dir.path(), Weights::Tq2Scaled, 6));
    assert!(
        i2s.identity()
            .settings
            .model_input
            .contains("transcoded: 14 I2_S"),
        "{}",
        i2s.identity().settings.model_input
    );
    assert_eq!(tq2.identity().settings.model_input, "as given");
    let a = i2s.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    let b = tq2.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    // Same codes, same scales, same graph: the same bits.
    assert_eq!(bits(&a.logits), bits(&b.logits));
    assert_eq!(a.taps.len(), b.taps.len());
}

#[test]
fn tokenizer_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = load(&write_model(dir.path(), Weights::Tq2, 7));
    let ids = o.tokenize("hello world", true, false).unwrap();
    assert_eq!(ids[0], 1, "BOS first: {ids:?}");
    assert!(ids.iter().all(|&t| (t as usize) < n_vocab()));
    // SentencePiece adds the leading space; detokenize keeps it, and drops BOS either way.
    assert_eq!(o.detokenize(&ids, false, false).unwrap(), b" hello world");
    assert_eq!(o.tokenize("hello world", false, false).unwrap(), ids[1..]);
    assert_eq!(o.token_piece(1, true).unwrap(), b"<s>");
    assert_eq!(o.token_piece(1, false).unwrap(), b"");
    assert_eq!(o.token_piece(3 + b'w' as u32, false).unwrap(), b"w");
    // Special-token text becomes the special token only when asked to.
    assert_eq!(o.tokenize("</s>", false, true).unwrap(), [2]);
    assert_ne!(o.tokenize("</s>", false, false).unwrap(), [2]);
}

#[test]
fn identity_records_build_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let o = load(&write_model(dir.path(), Weights::Tq2, 8));
    let id = o.identity();
    assert_eq!(id.kind, "builtin");
    assert!(id.version.starts_with("llama.cpp "), "{}", id.version);
    assert_eq!(id.build.source, "crates.io llama-cpp-sys-2 0.1.161");
    assert_eq!(
        id.build.source_vcs.as_deref(),
        Some("utilityai/llama-cpp-rs@e7af607ebd5ec2932709ef918c17cca2f9b0fce4")
    );
    assert_eq!(id.build.source_sha256.len(), 64);
    assert_eq!(id.build.build_type, "Release");
    assert_eq!(
        id.build.flags.get("GGML_OPENMP").map(String::as_str),
        Some("OFF")
    );
    assert_eq!(
        id.build.flags.get("GGML_NATIVE").map(String::as_str),
        Some("OFF")
    );
    assert!(
        id.build.system_info.contains("CPU"),
        "{}",
        id.build.system_info
    );
    let s = &id.settings;
    assert_eq!(
        (s.kv_type.name(), s.flash_attn, s.fusion),
        ("f32", false, false)
    );
    assert!(!s.reference_kernels.available && !s.reference_kernels.enabled);
    assert!(s.n_batch >= 512 && s.n_ubatch >= 512 && s.n_ctx >= 512);
    let m = o.model();
    assert_eq!(
        (
            m.architecture.as_str(),
            m.n_layer,
            m.n_embd,
            m.n_head,
            m.n_head_kv,
            m.n_vocab
        ),
        ("bitnet", N_LAYER, 256, 4, 2, n_vocab())
    );
}

#[test]
fn bad_requests_and_settings_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), Weights::Tq2, 9);
    // Load the default oracle first, so that this process latches fusion off whatever order
    // the tests run in.
    let mut o = load(&path);
    let bad = |r: Result<Evaluation, Error>| match r {
        Err(e @ Error::InvalidRequest(_)) => e.to_string(),
        other => panic!("expected an invalid request, got {other:?}"),
    };
    let m = bad(o.decode_step(1, &TapFilter::none()));
    assert!(m.contains("without a successfully evaluated prefix"), "{m}");
    let m = bad(o.evaluate(&[1, n_vocab() as u32], &TapFilter::none()));
    assert!(m.contains("outside the vocabulary"), "{m}");
    bad(o.evaluate(&[], &TapFilter::none()));
    let long = vec![1u32; 600];
    assert!(bad(o.evaluate(&long, &TapFilter::none())).contains("exceed"));
    // The oracle still works after refused requests.
    o.evaluate(&PROMPT, &TapFilter::none()).unwrap();

    let refuse = |settings: OracleSettings| match LlamaCppOracle::load(&path, &settings) {
        Err(Error::Unsupported(m)) => m,
        Err(e) => panic!("expected unsupported, got {e}"),
        Ok(_) => panic!("expected unsupported, got an oracle"),
    };
    let m = refuse(OracleSettings {
        reference_kernels: true,
        ..OracleSettings::default()
    });
    assert!(m.contains("ggml_backend_cpu_set_use_ref"), "{m}");
    let m = refuse(OracleSettings {
        fusion: true,
        ..OracleSettings::default()
    });
    assert!(m.contains("GGML_CPU_DISABLE_FUSION"), "{m}");
}

#[test]
fn models_llama_cannot_run_are_errors_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    // bitnet-b1.58 (ReLU^2) is not a mainline architecture.
    let path = dir.path().join("b158.gguf");
    tiny_bitnet(Weights::Tq2, 10, "bitnet-b1.58")
        .write_file(&path)
        .unwrap();
    match LlamaCppOracle::load(&path, &OracleSettings::default()) {
        Err(Error::Load { reason, .. }) => {
            assert!(reason.contains("unknown model architecture"), "{reason}")
        }
        Err(e) => panic!("expected a load error, got {e}"),
        Ok(_) => panic!("mainline llama.cpp cannot run bitnet-b1.58"),
    }
    // Not a GGUF at all: our reader names the problem before llama.cpp sees the file.
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    match LlamaCppOracle::load(&junk, &OracleSettings::default()) {
        Err(e @ Error::BadModel { .. }) => assert!(e.is_bad_input()),
        Err(e) => panic!("expected a bad model, got {e}"),
        Ok(_) => panic!("junk loaded"),
    }
    match LlamaCppOracle::load(&dir.path().join("missing.gguf"), &OracleSettings::default()) {
        Err(e @ Error::BadModel { .. }) => assert!(e.to_string().contains("missing.gguf")),
        Err(e) => panic!("expected a bad model, got {e}"),
        Ok(_) => panic!("a missing file loaded"),
    }
}
