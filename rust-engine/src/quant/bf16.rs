//! BF16: the top 16 bits of an f32. Encoding mirrors ggml's `ggml_compute_fp32_to_bf16`
//! (round to nearest even, NaN forced quiet) so that files are byte-identical to ggml's.

use super::check_blocks;
use crate::error::Result;

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks("bf16", bytes.len(), out.len(), 1, 2)?;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
    }
    Ok(())
}

/// ggml_compute_fp32_to_bf16.
pub fn from_f32(s: f32) -> u16 {
    let i = s.to_bits();
    if (i & 0x7fff_ffff) > 0x7f80_0000 {
        return ((i >> 16) | 64) as u16;
    }
    ((i + (0x7fff + ((i >> 16) & 1))) >> 16) as u16
}

pub fn quantize(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| from_f32(v).to_le_bytes())
        .collect()
}

/// `ggml_vec_dot_bf16` (generic): activations rounded to bf16, f32 products summed in f64.
pub fn vec_dot_bf16(row: &[u8], x: &[u16]) -> f32 {
    debug_assert_eq!(row.len(), x.len() * 2, "bf16 row/activation mismatch");
    let mut sum = 0f64;
    for (w, &a) in row.chunks_exact(2).zip(x) {
        let w = f32::from_bits((u16::from_le_bytes([w[0], w[1]]) as u32) << 16);
        sum += (w * f32::from_bits((a as u32) << 16)) as f64;
    }
    sum as f32
}

/// Round activations to bf16 (BF16's `vec_dot_type`).
pub fn to_bf16_row(x: &[f32], out: &mut Vec<u16>) {
    out.clear();
    out.extend(x.iter().map(|&v| from_f32(v)));
}
