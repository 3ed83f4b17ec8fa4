//! F16: IEEE binary16. Conversion from f32 rounds to nearest even, as F16C and ggml's
//! `ggml_compute_fp32_to_fp16` do.

use super::check_blocks;
use crate::error::Result;

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
