//! Numerics profiles: which arithmetic the engine uses, named after the oracle it mirrors, so a
//! difference between engine and oracle is always explainable by the profile in the receipt.
//!
//! | profile | ternary matmul activations | other matmuls | KV cache |
//! |---|---|---|---|
//! | `bitnet-cpp` | int8 per token row, `127/max|x|`, round half even (bitnet.cpp `quantize_row_i8_s`), integer dot, epilogue `sum / act_scale * w_scale` | ggml's (F16 weights: activations rounded to f16) | F16 |
//! | `ggml` | Q8_K per 256-block (`quantize_row_q8_K_ref`), per-block `sumi * (d_x * d_y)` in f32 | ggml's `vec_dot_type` for the weight type | F32 (or F16, to match the oracle) |
//! | `f32` | none: weights dequantized, f32 activations, f64 accumulation | same | F32 |
//!
//! Beside the profile, [`Numerics`] holds the KV-cache type and [`F16Activations`]: whether an
//! F16-weight matmul rounds its activations to f16 (mainline ggml) or keeps them f32 for
//! batches (bitnet.cpp's tinyBLAS on x86).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// A named numerics profile (`--profile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Mirrors bitnet.cpp's I2_S kernels: int8 per-row activations, F16 KV cache.
    BitnetCpp,
    /// Mirrors mainline ggml's CPU kernels: Q8_K activations for TQ formats.
    Ggml,
    /// The mathematical reference: dequantized weights, unquantized activations.
    F32,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::BitnetCpp, Profile::Ggml, Profile::F32];

    pub fn name(self) -> &'static str {
        match self {
            Profile::BitnetCpp => "bitnet-cpp",
            Profile::Ggml => "ggml",
            Profile::F32 => "f32",
        }
    }

    pub fn parse(s: &str) -> Result<Profile> {
        Profile::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown numerics profile '{s}' (expected bitnet-cpp, ggml or f32)"
                ))
            })
    }

    /// The arithmetic the profile stands for, in words (receipts and reports).
    pub fn describe(self) -> &'static str {
        match self {
            Profile::BitnetCpp => {
                "int8 per-token activations in ternary matmuls and an F16 KV cache, as bitnet.cpp"
            }
            Profile::Ggml => "Q8_K per-256-block activations in ternary matmuls, as mainline ggml",
            Profile::F32 => "unquantized f32 activations with f64 sums, the mathematical reference",
        }
    }

    /// The default profile for a model whose ternary projections have type `ty`: I2_S models
    /// mirror bitnet.cpp, everything else mirrors ggml.
    pub fn default_for(ty: GgmlType) -> Profile {
        if ty == GgmlType::I2_S {
            Profile::BitnetCpp
        } else {
            Profile::Ggml
        }
    }

    /// The KV-cache type this profile uses unless told otherwise.
    pub fn default_kv(self) -> KvType {
        match self {
            Profile::BitnetCpp => KvType::F16,
            Profile::Ggml | Profile::F32 => KvType::F32,
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Element type of the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvType {
    F32,
    F16,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
        }
    }

    pub fn parse(s: &str) -> Result<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            _ => Err(Error::Invalid(format!(
                "unknown KV cache type '{s}' (expected f32 or f16)"
            ))),
        }
    }
}

impl std::fmt::Display for KvType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What activations an F16-weight matmul (the F16 lm_head, attention over an F16 KV cache)
/// multiplies by. ggml's F16 `vec_dot_type` is F16, so its vec_dot path rounds activations to
/// f16; llamafile's tinyBLAS, which serves matmuls of two or more activation rows
/// (`llamafile_sgemm` refuses `n < 2`), takes them as mainline ggml converts them (F16 B on
/// x86) but as F32 in bitnet.cpp's fork (its sgemm.cpp, `case GGML_TYPE_F16`: `Btype !=
/// GGML_TYPE_F32` returns false on AVX-512F and on AVX2+F16C).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum F16Activations {
    /// Always rounded to f16 (mainline ggml on x86).
    Round,
    /// F32 when the matmul has two or more activation rows, rounded to f16 for one row
    /// (bitnet.cpp's fork on x86).
    F32Batches,
}

impl F16Activations {
    pub fn name(self) -> &'static str {
        match self {
            F16Activations::Round => "round",
            F16Activations::F32Batches => "f32-batches",
        }
    }

    /// Whether a matmul over `rows` activation rows rounds them to f16.
    pub fn rounds(self, rows: usize) -> bool {
        match self {
            F16Activations::Round => true,
            F16Activations::F32Batches => rows < 2,
        }
    }
}

/// A complete numerics setting: the profile, the KV-cache type and what F16-weight matmuls
/// multiply by. Receipts record it for the engine and for the oracle it mirrors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Numerics {
    pub profile: Profile,
    pub kv: KvType,
    pub f16_activations: F16Activations,
}

impl Numerics {
    /// The profile with its usual KV type and F16 activations: bitnet.cpp's (F16 KV, F32
    /// batches) for `bitnet-cpp`, mainline ggml's (F32 KV, rounded) otherwise.
    pub fn new(profile: Profile) -> Self {
        Numerics {
            profile,
            kv: profile.default_kv(),
            f16_activations: match profile {
                Profile::BitnetCpp => F16Activations::F32Batches,
                Profile::Ggml | Profile::F32 => F16Activations::Round,
            },
        }
    }

    pub fn with_kv(mut self, kv: KvType) -> Self {
        self.kv = kv;
        self
    }

    pub fn with_f16_activations(mut self, a: F16Activations) -> Self {
        self.f16_activations = a;
        self
    }

    /// The numerics a one-row matmul runs, whatever the batch: what every row of decode steps
    /// evaluated together takes ([`crate::model::Rows::Steps`]). Both oracles round a single
    /// row's F16-weight activations to f16.
    pub fn one_row(mut self) -> Self {
        self.f16_activations = match self.f16_activations {
            F16Activations::Round | F16Activations::F32Batches => F16Activations::Round,
        };
        self
    }

    /// One line for reports: `ggml, kv f32, f16 activations round`.
    pub fn describe(self) -> String {
        format!(
            "{}, kv {}, f16 activations {}",
            self.profile,
            self.kv,
            self.f16_activations.name()
        )
    }
}
