//! Q8_K: ggml's activation format for the K-quants and the TQ types (`vec_dot_type` of TQ1_0
//! and TQ2_0). Per 256-element block: f32 `d`, 256 int8 `qs`, 16 block sums. Mirrors
//! `quantize_row_q8_K_ref` in ggml-quants.c, which the x86 CPU backend also uses
//! (`quantize_row_q8_K` in ggml-cpu/arch/x86/quants.c calls the reference).

use crate::error::{Error, Result};

pub const BLOCK: usize = 256;

/// One quantized activation block (`block_q8_K`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; BLOCK],
    pub bsums: [i16; BLOCK / 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K {
            d: 0.0,
            qs: [0; BLOCK],
            bsums: [0; BLOCK / 16],
        }
    }
}

/// ggml's `nearest_int`: round half to even via the 1.5 * 2^23 trick, exact for |x| < 2^22.
/// Non-finite inputs (activations of a model whose weights hold NaN or infinity) are not an
/// error: they get the bits the same float arithmetic gives in ggml (NaN -> 0, +-inf ->
/// -2^22), so the engine computes what the oracle computes rather than stopping.
#[inline]
pub fn nearest_int(x: f32) -> i32 {
    debug_assert!(
        !x.is_finite() || x.abs() <= 4_194_303.0,
        "nearest_int out of range: {x}"
    );
    let val = x + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// Quantize one activation row (length a multiple of 256).
pub fn quantize_row(x: &[f32], out: &mut Vec<BlockQ8K>) -> Result<()> {
    quantize_row_flip(x, out, false)
}

/// [`quantize_row`]; with `flip`, each block's element nearest a rounding tie is rounded the
/// other way (the noise twin's rounding).
pub fn quantize_row_flip(x: &[f32], out: &mut Vec<BlockQ8K>, flip: bool) -> Result<()> {
    if !x.len().is_multiple_of(BLOCK) {
        return Err(Error::format(
            "q8_k",
            format!(
                "activation row of {} values is not a multiple of 256 (ggml's Q8_K needs it)",
                x.len()
            ),
        ));
    }
    out.clear();
    #[cfg(target_arch = "x86_64")]
    if !flip && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2.
        unsafe { quantize_blocks_avx2(x, out) };
        return Ok(());
    }
    quantize_blocks(x, out, flip);
    Ok(())
}

/// [`quantize_blocks`] compiled for AVX2: the same Rust, so the same IEEE operations in the
/// same order (Rust never fuses a multiply and an add on its own), the same bytes; eight lanes
/// instead of the baseline's four where the compiler vectorizes (the block's largest value,
/// the rounding, the sums).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_blocks_avx2(x: &[f32], out: &mut Vec<BlockQ8K>) {
    quantize_blocks(x, out, false)
}

/// Every block of `x` (a whole number of blocks) onto `out`, as `quantize_row_q8_K_ref`.
#[inline(always)]
fn quantize_blocks(x: &[f32], out: &mut Vec<BlockQ8K>, flip: bool) {
    for xb in x.chunks_exact(BLOCK) {
        let mut blk = BlockQ8K::default();
        let (max, amax) = signed_absmax(xb);
        if amax != 0.0 {
            let iscale = -127.0f32 / max;
            for (q, &v) in blk.qs.iter_mut().zip(xb) {
                *q = nearest_int(iscale * v).min(127) as i8;
            }
            if flip {
                let scaled: Vec<f32> = xb.iter().map(|&v| iscale * v).collect();
                if let Some((i, other)) = super::nearest_tie(&scaled, |s| nearest_int(s) as f32) {
                    blk.qs[i] = other.clamp(-128.0, 127.0) as i8;
                }
            }
            for (s, chunk) in blk.bsums.iter_mut().zip(blk.qs.chunks_exact(16)) {
                *s = chunk.iter().map(|&q| q as i16).sum();
            }
            blk.d = 1.0 / iscale;
        }
        out.push(blk);
    }
}

