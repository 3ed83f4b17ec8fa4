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
            .map(|&v| round_ties_even(v * scale).clamp(-128.0, 127.0) as i8),
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

/// `x.round_ties_even()` up to the sign of a zero (which no int8 keeps). Below 2^22 in
/// magnitude, adding and subtracting 1.5 * 2^23 rounds to an integer (half to even, the default
/// rounding): two adds in place of the libm call `round_ties_even` becomes on x86-64 without
/// SSE4.1 (3.5% of a 2B-4T I2_S prefill); anything else (large, infinite, NaN) takes the call.
#[inline]
fn round_ties_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        rare(x)
    }
}

/// The libm call for what [`round_ties_even`] does not round itself, out of line: inline, the
/// compiler computes both sides for every element and selects (the call stayed in profiles).
#[cold]
#[inline(never)]
fn rare(x: f32) -> f32 {
    x.round_ties_even()
}

/// bitnet.cpp's epilogue: `(sum_codes_q - sum_q) / act_scale * w_scale`, where
/// `sum_codes_q - sum_q` equals the exact integer dot of the ternary values with `q`.
#[inline]
pub fn epilogue(dot: i32, act_scale: f32, w_scale: f32) -> f32 {
    dot as f32 / act_scale * w_scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-add rounding equals `round_ties_even` (zeros compare equal whatever their sign)
    /// on every half-integer tie and integer in [-300, 300], on both sides of the 2^22 cut-off,
    /// on the specials, and on a spread of four million bit patterns across the whole range.
    #[test]
    fn fast_rounding_equals_round_ties_even() {
        let same = |x: f32| {
            let (a, b) = (round_ties_even(x), x.round_ties_even());
            assert!(a == b || (a.is_nan() && b.is_nan()), "{x:e}: {a} vs {b}");
        };
        for i in -600..=600 {
            same(i as f32 * 0.5);
            same(i as f32 * 0.5 + f32::EPSILON);
        }
        for x in [4_194_303.5f32, 4_194_304.0, 4_194_305.0, 8_388_607.5, 1e30] {
            same(x);
            same(-x);
        }
        for x in [
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
        ] {
            same(x);
        }
        for bits in (0..u32::MAX).step_by(1021) {
            same(f32::from_bits(bits));
        }
    }
}
