//! Q8_0: blocks of 32 int8 values with one f16 scale (`block_q8_0`, 34 bytes).
//! Encoder: `quantize_row_q8_0_ref` in ggml-quants.c.

use super::{check_blocks, round_away};
use crate::error::Result;

pub const BLOCK: usize = 32;
pub const BLOCK_BYTES: usize = 2 + BLOCK;
const _: () = assert!(BLOCK_BYTES == 34);

pub fn dequantize(bytes: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks("q8_0", bytes.len(), out.len(), BLOCK, BLOCK_BYTES)?;
    for (blk, y) in bytes
        .chunks_exact(BLOCK_BYTES)
        .zip(out.chunks_exact_mut(BLOCK))
    {
        let d = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
        for (o, &q) in y.iter_mut().zip(&blk[2..]) {
            *o = q as i8 as f32 * d;
        }
    }
    Ok(())
}

pub fn quantize(values: &[f32]) -> Result<Vec<u8>> {
    let blocks = check_blocks("q8_0", 0, values.len(), BLOCK, 0)?;
    let mut out = Vec::with_capacity(blocks * BLOCK_BYTES);
    for x in values.chunks_exact(BLOCK) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(x.iter().map(|&v| round_away(v * id) as i8 as u8));
    }
    Ok(out)
}

/// `ggml_vec_dot_q8_0_q8_0` (generic): per 32-block integer dot times `d_x * d_y`, in f32.
/// `y` is the activation row encoded with [`quantize`].
pub fn vec_dot_q8_0(row: &[u8], y: &[u8]) -> f32 {
    debug_assert_eq!(row.len(), y.len(), "q8_0 row/activation mismatch");
    let mut sumf = 0f32;
    for (xb, yb) in row
        .chunks_exact(BLOCK_BYTES)
        .zip(y.chunks_exact(BLOCK_BYTES))
    {
        let sumi: i32 = xb[2..]
            .iter()
            .zip(&yb[2..])
            .map(|(&a, &b)| a as i8 as i32 * b as i8 as i32)
            .sum();
        let dx = half::f16::from_le_bytes([xb[0], xb[1]]).to_f32();
        let dy = half::f16::from_le_bytes([yb[0], yb[1]]).to_f32();
        sumf += sumi as f32 * (dx * dy);
    }
    sumf
}
