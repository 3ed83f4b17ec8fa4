//! bitnet.cpp's activation format for I2_S matmuls: one int8 vector per activation row (one
//! token) with one f32 scale. Mirrors `quantize_row_i8_s` in the fork's ggml-bitnet-mad.cpp:
//! `scale = 127 / max(max|x|, 1e-5)` with the max taken in double and the scale stored as f32,
//! `q = clamp(round_half_even(x * scale), -128, 127)`.

/// A quantized activation row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ActI8 {
    pub q: Vec<i8>,
    /// Multiply the real values by this to get `q` (bitnet.cpp's `act_scales[0]`).
    pub scale: f32,
    /// Sum of `q` (bitnet.cpp's `act_sums[0]`), used by the code-offset form of the epilogue.
    pub sum: i32,
}

pub fn quantize_row(x: &[f32], out: &mut ActI8) {
    quantize_row_flip(x, out, false)
}

/// [`quantize_row`]; with `flip`, the element nearest a rounding tie is rounded the other way
/// (the noise twin's rounding).
pub fn quantize_row_flip(x: &[f32], out: &mut ActI8, flip: bool) {
    let mut max = 1e-5f64;
    for &v in x {
        max = max.max((v as f64).abs());
    }
    let scale = (127.0 / max) as f32;
    out.q.clear();
    out.q.extend(
        x.iter()
            .map(|&v| (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8),
    );
    if flip {
        let scaled: Vec<f32> = x.iter().map(|&v| v * scale).collect();
        if let Some((i, other)) = super::nearest_tie(&scaled, f32::round_ties_even) {
            out.q[i] = other.clamp(-128.0, 127.0) as i8;
        }
    }
    out.sum = out.q.iter().map(|&q| q as i32).sum();
    out.scale = scale;
}

/// bitnet.cpp's epilogue: `(sum_codes_q - sum_q) / act_scale * w_scale`, where
/// `sum_codes_q - sum_q` equals the exact integer dot of the ternary values with `q`.
#[inline]
pub fn epilogue(dot: i32, act_scale: f32, w_scale: f32) -> f32 {
    dot as f32 / act_scale * w_scale
}
