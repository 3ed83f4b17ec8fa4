//! F16: IEEE binary16. Conversion from f32 rounds to nearest even, as F16C and ggml's
//! `ggml_compute_fp32_to_fp16` do.

use super::check_blocks;
use crate::error::Result;

/// An f16 (its bits) as f32, exactly, without branches or CPU feature checks: ggml's
/// `ggml_compute_fp16_to_fp32` for CPUs without F16C (ggml-impl.h, from the FP16 library).
/// Normal values are rebiased by moving the bits into f32's exponent and scaling by 2^-112,
/// subnormals are built as `0.5 + m * 2^-24`-style magic sums minus the magic, infinities and
/// NaNs keep their class. For the per-block scales read once per weight block, where `half`'s
/// `to_f32` checks the CPU's features on every call.
#[inline]
pub fn to_f32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);
    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;
    let magic_mask = 126u32 << 23;
    let denormalized = f32::from_bits((two_w >> 17) | magic_mask) - 0.5;
    let cutoff = 1u32 << 27;
    let bits = if two_w < cutoff {
        denormalized.to_bits()
    } else {
        normalized.to_bits()
    };
    f32::from_bits(sign | bits)
}

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks("f16", bytes.len(), out.len(), 1, 2)?;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
    Ok(())
}

pub fn quantize(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

/// `ggml_vec_dot_f16` (generic): f32 products of f16 values summed in f64 (`ggml_float`).
pub fn vec_dot_f16(row: &[u8], x: &[half::f16]) -> f32 {
    debug_assert_eq!(row.len(), x.len() * 2, "f16 row/activation mismatch");
    let mut sum = 0f64;
    for (w, &a) in row.chunks_exact(2).zip(x) {
        sum += (half::f16::from_le_bytes([w[0], w[1]]).to_f32() * a.to_f32()) as f64;
    }
    sum as f32
}

/// F16 weights times f32 activations: f32 products summed in f64 (the generic order; the
/// bitnet.cpp fork's tinyBLAS sums the same products in f32 SIMD lanes).
pub fn vec_dot_f16_f32(row: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(row.len(), x.len() * 2, "f16 row/activation mismatch");
    let mut sum = 0f64;
    for (w, &a) in row.chunks_exact(2).zip(x) {
        sum += (half::f16::from_le_bytes([w[0], w[1]]).to_f32() * a) as f64;
    }
    sum as f32
}

/// Round activations to f16 (F16's `vec_dot_type`).
pub fn to_f16_row(x: &[f32], out: &mut Vec<half::f16>) {
    out.clear();
    out.extend(x.iter().map(|&v| half::f16::from_f32(v)));
}

#[cfg(test)]
mod tests {
    /// Every one of the 65536 f16 values converts to `half`'s (F16C's) f32, bit for bit; NaNs
    /// stay NaNs of the same sign.
    #[test]
    fn to_f32_is_exact_for_every_f16() {
        for h in 0..=u16::MAX {
            let ours = super::to_f32(h);
            let theirs = half::f16::from_bits(h).to_f32();
            if theirs.is_nan() {
                assert!(ours.is_nan(), "{h:#06x}: {ours} for NaN");
                assert_eq!(
                    ours.is_sign_negative(),
                    theirs.is_sign_negative(),
                    "{h:#06x}"
                );
            } else {
                assert_eq!(
                    ours.to_bits(),
                    theirs.to_bits(),
                    "{h:#06x}: {ours} vs {theirs}"
                );
            }
        }
    }
}
