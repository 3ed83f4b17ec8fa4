//! I2_S (bitnet.cpp fork, as in the official `ggml-model-i2_s.gguf`): the whole tensor, row-major,
//! cut into blocks of 128 weights in 32 bytes; weight `j` of a block sits in byte `j % 32` at bit
//! shift `6 - 2*(j / 32)`. Codes 0 -> -1, 1 -> 0, 2 -> +1; code 3 is never written. After the
//! `n/4` code bytes comes one f32 per-tensor scale, then padding to 32 bytes (garbage allowed).
//! Builds of bitnet.cpp after Nov 2025 on ARM use 64-weight blocks of 16 bytes instead
//! ([`I2sLayout::Block64`]). Encoder: bitnet.cpp's `quantize_i2_s` (sign only, scale = max|w|).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gguf::I2S_TRAILER_BYTES;

/// Which I2_S block layout a file uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum I2sLayout {
    /// 128 weights per 32-byte block: the official file and bitnet.cpp x86 builds.
    #[default]
    Block128,
    /// 64 weights per 16-byte block: bitnet.cpp ARM builds after Nov 2025.
    Block64,
}

impl I2sLayout {
    /// Weights per block.
    pub fn block(self) -> usize {
        match self {
            I2sLayout::Block128 => 128,
            I2sLayout::Block64 => 64,
        }
    }

    /// Bytes per block (4 weights per byte).
    pub fn block_bytes(self) -> usize {
        self.block() / 4
    }

    pub fn name(self) -> &'static str {
        match self {
            I2sLayout::Block128 => "block128",
            I2sLayout::Block64 => "block64",
        }
    }
}

/// Check the buffer length for `n` weights and return the number of code bytes.
fn check(bytes: usize, n: usize, layout: I2sLayout) -> Result<usize> {
    if !n.is_multiple_of(layout.block()) {
        return Err(Error::format(
            "i2_s",
            format!(
                "{n} weights is not a multiple of the {}-weight block ({})",
                layout.block(),
                layout.name()
            ),
        ));
    }
    let want = n / 4 + I2S_TRAILER_BYTES as usize;
    if bytes != want {
        return Err(Error::format(
            "i2_s",
            format!("{n} weights need {want} bytes (n/4 + 32), got {bytes}"),
        ));
    }
    Ok(n / 4)
}

/// The per-tensor scale stored after the codes.
pub fn scale(bytes: &[u8], n: usize) -> Result<f32> {
    let codes = check(bytes.len(), n, I2sLayout::Block64)?;
    Ok(f32::from_le_bytes(
        bytes[codes..codes + 4].try_into().expect("4 bytes"),
    ))
}

/// The 2-bit code (0, 1, 2 valid; 3 corrupt) of weight `i` of the tensor.
#[inline]
pub fn code(codes: &[u8], i: usize, layout: I2sLayout) -> u8 {
    let (block, bb) = (layout.block(), layout.block_bytes());
    let (b, j) = (i / block, i % block);
    (codes[b * bb + j % bb] >> (6 - 2 * (j / bb))) & 3
}

/// Decode the ternary values (-1, 0, +1) of all weights, rejecting code 3.
pub fn trits(bytes: &[u8], n: usize, layout: I2sLayout) -> Result<Vec<i8>> {
    let codes_len = check(bytes.len(), n, layout)?;
    let codes = &bytes[..codes_len];
    (0..n)
        .map(|i| match code(codes, i, layout) {
            3 => Err(Error::Corrupt {
                what: "i2_s".into(),
                reason: format!("weight {i} has code 3, which bitnet.cpp never writes"),
            }),
            c => Ok(c as i8 - 1),
        })
        .collect()
}

pub fn dequantize(bytes: &[u8], out: &mut [f32], layout: I2sLayout) -> Result<()> {
    let t = trits(bytes, out.len(), layout)?;
    let s = scale(bytes, out.len())?;
    for (o, t) in out.iter_mut().zip(t) {
        *o = t as f32 * s;
    }
    Ok(())
}

/// Pack ternary values and a scale into the I2_S tensor image (padding bytes zero). Values
/// outside -1..=1 are refused: they would become code 3, which no reader accepts.
pub fn pack(trits: &[i8], scale: f32, layout: I2sLayout) -> Result<Vec<u8>> {
    let n = trits.len();
    if let Some(i) = trits.iter().position(|t| !(-1..=1).contains(t)) {
        return Err(Error::format(
            "i2_s",
            format!(
                "value {} at index {i} is not ternary (-1, 0 or +1)",
                trits[i]
            ),
        ));
    }
    let mut out = vec![0u8; n / 4 + I2S_TRAILER_BYTES as usize];
    check(out.len(), n, layout)?;
    let (block, bb) = (layout.block(), layout.block_bytes());
    for (i, &t) in trits.iter().enumerate() {
        let (b, j) = (i / block, i % block);
        out[b * bb + j % bb] |= (((t + 1) as u8) & 3) << (6 - 2 * (j / bb));
    }
    out[n / 4..n / 4 + 4].copy_from_slice(&scale.to_le_bytes());
    Ok(out)
}

