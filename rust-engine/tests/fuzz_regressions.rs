//! Every input a fuzz target found a bug with (fuzz/regressions/<target>/, docs/fuzzing.md),
//! replayed through the code path of its target on each test run: the GGUF reader and codecs
//! (`gguf_parse`), and the model loader, the tokenizer and one forward pass (`gguf_model`).
//! The harness-side targets' regressions replay in harness/tests/fuzz_regressions.rs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use xval_engine::gguf::GgufFile;
use xval_engine::model::{Engine, Model};
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant;
use xval_engine::taps::TapFilter;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    // A target without a finding has no folder (git keeps no empty ones).
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[test]
fn gguf_model_regressions_load_or_fail_cleanly() {
    let files = inputs("gguf_model");
    assert!(!files.is_empty());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let Ok(file) = GgufFile::from_bytes(bytes, "regression") else {
            continue;
        };
        let Ok(model) = Model::load(Arc::new(file), Default::default()) else {
            continue;
        };
        let _ = model.tokenizer();
        let n_vocab = model.hparams.n_vocab;
        let profile = Profile::default_for(model.projection_type());
        let engine = Engine::new(model, Numerics::new(profile), 1).unwrap();
        let mut cache = engine.new_cache();
        let tokens = [0, n_vocab as u32 - 1];
        if let Ok(out) = engine.forward(&mut cache, &tokens, &TapFilter::all()) {
            assert_eq!(out.logits_at(1).len(), n_vocab, "{}", path.display());
        }
    }
}

/// Runs over nothing until `gguf_parse` finds something; its inputs also pass through
/// `gguf_model_regressions_load_or_fail_cleanly`'s reader.
#[test]
fn gguf_parse_regressions_parse_or_fail_cleanly() {
    for path in inputs("gguf_parse").into_iter().chain(inputs("gguf_model")) {
        let bytes = std::fs::read(&path).unwrap();
        let Ok(file) = GgufFile::from_bytes(bytes, "regression") else {
            continue;
        };
        for view in file.tensors() {
            let info = view.info;
            assert_eq!(view.data.len() as u64, info.n_bytes, "{}", path.display());
            if info.ty.has_codec() {
                let _ = quant::dequantize(info.ty, view.data, info.n_elements() as usize);
            }
        }
    }
}
