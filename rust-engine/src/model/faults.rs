//! The self-test's fault catalogue: realistic bugs of BitNet engines (several shipped in
//! public ones), each injected where the real bug would sit through an explicit [`Plan`]
//! (`Engine::with_plan`), never a global switch. An engine without a plan never looks here.
//!
//! [`Plan`]: super::Plan

use super::{Activation, Model};
use crate::gguf::GgmlType;
use crate::numerics::Profile;
use crate::quant::i2_s::{self, I2sLayout};

/// One kind of bug. Faults with a layer act in that layer only (`@L` in a spec); without one,
/// everywhere the bug would act.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// I2_S read with the other block layout (64-weight blocks for 128, or the reverse).
    I2sBlockLayout,
    /// I2_S read sequentially (weight i in byte i/4) instead of interleaved within blocks.
    I2sSequential,
    /// I2_S codes taken least-significant pair first instead of most-significant first.
    I2sLsbFirst,
    /// I2_S codes 0, 1, 2 mapped to -2, -1, +1 instead of -1, 0, +1.
    I2sCodesPm2,
    /// The per-tensor weight scale ignored (I2_S's trailer, or a `.scale` tensor).
    ScaleIgnored,
    /// The per-tensor weight scale applied twice.
    ScaleTwice,
    /// Ternary matmul activations quantized with the other granularity: per 256-block (Q8_K)
    /// where the profile quantizes per row (int8, bitnet.cpp), or per row where it says
    /// per block (ggml).
    ActGranularity,
    /// I2_S integer dot products accumulated in 16 bits, wrapping on overflow.
    AccI16,
    /// LayerNorm (mean subtracted) instead of RMSNorm.
    LayerNorm,
    /// RMSNorm epsilon 1e-6 instead of the file's value (1e-5 when the file says 1e-6).
    RmsEps,
    /// `attn_sub_norm` skipped.
    SkipAttnSubNorm,
    /// `ffn_sub_norm` skipped.
    SkipFfnSubNorm,
    /// The other FFN activation: SiLU for ReLU^2, ReLU^2 for SiLU.
    WrongActivation,
    /// RoPE NORM (adjacent pairs) instead of NEOX (halves).
    RopeNorm,
    /// RoPE frequency base 500000 instead of the file's (10000 when the file says 500000).
    RopeBase,
    /// Grouped-query attention maps query head h to KV head (h + 1) / group instead of h / group.
    GqaOffByOne,
    /// Attention scores scaled by 1/head_dim instead of 1/sqrt(head_dim).
    AttnScale,
    /// In decode, attention reads the KV cache one position short (the new token does not see
    /// its own key and value).
    KvOneShort,
    /// In decode, the new token's KV slot is read before it is written: the previous
    /// position's key and value stand in for it.
    KvStale,
    /// The embedding of token t read from row t + 1.
    EmbdOffByOne,
    /// An untied `output.weight` ignored for the tied token embedding.
    OutputTied,
    /// The residual stream (`ffn_inp`, `l_out`) rounded to f16.
    ResidualF16,
    /// The tokenizer splits with the `default` (GPT-2) pre-tokenizer where the file means
    /// `llama-bpe`, or the reverse.
    PreTokenizer,
    /// The tokenizer does not add BOS where the file says to.
    NoBos,
}

impl FaultKind {
    /// Every fault, in the self-test's order.
    pub const ALL: [FaultKind; 24] = [
        FaultKind::I2sBlockLayout,
        FaultKind::I2sSequential,
        FaultKind::I2sLsbFirst,
        FaultKind::I2sCodesPm2,
        FaultKind::ScaleIgnored,
        FaultKind::ScaleTwice,
        FaultKind::ActGranularity,
        FaultKind::AccI16,
        FaultKind::LayerNorm,
        FaultKind::RmsEps,
        FaultKind::SkipAttnSubNorm,
        FaultKind::SkipFfnSubNorm,
        FaultKind::WrongActivation,
        FaultKind::RopeNorm,
        FaultKind::RopeBase,
        FaultKind::GqaOffByOne,
        FaultKind::AttnScale,
        FaultKind::KvOneShort,
        FaultKind::KvStale,
        FaultKind::EmbdOffByOne,
        FaultKind::OutputTied,
        FaultKind::ResidualF16,
        FaultKind::PreTokenizer,
        FaultKind::NoBos,
    ];