/// bitnet.cpp's `quantize_i2_s`: scale = max|w|, each weight reduced to its sign
/// (|w| < 1e-6 -> 0).
pub fn quantize(values: &[f32], layout: I2sLayout) -> Result<Vec<u8>> {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let trits: Vec<i8> = values
        .iter()
        .map(|&v| {
            if v.abs() < 1e-6 {
                0
            } else if v > 0.0 {
                1
            } else {
                -1
            }
        })
        .collect();
    pack(&trits, max, layout)
}

/// Integer dot of one block's codes (`layout.block_bytes()` bytes) with its
/// `layout.block()` int8 activations: `sum (code - 1) * q`, weight `g * bb + b` in byte `b` at
/// shift `6 - 2g` (the layout of [`code`], walked byte-wise as `ggml_vec_dot_i2_i8_s` does).
#[inline]
fn block_dot_i8(blk: &[u8], qb: &[i8], bb: usize) -> i32 {
    let mut sum = 0i32;
    for g in 0..4 {
        let shift = 6 - 2 * g;
        for (b, &byte) in blk.iter().enumerate() {
            sum += (((byte >> shift) & 3) as i32 - 1) * qb[g * bb + b] as i32;
        }
    }
    sum
}

/// Integer dot of one row's codes (`k/4` bytes, starting on a block boundary) with `k` int8
/// activations: `sum (code - 1) * q`, which equals bitnet.cpp's `sum code*q - sum q`
/// (`ggml_vec_dot_i2_i8_s`). Code 3 cannot occur in rows that passed [`check_codes`].
pub fn vec_dot_i8(codes: &[u8], q: &[i8], layout: I2sLayout) -> i32 {
    let bb = layout.block_bytes();
    debug_assert_eq!(codes.len() * 4, q.len(), "i2_s row/activation mismatch");
    codes
        .chunks_exact(bb)
        .zip(q.chunks_exact(layout.block()))
        .map(|(blk, qb)| block_dot_i8(blk, qb, bb))
        .sum()
}

/// The ggml profile's view of an I2_S row: the lossless TQ2_0 transcode (codes with d = 1.0)
/// dotted with Q8_K activations as `ggml_vec_dot_tq2_0_q8_K_generic` does; the per-tensor
/// scale is applied afterwards as a separate multiply, like the transcoded `.scale` tensor.
pub fn vec_dot_q8_k(codes: &[u8], y: &[super::q8_k::BlockQ8K], layout: I2sLayout) -> f32 {
    vec_dot_q8_k_by(codes, y, |c, q| vec_dot_i8(c, q, layout))
}

/// [`vec_dot_q8_k`] with the integer dot of each Q8_K block's 64 code bytes from `dot` (a
/// SIMD kernel's): the f32 epilogue stays this one, the same for every kernel set.
#[inline]
pub fn vec_dot_q8_k_by(
    codes: &[u8],
    y: &[super::q8_k::BlockQ8K],
    dot: impl Fn(&[u8], &[i8]) -> i32,
) -> f32 {
    debug_assert_eq!(
        codes.len() * 4,
        y.len() * 256,
        "i2_s row/activation mismatch"
    );
    // Integer sums are exact: the order of the I2_S blocks inside a Q8_K block is free.
    let sums = y
        .iter()
        .zip(codes.chunks_exact(64))
        .map(|(yb, blocks)| dot(blocks, &yb.qs));
    epilogue_q8_k(y, sums)
}

/// The float part of [`vec_dot_q8_k`] given each Q8_K block's integer dot (`sums`, in order).
#[inline]
pub fn epilogue_q8_k(y: &[super::q8_k::BlockQ8K], sums: impl IntoIterator<Item = i32>) -> f32 {
    let mut sumf = 0f32;
    for (yb, sumi) in y.iter().zip(sums) {
        // d_x of the transcoded block is f16 1.0.
        sumf += sumi as f32 * (yb.d * 1.0);
    }
    sumf
}

/// Reject code 3 anywhere in a tensor's codes (done once at load, so the kernels need not).
pub fn check_codes(codes: &[u8]) -> Result<()> {
    // Eight bytes at a time (a whole tensor is checked at load); the byte-wise scan below
    // finds and names the first bad byte.
    let words = codes.chunks_exact(8);
    let clean = words
        .clone()
        .take_while(|w| {
            let w = u64::from_le_bytes((*w).try_into().expect("8 bytes"));
            w & (w >> 1) & 0x5555_5555_5555_5555 == 0
        })
        .count()
        * 8;
    if clean == codes.len() - codes.len() % 8 && words.remainder().is_empty() {
        return Ok(());
    }
    for (i, &b) in codes.iter().enumerate().skip(clean) {
        // A code of 3 has both bits set: detect any such pair in the byte at once.
        let both = b & (b >> 1) & 0b0101_0101;
        if both != 0 {
            return Err(Error::Corrupt {
                what: "i2_s".into(),
                reason: format!(
                    "byte {i} of the codes holds code 3, which bitnet.cpp never writes"
                ),
            });
        }
    }
    Ok(())
}
