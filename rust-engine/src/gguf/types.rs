//! The ggml tensor type table: ids, names, block sizes and byte sizes.
//!
//! Mirrors `type_traits[]` in ggml/src/ggml.c (mainline) for the shared ids, plus the bitnet.cpp
//! fork's I2_S. Ids 36-39 mean different things in the fork and in mainline (mainline: 36-38 are
//! removed IQ4_NL_x_y repack types, 39 is MXFP4; fork: 36 I2_S, 37 I8_S, 38 TL1, 39 TL2), so the
//! reader resolves them per file with [`TypeDialect`].

use serde::Serialize;

/// A ggml tensor type this crate can name. Types the engine cannot compute with are still named
/// so that `inspect` can describe any GGUF file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    /// bitnet.cpp fork only: 2-bit ternary codes, one f32 scale per tensor.
    I2_S,
    /// Mainline only (id 39).
    MXFP4,
}

/// Which meaning a file's type ids 36-39 have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TypeDialect {
    /// Mainline ggml/llama.cpp ids.
    Mainline,
    /// The bitnet.cpp fork (Eddie-Wang1120/llama.cpp): 36 = I2_S, 37 = I8_S, 38 = TL1, 39 = TL2.
    BitnetCpp,
}

/// Size class of a type: elements per block and bytes per block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockSize {
    pub elements: u64,
    pub bytes: u64,
}

/// Bytes of the I2_S trailer after the packed codes: one f32 scale padded to 32 bytes
/// (bitnet.cpp `ggml_nbytes` special case).
pub const I2S_TRAILER_BYTES: u64 = 32;

