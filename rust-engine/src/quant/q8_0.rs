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

/// Activations for Q8_0 weights, as ggml's x86 CPU backend quantizes them: its `from_float`
/// for Q8_0 is `quantize_row_q8_0` in ggml-cpu/arch/x86/quants.c (AVX2 path), which is *not*
/// the reference encoder above. It takes `id = 127/amax` (the reference: `1/(amax/127)`, which
/// can differ in the last bit) and rounds half to even (`_mm256_round_ps(_, _MM_ROUND_NEAREST)`;
/// the reference's `roundf` rounds half away), then packs to int8 with saturation
/// (`_mm256_cvtps_epi32` gives 0x8000_0000 for non-finite values, saturated to -128). Found by
/// the kernel-parity tests: exact .5 ties quantized differently. ARM's NEON version differs
/// again (`1/d`, half to even); xval mirrors x86, where the oracle runs. Weights keep
/// [`quantize`], which matches the reference and llama-quantize byte for byte.
pub fn quantize_act(values: &[f32]) -> Result<Vec<u8>> {
    quantize_act_flip(values, false)
}

/// [`quantize_act`]; with `flip`, each block's element nearest a rounding tie is rounded the
/// other way (the noise twin's rounding).
pub fn quantize_act_flip(values: &[f32], flip: bool) -> Result<Vec<u8>> {
    let blocks = check_blocks("q8_0", 0, values.len(), BLOCK, 0)?;
    let mut out = Vec::with_capacity(blocks * BLOCK_BYTES);
    for x in values.chunks_exact(BLOCK) {
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        let at = out.len();
        out.extend(x.iter().map(|&v| {
            let q = (v * id).round_ties_even();
            let q = if q.is_finite() {
                q.clamp(-128.0, 127.0)
            } else {
                -128.0
            };
            q as i8 as u8
        }));
        if flip {
            let scaled: Vec<f32> = x.iter().map(|&v| v * id).collect();
            if let Some((i, other)) = super::nearest_tie(&scaled, f32::round_ties_even) {
                out[at + i] = other.clamp(-128.0, 127.0) as i8 as u8;
            }
        }
    }
    Ok(out)
}

/// `ggml_vec_dot_q8_0_q8_0` (generic): per 32-block integer dot times `d_x * d_y`, in f32.
/// `y` is the activation row encoded with [`quantize_act`] (or [`quantize`]).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_round_ties_to_even_weights_away_from_zero() {
        // amax 127 makes d = 1 and id = 1 in both encoders, so x * id is exactly the tie.
        let mut x = vec![0.0f32; BLOCK];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        let w = quantize(&x).unwrap();
        let a = quantize_act(&x).unwrap();
        assert_eq!(
            (w[3] as i8, w[4] as i8),
            (3, -4),
            "roundf: half away from zero"
        );
        assert_eq!((a[3] as i8, a[4] as i8), (2, -4), "AVX2: half to even");
        assert_eq!(&w[..2], &a[..2], "same f16 d");
    }

    #[test]
    fn overflowing_reciprocal_scale_encodes_zero_codes() {
        // amax / 127 is below 2^-128, so 1/d overflows: ggml (x86) writes 0 as a weight code
        // and -128 as an activation code (see round_away and quantize_act).
        let x = vec![1.0e-38f32; BLOCK];
        let w = quantize(&x).unwrap();
        assert!(w[2..].iter().all(|&q| q == 0));
        let a = quantize_act(&x).unwrap();
        assert!(a[2..].iter().all(|&q| q as i8 == -128));
    }
}