    /// The spec name (`--fault NAME[@LAYER]`).
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::I2sBlockLayout => "i2s-block-layout",
            FaultKind::I2sSequential => "i2s-sequential",
            FaultKind::I2sLsbFirst => "i2s-lsb-first",
            FaultKind::I2sCodesPm2 => "i2s-codes-pm2",
            FaultKind::ScaleIgnored => "scale-ignored",
            FaultKind::ScaleTwice => "scale-twice",
            FaultKind::ActGranularity => "act-granularity",
            FaultKind::AccI16 => "acc-i16",
            FaultKind::LayerNorm => "layernorm",
            FaultKind::RmsEps => "rms-eps",
            FaultKind::SkipAttnSubNorm => "skip-attn-sub-norm",
            FaultKind::SkipFfnSubNorm => "skip-ffn-sub-norm",
            FaultKind::WrongActivation => "wrong-activation",
            FaultKind::RopeNorm => "rope-norm",
            FaultKind::RopeBase => "rope-base",
            FaultKind::GqaOffByOne => "gqa-off-by-one",
            FaultKind::AttnScale => "attn-scale",
            FaultKind::KvOneShort => "kv-one-short",
            FaultKind::KvStale => "kv-stale",
            FaultKind::EmbdOffByOne => "embd-off-by-one",
            FaultKind::OutputTied => "output-tied",
            FaultKind::ResidualF16 => "residual-f16",
            FaultKind::PreTokenizer => "pre-tokenizer",
            FaultKind::NoBos => "no-bos",
        }
    }

    pub fn from_name(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether the fault acts per layer (takes `@L`).
    pub fn layered(self) -> bool {
        !matches!(
            self,
            FaultKind::EmbdOffByOne
                | FaultKind::OutputTied
                | FaultKind::PreTokenizer
                | FaultKind::NoBos
        )
    }

    /// Why the fault cannot act on `model` under `profile`, or `None` when it can.
    pub fn not_applicable(self, model: &Model, profile: Profile) -> Option<&'static str> {
        let hp = &model.hparams;
        let ternary = matches!(
            model.projection_type(),
            GgmlType::I2_S | GgmlType::TQ1_0 | GgmlType::TQ2_0
        );
        let i2s = model.projection_type() == GgmlType::I2_S;
        let scaled = i2s || model.layers.iter().any(|l| l.wq.scale.is_some());
        match self {
            FaultKind::I2sBlockLayout
            | FaultKind::I2sSequential
            | FaultKind::I2sLsbFirst
            | FaultKind::I2sCodesPm2
                if !i2s =>
            {
                Some("the model has no I2_S weights")
            }
            FaultKind::ScaleIgnored | FaultKind::ScaleTwice if !scaled => {
                Some("the model has no per-tensor weight scale (I2_S or .scale tensors)")
            }
            FaultKind::ActGranularity if !ternary || profile == Profile::F32 => {
                Some("no quantized activations (F32 profile or non-ternary weights)")
            }
            FaultKind::AccI16 if !i2s || profile != Profile::BitnetCpp => {
                Some("integer I2_S sums exist only under the bitnet-cpp profile")
            }
            FaultKind::GqaOffByOne if hp.n_head_kv == 1 || hp.n_head_kv == hp.n_head => {
                Some("no grouped-query attention (one KV head, or one per query head)")
            }
            FaultKind::OutputTied if model.output_is_tied => {
                Some("the model's output is tied to the embedding already")
            }
            _ => None,
        }
    }

    /// Whether an engine with this fault must be built with changed weight images.
    pub(crate) fn rewrites_i2s(self) -> bool {
        matches!(
            self,
            FaultKind::I2sBlockLayout
                | FaultKind::I2sSequential
                | FaultKind::I2sLsbFirst
                | FaultKind::I2sCodesPm2
                | FaultKind::ScaleIgnored
                | FaultKind::ScaleTwice
        )
    }
}