/// The signed value of largest magnitude in `xb` (the first on ties; NaN never counts) and
/// its magnitude: what `quantize_row_q8_K_ref`'s scan `if |v| > amax { amax = |v|; max = v }`
/// finds, `(0, 0)` where every value is zero or NaN. Scanned in sixteen independent lanes,
/// each keeping its own first maximum and where it was, then the lanes' largest with the
/// earliest position: the scan's one chain of dependent compares was most of a Q8_K
/// quantization.
#[inline(always)]
fn signed_absmax(xb: &[f32]) -> (f32, f32) {
    const LANES: usize = 16;
    // Positions as u32 (a block is 256 values), so that they take the lanes of the floats.
    let (mut amax, mut max, mut at) = ([0f32; LANES], [0f32; LANES], [u32::MAX; LANES]);
    for (c, chunk) in xb.chunks_exact(LANES).enumerate() {
        for j in 0..LANES {
            let v = chunk[j];
            if v.abs() > amax[j] {
                amax[j] = v.abs();
                max[j] = v;
                at[j] = (c * LANES + j) as u32;
            }
        }
    }
    let mut best = (0f32, 0f32, u32::MAX);
    for j in 0..LANES {
        if amax[j] > best.1 || (amax[j] == best.1 && amax[j] > 0.0 && at[j] < best.2) {
            best = (max[j], amax[j], at[j]);
        }
    }
    // The tail past the last whole sixteen (none in a 256-value block) in order, as the scan.
    for &v in &xb[xb.len() / LANES * LANES..] {
        if v.abs() > best.1 {
            best = (v, v.abs(), 0);
        }
    }
    (best.0, best.1)
}

/// Dequantize (for tests and error analysis).
pub fn dequantize(blocks: &[BlockQ8K]) -> Vec<f32> {
    blocks
        .iter()
        .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * b.d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `gguf_model` fuzz target (fuzz/regressions/gguf_model/): a model whose norm
    /// weights hold NaN sent NaN activations here and the debug assertion stopped the engine.
    #[test]
    fn non_finite_activations_quantize_as_ggml_does() {
        assert_eq!(nearest_int(f32::NAN), 0);
        assert_eq!(nearest_int(f32::INFINITY), -0x40_0000);
        assert_eq!(nearest_int(f32::NEG_INFINITY), -0x40_0000);
        let mut x = vec![0.5f32; BLOCK];
        x[3] = f32::NAN;
        x[7] = f32::INFINITY;
        let mut out = Vec::new();
        quantize_row(&x, &mut out).unwrap();
        // amax is inf, so iscale is -0: every finite value rounds to 0, inf * -0 is NaN -> 0.
        assert!(out[0].qs.iter().all(|&q| q == 0));
        assert_eq!(out[0].d, f32::NEG_INFINITY);
        // The noise twin's tie flip over the same row must not stop either.
        quantize_row_flip(&x, &mut out, true).unwrap();
    }

    /// ggml's sequential scan, the reference `signed_absmax` must give bit for bit.
    fn scan(xb: &[f32]) -> (f32, f32) {
        let (mut max, mut amax) = (0f32, 0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        (max, amax)
    }

    proptest::proptest! {
        /// Values from a small set, so that magnitudes tie across lanes and within one (the
        /// scan keeps the first: `-2` before `2` gives `-2`), with NaN, signed zeros and
        /// infinities among them; lengths with and without a tail past sixteen.
        #[test]
        fn the_lane_scan_finds_the_first_value_of_largest_magnitude(
            picks in proptest::collection::vec(0usize..11, 0..300),
            scale in proptest::prop_oneof![proptest::strategy::Just(1f32), 1e-30f32..1e30],
        ) {
            let set = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, f32::NAN, f32::INFINITY,
                f32::NEG_INFINITY, 1.5];
            let xb: Vec<f32> = picks.iter().map(|&i| set[i] * scale).collect();
            let (a, b) = (signed_absmax(&xb), scan(&xb));
            proptest::prop_assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()));
        }

        /// `quantize_row` (through the AVX2 build of the block loop where this CPU has AVX2)
        /// gives the bytes of the baseline build, on rows with ties of magnitude, zeros, NaN,
        /// infinities and values at rounding ties.
        #[test]
        fn the_avx2_build_of_the_quantizer_gives_the_same_bytes(
            picks in proptest::collection::vec(0usize..12, BLOCK * 3),
            scale in 1e-3f32..1e3,
        ) {
            let set = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, f32::NAN, f32::INFINITY, 1.5,
                0.7, -0.3];
            let x: Vec<f32> = picks.iter().enumerate()
                .map(|(i, &p)| set[p] * scale * (1.0 + (i % 7) as f32 / 64.0))
                .collect();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            quantize_row(&x, &mut a).unwrap();
            quantize_blocks(&x, &mut b, false);
            let bytes = |v: &[BlockQ8K]| -> Vec<(u32, Vec<i8>, Vec<i16>)> {
                v.iter().map(|b| (b.d.to_bits(), b.qs.to_vec(), b.bsums.to_vec())).collect()
            };
            proptest::prop_assert_eq!(bytes(&a), bytes(&b));
        }

        /// Arbitrary finite floats in blocks of 256, as the quantizer sees them.
        #[test]
        fn the_lane_scan_equals_the_sequential_scan_on_blocks(
            xb in proptest::collection::vec(-1e6f32..1e6, BLOCK),
        ) {
            let (a, b) = (signed_absmax(&xb), scan(&xb));
            proptest::prop_assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()));
        }
    }
}
