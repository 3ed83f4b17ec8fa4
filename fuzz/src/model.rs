//! `gguf_model`: a GGUF file through everything `harness run` does before and while it evaluates:
//! the engine's model loader (architecture, hyper-parameters, tensor roles and shapes), the
//! tokenizer read from the file, and, when both accept it, one forward pass.

use std::sync::Arc;

use xval_engine::gguf::GgufFile;
use xval_engine::model::{Engine, Model};
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::i2_s::I2sLayout;
use xval_engine::taps::TapFilter;
use xval_engine::tokenizer::Tokenizer;
use xval_harness::fixtures::model::{build_model, Arch, ModelSpec, WeightFormat};
use xval_harness::fixtures::vocab::{byte_to_unicode, Vocab};

/// The text every accepted tokenizer encodes (bytes outside ASCII, a space-prefixed word).
const TEXT: &str = "Ternary \u{00e9}t\u{00e9} 42!";

/// One `gguf_model` input: load it as a model (both I2_S block layouts), read its tokenizer,
/// and when the loader accepts the file evaluate two tokens with every tap captured. The loader
/// is the gate: whatever it accepts, the forward pass must evaluate without a panic, and its
/// logits must have the vocabulary's length. Returns the number of tokens evaluated.
pub fn check_model(data: &[u8]) -> Option<usize> {
    let file = Arc::new(GgufFile::from_bytes(data.to_vec(), "fuzz").ok()?);
    if let Ok(tok) = Tokenizer::from_gguf(&file) {
        if let Ok(ids) = tok.encode(TEXT, true, true) {
            let _ = tok.decode(&ids);
        }
    }
    let _ = Model::load(file.clone(), I2sLayout::Block64);
    let model = Model::load(file, I2sLayout::Block128).ok()?;
    // What every harness command reads: the tokenizer checked against the embedding.
    let _ = model.tokenizer();
    let n_vocab = model.hparams.n_vocab;
    let profile = Profile::default_for(model.projection_type());
    let engine = Engine::new(model, Numerics::new(profile), 1).ok()?;
    let mut cache = engine.new_cache();
    let tokens = [0, (n_vocab as u32).saturating_sub(1)];
    match engine.forward(&mut cache, &tokens, &TapFilter::all()) {
        Ok(out) => {
            assert_eq!(out.logits_at(1).len(), n_vocab);
            Some(tokens.len())
        }
        Err(_) => None,
    }
}

/// Tiny models that load: each architecture, each projection format that fits a 128-wide model
/// (I2_S's 128-weight rows) or a 256-wide one (the TQ blocks), an 8-token vocabulary so that the
/// embedding stays small, and one with an untied output and `.scale` tensors.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let vocab = tiny_vocab();
    let base = ModelSpec {
        name: "fuzz".into(),
        n_embd: 128,
        n_ff: 128,
        n_layer: 1,
        n_head: 2,
        n_head_kv: 1,
        context_length: 16,
        ..ModelSpec::tiny_bitnet_i2s()
    };
    let specs = [
        ("bitnet-i2_s", base.clone()),
        (
            "bitnet-b1.58-i2_s",
            ModelSpec {
                arch: Arch::BitnetB158,
                pre_tokenizer: None,
                ..base.clone()
            },
        ),
        (
            "bitnet-tq2_0-untied",
            ModelSpec {
                weights: WeightFormat::Tq2_0,
                n_embd: 256,
                n_ff: 256,
                scale_tensors: true,
                untied_output: true,
                ..base.clone()
            },
        ),
        (
            "bitnet-b1.58-tq1_0",
            ModelSpec {
                arch: Arch::BitnetB158,
                weights: WeightFormat::Tq1_0,
                n_embd: 256,
                n_ff: 256,
                ..base
            },
        ),
    ];
    specs
        .into_iter()
        .map(|(name, spec)| {
            let w = build_model(&spec, &vocab).expect("a valid seed spec");
            (format!("synthetic-{name}.gguf"), w.to_bytes())
        })
        .collect()
}

/// Eight tokens: five single bytes (so that `TEXT` has gaps the tokenizer must report), one
/// merge, BOS and EOS.
fn tiny_vocab() -> Vocab {
    let mut tokens: Vec<String> = b"Tt e!"
        .iter()
        .map(|&b| byte_to_unicode(b).to_string())
        .collect();
    tokens.push("Tt".into());
    tokens.extend(["<|begin_of_text|>".into(), "<|end_of_text|>".into()]);
    Vocab {
        merges: vec!["T t".into()],
        token_types: vec![1, 1, 1, 1, 1, 1, 3, 3],
        bos: 6,
        eos: 7,
        tokens,
    }
}
