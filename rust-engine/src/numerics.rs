//! Numerics profiles: which arithmetic the engine uses, named after the oracle it mirrors, so a
//! difference between engine and oracle is always explainable by the profile in the receipt.
//!
//! | profile | ternary matmul activations | other matmuls | KV cache |
//! |---|---|---|---|
//! | `bitnet-cpp` | int8 per token row, `127/max|x|`, round half even (bitnet.cpp `quantize_row_i8_s`), integer dot, epilogue `sum / act_scale * w_scale` | ggml's (F16 weights: activations rounded to f16) | F16 |
//! | `ggml` | Q8_K per 256-block (`quantize_row_q8_K_ref`), per-block `sumi * (d_x * d_y)` in f32 | ggml's `vec_dot_type` for the weight type | F32 (or F16, to match the oracle) |
//! | `f32` | none: weights dequantized, f32 activations, f64 accumulation | same | F32 |

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

/// A complete numerics setting: the profile plus the KV-cache type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Numerics {
    pub profile: Profile,
    pub kv: KvType,
}

impl Numerics {
    pub fn new(profile: Profile) -> Self {
        Numerics {
            profile,
            kv: profile.default_kv(),
        }
    }

    pub fn with_kv(mut self, kv: KvType) -> Self {
        self.kv = kv;
        self
    }
}
