//! Tensor formats, one module per format: its layout, its reference dequantizer and encoder
//! (mirroring ggml's `*_ref` functions bit for bit), and later its scalar kernels with the SIMD
//! variants beside them.

pub mod act_i8;
pub mod bf16;
pub mod f16;
pub mod f32;
pub mod i2_s;
pub mod kernels;
pub mod matmul;
pub mod q6_k;
pub mod q8_0;
pub mod q8_k;
pub mod ternary;
pub mod tq1_0;
pub mod tq2_0;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Decode `n` elements of type `ty` to f32 (I2_S in the official 128-weight layout; use
/// [`i2_s::dequantize`] for the other reading).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    // `n` often comes from a file header: check it against the bytes before allocating n floats.
    let want = ty
        .tensor_bytes(&[n as u64])
        .map_err(|reason| Error::format(ty.name(), reason))?;
    if want != bytes.len() as u64 {
        return Err(Error::format(
            ty.name(),
            format!("{n} elements need {want} bytes, got {}", bytes.len()),
        ));
    }
    let mut out = vec![0f32; n];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// Decode into a caller's buffer, whose length is the element count.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    match ty {
        GgmlType::F32 => f32::dequantize(bytes, out),
        GgmlType::F16 => f16::dequantize(bytes, out),
        GgmlType::BF16 => bf16::dequantize(bytes, out),
        GgmlType::Q8_0 => q8_0::dequantize(bytes, out),
        GgmlType::Q6_K => q6_k::dequantize(bytes, out),
        GgmlType::TQ1_0 => tq1_0::dequantize(bytes, out),
        GgmlType::TQ2_0 => tq2_0::dequantize(bytes, out),
        GgmlType::I2_S => i2_s::dequantize(bytes, out, i2_s::I2sLayout::default()),
        other => Err(unsupported(other)),
    }
}

/// Encode f32 values as type `ty` with ggml's reference quantizer (bitnet.cpp's for I2_S).
/// Blocks never straddle rows when the row length is a multiple of the block size, so a whole
/// tensor encodes the same as row by row.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    match ty {
        GgmlType::F32 => Ok(f32::quantize(values)),
        GgmlType::F16 => Ok(f16::quantize(values)),
        GgmlType::BF16 => Ok(bf16::quantize(values)),
        GgmlType::Q8_0 => q8_0::quantize(values),
        GgmlType::Q6_K => q6_k::quantize(values),
        GgmlType::TQ1_0 => tq1_0::quantize(values),
        GgmlType::TQ2_0 => tq2_0::quantize(values),
        GgmlType::I2_S => i2_s::quantize(values, i2_s::I2sLayout::default()),
        other => Err(unsupported(other)),
    }
}

fn unsupported(ty: GgmlType) -> Error {
    Error::format(
        "codec",
        format!("type {ty} can be inspected but not decoded or encoded by xval"),
    )
}

/// Check that a block format's buffers agree: `bytes` holds exactly `elements / block` blocks
/// (element formats are blocks of 1).
pub(crate) fn check_blocks(
    format: &'static str,
    bytes: usize,
    elements: usize,
    block: usize,
    block_bytes: usize,
) -> Result<usize> {
    if !elements.is_multiple_of(block) {
        return Err(Error::format(
            format,
            format!("{elements} elements is not a multiple of the block size {block}"),
        ));
    }
    let blocks = elements / block;
    if bytes != blocks * block_bytes {
        let layout = if block == 1 {
            String::new()
        } else {
            format!(" ({blocks} blocks of {block_bytes})")
        };
        return Err(Error::format(
            format,
            format!(
                "{elements} elements need {} bytes{layout}, got {bytes}",
                blocks * block_bytes
            ),
        ));
    }
    Ok(blocks)
}

/// The element of a quantized row (or block) nearest a rounding tie, and its other rounding:
/// among the scaled values `s_i` (before rounding to integers, each rounded to `r_i`), the one
/// with `|s_i - r_i|` closest to 1/2, and the integer on the other side of that tie. The noise
/// twin rounds it the other way: the largest difference a tiny legitimate perturbation of the
/// row's values could make to its codes. Non-finite values are skipped.
pub(crate) fn nearest_tie(scaled: &[f32], rounded: impl Fn(f32) -> f32) -> Option<(usize, f32)> {
    let mut best: Option<(usize, f32, f32)> = None;
    for (i, &s) in scaled.iter().enumerate() {
        if !s.is_finite() {
            continue;
        }
        let r = rounded(s);
        let gap = (0.5 - (s - r).abs()).abs();
        if best.is_none_or(|(_, g, _)| gap < g) {
            let other = if s >= r { r + 1.0 } else { r - 1.0 };
            best = Some((i, gap, other));
        }
    }
    best.map(|(i, _, other)| (i, other))
}

/// Round half away from zero, as C's `roundf`/`lroundf` (Rust's `f32::round` does the same).
///
/// A non-finite argument gives 0. It occurs only when a block's largest |x| is so small (below
/// ~2^-128) that the reciprocal scale `id` overflows, so `x * id` is +-inf (or NaN for x = 0).
/// C leaves the conversion of those to an integer undefined; on x86-64, where llama-quantize
/// runs, it yields the "integer indefinite" 0x8000_0000(_0000_0000), which becomes the zero code
/// in both of ggml's encoders: `(int8_t)roundf(..)` in `quantize_row_q8_0_ref` keeps its low byte
/// 0, `lroundf(..) + 1` in `quantize_row_tq{1,2}_0_ref` truncates to 1 (trit 0). Without this,
/// Rust's saturating cast wrote 0xff / code 2 for +inf (found by the kernel-parity tests; the
/// block's f16 scale is 0, so the decoded values agreed, the bytes did not).
#[inline]
pub(crate) fn round_away(x: f32) -> i32 {
    if x.is_finite() {
        x.round() as i32
    } else {
        0
    }
}
