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
    out.q.clear();
    out.q.resize(x.len(), 0);
    #[cfg(target_arch = "x86_64")]
    let scale = if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2.
        unsafe { quantize_values_avx2(x, &mut out.q) }
    } else {
        quantize_values(x, &mut out.q)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let scale = quantize_values(x, &mut out.q);
    if flip {
        let scaled: Vec<f32> = x.iter().map(|&v| v * scale).collect();
        if let Some((i, other)) = super::nearest_tie(&scaled, f32::round_ties_even) {
            out.q[i] = other.clamp(-128.0, 127.0) as i8;
        }
    }
    out.sum = out.q.iter().map(|&q| q as i32).sum();
    out.scale = scale;
}

/// The row's scale, and its values scaled and rounded into `q` (as long as `x`).
#[inline(always)]
fn quantize_values(x: &[f32], q: &mut [i8]) -> f32 {
    let max = (largest_magnitude(x) as f64).max(1e-5);
    let scale = (127.0 / max) as f32;
    let (mut qs, mut xs) = (q.chunks_exact_mut(16), x.chunks_exact(16));
    for (q, x) in (&mut qs).zip(&mut xs) {
        for (q, &v) in q.iter_mut().zip(x) {
            *q = to_i8(v * scale);
        }
    }
    for (q, &v) in qs.into_remainder().iter_mut().zip(xs.remainder()) {
        *q = to_i8(v * scale);
    }
    scale
}

/// [`quantize_values`] compiled for AVX2: the same Rust, so the same integer maximum and the
/// same IEEE operations (Rust never fuses a multiply and an add on its own), the same bytes; the
/// baseline x86-64 build vectorizes neither loop (no unsigned maximum before SSE4.1), and the
/// scalar loops were 12% of a 64-token 2B-4T I2_S prefill with the `amx` set.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_values_avx2(x: &[f32], q: &mut [i8]) -> f32 {
    quantize_values(x, q)
}

/// The largest `|v|` of the row's values that are not NaN (0 where all are NaN or there are
/// none, which the caller's `max` with 1e-5 treats as bitnet.cpp's loop does): what its `fmax`
/// loop over `fabs` in double finds, since widening to f64 and `abs` are exact. The bits of
/// `|v|` order as its magnitude does, so the maximum is an integer maximum (which vectorizes;
/// the f64 `max` chain waited on every element), NaN's patterns (above infinity's) counting 0.
#[inline(always)]
fn largest_magnitude(x: &[f32]) -> f32 {
    const INF: u32 = 0x7f80_0000;
    let magnitude = |v: f32| match v.to_bits() & 0x7fff_ffff {
        b if b <= INF => b,
        _ => 0,
    };
    // Sixteen independent maxima (a shape the compiler vectorizes), then the tail.
    let mut lanes = [0u32; 16];
    let chunks = x.chunks_exact(16);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = (*m).max(magnitude(v));
        }
    }
    let bits = tail.iter().map(|&v| magnitude(v)).fold(0, u32::max);
    f32::from_bits(lanes.into_iter().fold(bits, u32::max))
}

/// `clamp(round_half_even(x), -128, 127)` as bitnet.cpp stores it (NaN as 0, as `as` makes
/// it), in integer operations and selects the compiler vectorizes: clamping first changes
/// nothing (a value beyond an end rounds to that end or past it), and adding 1.5 * 2^23 to a
/// value within 128 rounds it to an integer, half to even (the default rounding), which is
/// then the low bits of the sum's pattern: the sum's bits less the constant's.
#[inline(always)]
fn to_i8(x: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let y = x.clamp(-128.0, 127.0);
    let i = ((y + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    if y.is_nan() {
        0
    } else {
        i as i8
    }
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

    /// The integer maximum of magnitudes gives the scale bitnet.cpp's loop gives (`max` in
    /// f64 from 1e-5, NaN skipped) on rows with NaN of both signs and payloads, infinities,
    /// signed zeros, subnormals, ties of magnitude of both signs, all-NaN and empty rows, and
    /// a spread of bit patterns.
    #[test]
    fn the_largest_magnitude_gives_the_reference_scale() {
        // (And the AVX2 build of the row's loops the baseline build's scale and bytes.)
        let reference = |x: &[f32]| {
            let mut max = 1e-5f64;
            for &v in x {
                max = max.max((v as f64).abs());
            }
            (127.0 / max) as f32
        };
        let ours = |x: &[f32]| {
            let max = (largest_magnitude(x) as f64).max(1e-5);
            (127.0 / max) as f32
        };
        let nan_neg = f32::from_bits(0xffc0_0001);
        let rows: Vec<Vec<f32>> = vec![
            vec![],
            vec![f32::NAN, nan_neg],
            vec![0.0, -0.0],
            vec![1e-7, -1e-6, f32::from_bits(1)],
            vec![-3.5, 3.5, f32::NAN, 2.0],
            vec![f32::INFINITY, 1.0],
            vec![f32::NEG_INFINITY, f32::NAN],
            vec![nan_neg, -7.25, 7.0, f32::MAX, -f32::MAX],
            (0..4096u32)
                .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761)))
                .collect(),
        ];
        for x in &rows {
            let (a, b) = (reference(x), ours(x));
            assert!(a.to_bits() == b.to_bits(), "{x:?}: {a} vs {b}");
            let mut base = vec![0i8; x.len()];
            let s = quantize_values(x, &mut base);
            assert_eq!(s.to_bits(), a.to_bits());
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut wide = vec![0i8; x.len()];
                // SAFETY: this CPU has AVX2.
                let s = unsafe { quantize_values_avx2(x, &mut wide) };
                assert_eq!((s.to_bits(), &wide), (a.to_bits(), &base), "{x:?}");
            }
        }
    }

    /// The branch-free rounding equals `round_ties_even` clamped to an int8 on every
    /// half-integer tie and integer in [-300, 300], on both sides of the 2^22 cut-off and of
    /// -1.5 * 2^23, on the specials, and on a spread of four million bit patterns across the
    /// whole range.
    #[test]
    fn branch_free_rounding_equals_round_ties_even_clamped() {
        let same = |x: f32| {
            let (a, b) = (to_i8(x), x.round_ties_even().clamp(-128.0, 127.0) as i8);
            assert_eq!(a, b, "{x:e}");
        };
        for i in -600..=600 {
            same(i as f32 * 0.5);
            same(i as f32 * 0.5 + f32::EPSILON);
        }
        for x in [
            4_194_303.5f32,
            4_194_304.0,
            4_194_305.0,
            8_388_607.5,
            12_582_912.0,
            12_582_812.0,
            16_777_216.0,
            1e30,
        ] {
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
            f32::MAX,
        ] {
            same(x);
        }
        for bits in (0..u32::MAX).step_by(1021) {
            same(f32::from_bits(bits));
        }
    }
}