/// The ternary images a misreading engine multiplies by in place of one I2_S tensor (`n`
/// weights, `layout` the file's): the values it decodes, re-packed in the file's own layout so
/// that the profile's kernels and activation quantization stay as they are. Non-ternary
/// misreadings (codes to -2..+2) come as two ternary images whose products are summed.
pub(crate) fn misread_i2s(
    kind: FaultKind,
    bytes: &[u8],
    n: usize,
    layout: I2sLayout,
) -> crate::error::Result<Vec<Vec<u8>>> {
    let scale = i2_s::scale(bytes, n)?;
    let codes = &bytes[..n / 4];
    let read = |f: &dyn Fn(usize) -> u8| -> Vec<u8> { (0..n).map(f).collect() };
    let good = |i: usize| i2_s::code(codes, i, layout);
    let raw: Vec<u8> = match kind {
        FaultKind::I2sBlockLayout => {
            let other = match layout {
                I2sLayout::Block128 => I2sLayout::Block64,
                I2sLayout::Block64 => I2sLayout::Block128,
            };
            read(&|i| i2_s::code(codes, i, other))
        }
        FaultKind::I2sSequential => read(&|i| (codes[i / 4] >> (6 - 2 * (i % 4))) & 3),
        FaultKind::I2sLsbFirst => {
            let (block, bb) = (layout.block(), layout.block_bytes());
            read(&|i| {
                let (b, j) = (i / block, i % block);
                (codes[b * bb + j % bb] >> (2 * (j / bb))) & 3
            })
        }
        _ => read(&good),
    };
    // Code 3 never occurs in a valid file, but a misread can produce it: read it as +1 there
    // (the bug's own reading of "2 bits, offset 1" would give +2, which the pm2 map covers).
    let trit = |c: u8| (c.min(2) as i8) - 1;
    let pack = |t: &[i8], s: f32| i2_s::pack(t, s, layout);
    Ok(match kind {
        FaultKind::I2sCodesPm2 => {
            // -2, -1, +1, +2 = a + b with a, b ternary.
            let (a, b): (Vec<i8>, Vec<i8>) = raw
                .iter()
                .map(|&c| match c {
                    0 => (-1, -1),
                    1 => (-1, 0),
                    2 => (1, 0),
                    _ => (1, 1),
                })
                .unzip();
            vec![pack(&a, scale)?, pack(&b, scale)?]
        }
        FaultKind::ScaleIgnored => {
            vec![pack(
                &raw.iter().map(|&c| trit(c)).collect::<Vec<_>>(),
                1.0,
            )?]
        }
        FaultKind::ScaleTwice => vec![pack(
            &raw.iter().map(|&c| trit(c)).collect::<Vec<_>>(),
            scale * scale,
        )?],
        _ => vec![pack(
            &raw.iter().map(|&c| trit(c)).collect::<Vec<_>>(),
            scale,
        )?],
    })
}

/// The activation a [`FaultKind::WrongActivation`] engine applies instead of `a`.
pub(crate) fn other_activation(a: Activation) -> Activation {
    match a {
        Activation::Silu => Activation::ReluSqr,
        Activation::ReluSqr => Activation::Silu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_misreads_change_the_weights() {
        for k in FaultKind::ALL {
            assert_eq!(FaultKind::from_name(k.name()), Some(k));
        }
        let n = 256;
        let t: Vec<i8> = (0..n).map(|i| ((i * 7 + i / 3) % 3) as i8 - 1).collect();
        let bytes = i2_s::pack(&t, 0.5, I2sLayout::Block128).unwrap();
        for k in [
            FaultKind::I2sBlockLayout,
            FaultKind::I2sSequential,
            FaultKind::I2sLsbFirst,
            FaultKind::I2sCodesPm2,
            FaultKind::ScaleIgnored,
            FaultKind::ScaleTwice,
        ] {
            let parts = misread_i2s(k, &bytes, n, I2sLayout::Block128).unwrap();
            let mut w = vec![0f32; n];
            for p in &parts {
                let mut v = vec![0f32; n];
                i2_s::dequantize(p, &mut v, I2sLayout::Block128).unwrap();
                w.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
            }
            let good: Vec<f32> = t.iter().map(|&x| x as f32 * 0.5).collect();
            assert_ne!(w, good, "{k:?}");
            if k == FaultKind::ScaleTwice {
                assert!(w.iter().zip(&good).all(|(a, b)| *a == b * 0.5));
            }
            if k == FaultKind::I2sCodesPm2 {
                // Zero weights (code 1) read as -1.
                assert!(w.iter().all(|&x| x != 0.0));
            }
        }
    }
}