impl GgmlType {
    /// Every type, for tables and exhaustive tests.
    pub const ALL: [GgmlType; 33] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ3_XXS,
        GgmlType::IQ1_S,
        GgmlType::IQ4_NL,
        GgmlType::IQ3_S,
        GgmlType::IQ2_S,
        GgmlType::IQ4_XS,
        GgmlType::I8,
        GgmlType::I16,
        GgmlType::I32,
        GgmlType::I64,
        GgmlType::F64,
        GgmlType::IQ1_M,
        GgmlType::BF16,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
        GgmlType::MXFP4,
    ];

    /// The types the engine encodes and decodes (and will compute with).
    pub const CODEC: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q6_K,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
    ];

    /// The on-disk type id (`ggml_type` value); I2_S is the fork's 36.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            I2_S => 36,
            MXFP4 => 39,
        }
    }

    /// Resolve an on-disk id. `Err` carries a sentence saying why the id cannot be used, naming
    /// both dialects' meanings where they differ.
    pub fn from_id(id: u32, dialect: TypeDialect) -> Result<GgmlType, String> {
        use GgmlType::*;
        let ty = match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            36 => match dialect {
                TypeDialect::BitnetCpp => I2_S,
                TypeDialect::Mainline => {
                    return Err(
                        "type id 36 is I2_S in bitnet.cpp but IQ4_NL_4_4 (removed) in \
                                mainline ggml, and this file does not look like a bitnet.cpp file"
                            .into(),
                    )
                }
            },
            37 => {
                return Err(
                    "type id 37 (I8_S in bitnet.cpp, removed IQ4_NL_4_8 in mainline) is not \
                     supported"
                        .into(),
                )
            }
            38 => {
                return Err(
                    "type id 38 (TL1 in bitnet.cpp, removed IQ4_NL_8_8 in mainline) is \
                            not supported: re-quantize the model to I2_S"
                        .into(),
                )
            }
            39 => match dialect {
                TypeDialect::Mainline => MXFP4,
                TypeDialect::BitnetCpp => {
                    return Err(
                        "type id 39 is TL2 in this bitnet.cpp file (MXFP4 in mainline); \
                                TL2 is not supported: re-quantize the model to I2_S"
                            .into(),
                    )
                }
            },
            4 | 5 => return Err(format!("type id {id} (Q4_2/Q4_3) was removed from ggml")),
            31..=33 => {
                return Err(format!(
                    "type id {id} (Q4_0_4_4/Q4_0_4_8/Q4_0_8_8) was removed from GGUF files"
                ))
            }
            _ => return Err(format!("unknown ggml type id {id}")),
        };
        Ok(ty)
    }

    /// ggml's lowercase type name (`ggml_type_name`), as `inspect --json` reports it.
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "f32",
            F16 => "f16",
            Q4_0 => "q4_0",
            Q4_1 => "q4_1",
            Q5_0 => "q5_0",
            Q5_1 => "q5_1",
            Q8_0 => "q8_0",
            Q8_1 => "q8_1",
            Q2_K => "q2_K",
            Q3_K => "q3_K",
            Q4_K => "q4_K",
            Q5_K => "q5_K",
            Q6_K => "q6_K",
            Q8_K => "q8_K",
            IQ2_XXS => "iq2_xxs",
            IQ2_XS => "iq2_xs",
            IQ3_XXS => "iq3_xxs",
            IQ1_S => "iq1_s",
            IQ4_NL => "iq4_nl",
            IQ3_S => "iq3_s",
            IQ2_S => "iq2_s",
            IQ4_XS => "iq4_xs",
            I8 => "i8",
            I16 => "i16",
            I32 => "i32",
            I64 => "i64",
            F64 => "f64",
            IQ1_M => "iq1_m",
            BF16 => "bf16",
            TQ1_0 => "tq1_0",
            TQ2_0 => "tq2_0",
            I2_S => "i2_s",
            MXFP4 => "mxfp4",
        }
    }

    /// Parse a lowercase (or any case) type name.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        GgmlType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// Elements and bytes per block, from ggml.c `type_traits`. I2_S has no per-row block size
    /// (its size is per tensor, see [`GgmlType::tensor_bytes`]); it reports 4 elements per byte.
    pub fn block(self) -> BlockSize {
        use GgmlType::*;
        let (elements, bytes) = match self {
            F32 => (1, 4),
            F16 => (1, 2),
            BF16 => (1, 2),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            IQ2_XXS => (256, 66),
            IQ2_XS => (256, 74),
            IQ3_XXS => (256, 98),
            IQ1_S => (256, 50),
            IQ4_NL => (32, 18),
            IQ3_S => (256, 110),
            IQ2_S => (256, 82),
            IQ4_XS => (256, 136),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (256, 56),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            I2_S => (4, 1),
            MXFP4 => (32, 17),
        };
        BlockSize { elements, bytes }
    }

    /// Whether the engine can decode and encode this type.
    pub fn has_codec(self) -> bool {
        GgmlType::CODEC.contains(&self)
    }

    /// Whether the type holds ternary weights.
    pub fn is_ternary(self) -> bool {
        matches!(self, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S)
    }

    /// Bytes a tensor of this type and shape (GGUF order, ne0 first) occupies, or a sentence
    /// saying why the shape is impossible for the type. Checks overflow.
    pub fn tensor_bytes(self, shape: &[u64]) -> Result<u64, String> {
        let n = element_count(shape)?;
        let ne0 = shape.first().copied().unwrap_or(1);
        if self == GgmlType::I2_S {
            // bitnet.cpp packs the whole tensor in 128-weight (or 64-weight) blocks of 2-bit
            // codes, then one f32 scale padded to 32 bytes: n/4 + 32.
            if n % 64 != 0 {
                return Err(format!(
                    "I2_S needs an element count divisible by 64 (128 in the official layout), \
                     got {n}"
                ));
            }
            return Ok(n / 4 + I2S_TRAILER_BYTES);
        }
        let b = self.block();
        if ne0 % b.elements != 0 {
            return Err(format!(
                "row length ne0 = {ne0} is not a multiple of the {} block size {}",
                self.name(),
                b.elements
            ));
        }
        (n / b.elements)
            .checked_mul(b.bytes)
            .ok_or_else(|| format!("byte size of {n} {} elements overflows", self.name()))
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of elements of a shape, checking for overflow (ggml keeps it below i64::MAX).
pub fn element_count(shape: &[u64]) -> Result<u64, String> {
    let mut n: u64 = 1;
    for &d in shape {
        n = n
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| format!("dimensions {shape:?} overflow the element count"))?;
    }
    // ggml's `ne` are int64 and gguf.cpp rejects negative ones (`gguf_init_from_file_impl`).
    // A non-zero product already bounds every dimension; behind a zero dimension a huge one
    // would slip through and break callers that divide by or iterate over a dimension.
    if let Some((i, d)) = shape.iter().enumerate().find(|(_, &d)| d > i64::MAX as u64) {
        return Err(format!(
            "dimensions {shape:?}: ne[{i}] = {d} exceeds ggml's limit of {} (int64)",
            i64::MAX
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_in_their_dialect() {
        for ty in GgmlType::ALL {
            let dialect = if ty == GgmlType::I2_S {
                TypeDialect::BitnetCpp
            } else {
                TypeDialect::Mainline
            };
            assert_eq!(GgmlType::from_id(ty.id(), dialect), Ok(ty));
            assert_eq!(GgmlType::from_name(ty.name()), Some(ty));
        }
    }

    #[test]
    fn dialect_decides_ids_36_and_39() {
        assert!(GgmlType::from_id(36, TypeDialect::Mainline).is_err());
        assert_eq!(
            GgmlType::from_id(39, TypeDialect::Mainline),
            Ok(GgmlType::MXFP4)
        );
        let tl2 = GgmlType::from_id(39, TypeDialect::BitnetCpp).unwrap_err();
        assert!(tl2.contains("TL2"), "{tl2}");
        assert!(GgmlType::from_id(99, TypeDialect::Mainline)
            .unwrap_err()
            .contains("99"));
    }

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(GgmlType::TQ2_0.tensor_bytes(&[256, 3]), Ok(3 * 66));
        assert_eq!(GgmlType::TQ1_0.tensor_bytes(&[512]), Ok(2 * 54));
        assert_eq!(GgmlType::Q8_0.tensor_bytes(&[64, 2]), Ok(4 * 34));
        assert_eq!(
            GgmlType::I2_S.tensor_bytes(&[2560, 2560]),
            Ok(2560 * 640 + 32)
        );
        assert!(GgmlType::TQ2_0.tensor_bytes(&[100, 2]).is_err());
        assert!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]).is_err());
        assert!(GgmlType::F32.tensor_bytes(&[0, 1 << 63]).is_err());
        assert_eq!(GgmlType::F32.tensor_bytes(&[0, i64::MAX as u64]), Ok(0));
    }
}
