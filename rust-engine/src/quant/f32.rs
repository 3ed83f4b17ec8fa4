//! F32: little-endian IEEE binary32.

use super::check_blocks;
use crate::error::Result;

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks("f32", bytes.len(), out.len(), 1, 4)?;
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes(b.try_into().expect("chunk of 4"));
    }
    Ok(())
}

pub fn quantize(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// `ggml_vec_dot_f32` (generic): f32 products summed in f64 (`ggml_float`).
pub fn vec_dot_f32(row: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(row.len(), x.len() * 4, "f32 row/activation mismatch");
    let mut sum = 0f64;
    for (w, &a) in row.chunks_exact(4).zip(x) {
        sum += (f32::from_le_bytes([w[0], w[1], w[2], w[3]]) * a) as f64;
    }
    sum as f32
}
