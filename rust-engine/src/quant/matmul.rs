//! Matrix-vector products over a weight tensor for a batch of activation rows, dispatched on
//! (weight type, numerics profile). Each output value is computed by one sequential scalar
//! function, whatever thread runs it, so results do not depend on the thread count.
//!
//! This is the scalar reference: the SIMD and CUDA kernels of later issues slot in per format
//! beside the `vec_dot_*` functions it calls, and are tested against them.

use rayon::prelude::*;

use super::act_i8::{self, ActI8};
use super::i2_s::I2sLayout;
use super::kernels::Kernel;
use super::q8_k::{self, BlockQ8K};
use super::{bf16, f16, f32 as f32q, i2_s, q8_0, tq1_0, tq2_0};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::numerics::{Numerics, Profile};

/// A 2-D weight tensor viewed as `m` rows of `k` weights (GGUF shape `[k, m]`).
#[derive(Clone, Copy, Debug)]
pub struct WeightMatrix<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    /// Input width (ne0).
    pub k: usize,
    /// Output rows (ne1).
    pub m: usize,
    pub data: &'a [u8],
    pub i2s_layout: I2sLayout,
}

impl<'a> WeightMatrix<'a> {
    /// View `data` as a `[k, m]` matrix of type `ty`, checking that the type can be used as a
    /// matmul weight with that row length.
    pub fn new(
        name: &'a str,
        ty: GgmlType,
        k: usize,
        m: usize,
        data: &'a [u8],
        i2s_layout: I2sLayout,
    ) -> Result<Self> {
        let bad = |reason: String| Error::Invalid(format!("tensor '{name}' ({ty}): {reason}"));
        let block = match ty {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q8_0 => q8_0::BLOCK,
            GgmlType::TQ1_0 | GgmlType::TQ2_0 => tq2_0::BLOCK,
            // Rows must start on an I2_S block boundary for row-wise kernels.
            GgmlType::I2_S => i2s_layout.block(),
            other => {
                return Err(bad(format!(
                    "type {other} is not supported as a matmul weight"
                )))
            }
        };
        if k % block != 0 {
            return Err(bad(format!(
                "row length {k} is not a multiple of the {block}-weight block"
            )));
        }
        let want = ty.tensor_bytes(&[k as u64, m as u64]).map_err(bad)?;
        if data.len() as u64 != want {
            return Err(bad(format!("expected {want} bytes, found {}", data.len())));
        }
        if ty == GgmlType::I2_S {
            i2_s::check_codes(&data[..k * m / 4])?;
        }
        Ok(WeightMatrix {
            name,
            ty,
            k,
            m,
            data,
            i2s_layout,
        })
    }

    /// Bytes of one row (I2_S: only the codes).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = match self.ty {
            GgmlType::I2_S => self.k / 4,
            ty => (ty.tensor_bytes(&[self.k as u64]).expect("checked in new")) as usize,
        };
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The per-tensor scale of an I2_S tensor (1.0 for other types).
    pub fn tensor_scale(&self) -> f32 {
        if self.ty == GgmlType::I2_S {
            let codes = self.k * self.m / 4;
            f32::from_le_bytes(self.data[codes..codes + 4].try_into().expect("4 bytes"))
        } else {
            1.0
        }
    }

    /// Dequantize row `r` into `out` (length `k`).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) -> Result<()> {
        let row = self.row(r);
        match self.ty {
            GgmlType::I2_S => {
                let s = self.tensor_scale();
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (i2_s::code(row, i, self.i2s_layout) as i8 - 1) as f32 * s;
                }
                Ok(())
            }
            ty => super::dequantize_into(ty, row, out),
        }
    }
}

/// One activation row prepared in the form the weight type's kernel consumes.
enum Prepared {
    Q8K(Vec<BlockQ8K>),
    I8(ActI8),
    F16(Vec<half::f16>),
    /// F16 weights times f32 activations (bitnet.cpp's tinyBLAS for batches).
    F16xF32(Vec<f32>),
    BF16(Vec<u16>),
    Q8_0(Vec<u8>),
    F32(Vec<f32>),
    /// The f32 profile: weights dequantized, f64 products and sums.
    Exact(Vec<f32>),
}

fn prepare(
    w: &WeightMatrix,
    x: &[f32],
    n: usize,
    numerics: Numerics,
    flip: bool,
) -> Result<Prepared> {
    let profile = numerics.profile;
    Ok(match (profile, w.ty) {
        (Profile::F32, _) => Prepared::Exact(x.to_vec()),
        (_, GgmlType::F32) => Prepared::F32(x.to_vec()),
        (Profile::Ggml, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S) => {
            let mut blocks = Vec::with_capacity(x.len() / q8_k::BLOCK);
            q8_k::quantize_row_flip(x, &mut blocks, flip).map_err(|e| {
                Error::Invalid(format!("tensor '{}' under the ggml profile: {e}", w.name))
            })?;
            Prepared::Q8K(blocks)
        }
        (Profile::BitnetCpp, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S) => {
            let mut a = ActI8::default();
            act_i8::quantize_row_flip(x, &mut a, flip);
            Prepared::I8(a)
        }
        (_, GgmlType::F16) if !numerics.f16_activations.rounds(n) => Prepared::F16xF32(x.to_vec()),
        (_, GgmlType::F16) => {
            let mut v = Vec::with_capacity(x.len());
            f16::to_f16_row(x, &mut v);
            Prepared::F16(v)
        }
        (_, GgmlType::BF16) => {
            let mut v = Vec::with_capacity(x.len());
            bf16::to_bf16_row(x, &mut v);
            Prepared::BF16(v)
        }
        (_, GgmlType::Q8_0) => Prepared::Q8_0(q8_0::quantize_act_flip(x, flip)?),
        (_, other) => {
            return Err(Error::Invalid(format!(
                "no kernel for weight type {other} in tensor '{}'",
                w.name
            )))
        }
    })
}

/// How a planned engine (the noise twin, a self-test fault) computes differently from the
/// plain engine in a matmul.
#[derive(Clone, Copy)]
pub struct TwinRounding<'a> {
    /// Activation rows `r` with `flip(r)` round their element nearest a tie the other way.
    pub flip: &'a dyn Fn(usize) -> bool,
    /// Float dot products (F32/F16/BF16 weights) sum their f32 products in f32, one after the
    /// other, instead of in f64: another valid summation order, whose error grows with the
    /// terms' magnitudes as the oracles' f32 SIMD sums do.
    pub f32_sums: bool,
    /// The self-test's integer-overflow fault: I2_S integer dot products (int8 activations)
    /// wrap to 16 bits. Wrapping addition is associative, so the whole sum wrapped once equals
    /// any order of 16-bit partial sums.
    pub i16_sums: bool,
    /// The kernel set for the dot products that have SIMD variants (integer ones only, so the
    /// numbers are the same for every set).
    pub kernel: Kernel,
}

/// The plain engine's rounding, scalar kernels.
pub const PLAIN: TwinRounding<'static> = TwinRounding {
    flip: &|_| false,
    f32_sums: false,
    i16_sums: false,
    kernel: Kernel::Scalar,
};

/// A float dot product with f32 accumulation (the twin's [`TwinRounding::f32_sums`]); `None`
/// for quantized activations, whose integer sums are exact.
fn dot_f32_sum(w: &WeightMatrix, r: usize, a: &Prepared, scratch: &mut Vec<f32>) -> Option<f32> {
    if !matches!(
        a,
        Prepared::F32(_) | Prepared::F16xF32(_) | Prepared::F16(_) | Prepared::BF16(_)
    ) {
        return None;
    }
    scratch.resize(w.k, 0.0);
    w.dequantize_row(r, scratch)
        .expect("rows were validated when the matrix was built");
    let sum =
        |x: &mut dyn Iterator<Item = f32>| scratch.iter().zip(x).fold(0f32, |s, (&a, b)| s + a * b);
    Some(match a {
        Prepared::F32(x) | Prepared::F16xF32(x) => sum(&mut x.iter().copied()),
        Prepared::F16(x) => sum(&mut x.iter().map(|v| v.to_f32())),
        Prepared::BF16(x) => sum(&mut x.iter().map(|&v| f32::from_bits((v as u32) << 16))),
        _ => unreachable!("checked above"),
    })
}

/// A SIMD variant's result when `kernel` is a SIMD set and the variant runs here (`None`: use
/// the scalar reference). Every variant is bit-identical to its reference.
fn simd<T>(kernel: Kernel, f: impl FnOnce() -> Option<T>) -> Option<T> {
    match kernel {
        Kernel::Scalar => None,
        Kernel::Avx2 => f(),
    }
}

#[cfg(target_arch = "x86_64")]
use super::kernels::x86::{
    i2s_vec_dot_i8 as x86_i2s_i8, i2s_vec_dot_q8_k as x86_i2s_q8_k,
    tq2_0_vec_dot_i8 as x86_tq2_0_i8, tq2_0_vec_dot_q8_k as x86_tq2_0_q8_k,
};
#[cfg(not(target_arch = "x86_64"))]
fn x86_i2s_i8(_: &[u8], _: &[i8], _: I2sLayout) -> Option<i32> {
    None
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_i2s_q8_k(_: &[u8], _: &[BlockQ8K], _: I2sLayout) -> Option<f32> {
    None
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_tq2_0_q8_k(_: &[u8], _: &[BlockQ8K]) -> Option<f32> {
    None
}
#[cfg(not(target_arch = "x86_64"))]
fn x86_tq2_0_i8(_: &[u8], _: &[i8], _: f32) -> Option<f32> {
    None
}

/// Dot of weight row `r` with one prepared activation row; `i16` wraps I2_S integer sums.
fn dot(
    w: &WeightMatrix,
    r: usize,
    a: &Prepared,
    scratch: &mut Vec<f32>,
    i16: bool,
    kernel: Kernel,
) -> f32 {
    let row = w.row(r);
    match (a, w.ty) {
        (Prepared::F32(x), _) => f32q::vec_dot_f32(row, x),
        (Prepared::Exact(x), _) => {
            // f32 profile: dequantized weights, f64 products and sums.
            scratch.resize(w.k, 0.0);
            w.dequantize_row(r, scratch)
                .expect("rows were validated when the matrix was built");
            let s: f64 = scratch
                .iter()
                .zip(x)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum();
            s as f32
        }
        (Prepared::Q8K(y), GgmlType::TQ2_0) => {
            simd(kernel, || x86_tq2_0_q8_k(row, y)).unwrap_or_else(|| tq2_0::vec_dot_q8_k(row, y))
        }
        (Prepared::Q8K(y), GgmlType::TQ1_0) => tq1_0::vec_dot_q8_k(row, y),
        (Prepared::Q8K(y), GgmlType::I2_S) => simd(kernel, || x86_i2s_q8_k(row, y, w.i2s_layout))
            .unwrap_or_else(|| i2_s::vec_dot_q8_k(row, y, w.i2s_layout)),
        (Prepared::I8(a), GgmlType::TQ2_0) => simd(kernel, || x86_tq2_0_i8(row, &a.q, a.scale))
            .unwrap_or_else(|| tq2_0::vec_dot_i8(row, &a.q, a.scale)),
        (Prepared::I8(a), GgmlType::TQ1_0) => tq1_0::vec_dot_i8(row, &a.q, a.scale),
        (Prepared::I8(a), GgmlType::I2_S) => {
            let layout = w.i2s_layout;
            let sum = simd(kernel, || x86_i2s_i8(row, &a.q, layout))
                .unwrap_or_else(|| i2_s::vec_dot_i8(row, &a.q, layout));
            let sum = if i16 { sum as i16 as i32 } else { sum };
            act_i8::epilogue(sum, a.scale, w.tensor_scale())
        }
        (Prepared::F16(x), _) => f16::vec_dot_f16(row, x),
        (Prepared::F16xF32(x), _) => f16::vec_dot_f16_f32(row, x),
        (Prepared::BF16(x), _) => bf16::vec_dot_bf16(row, x),
        (Prepared::Q8_0(y), _) => q8_0::vec_dot_q8_0(row, y),
        _ => unreachable!("prepare() pairs every activation form with its weight types"),
    }
}

/// `out[t * m + r] = W[r] . x[t]` for `n` activation rows `x` (each `k` long), in the current
/// rayon pool, with the activation form `numerics` gives the weight type. Under the ggml
/// profile an I2_S tensor's scale is applied here as a separate f32 multiply after the dot, as
/// the transcoded `.scale` tensor is in ggml.
pub fn matmul(w: &WeightMatrix, x: &[f32], n: usize, numerics: Numerics) -> Result<Vec<f32>> {
    matmul_twin(w, x, n, numerics, PLAIN)
}

/// [`matmul`] with the noise twin's `rounding`.
pub fn matmul_twin(
    w: &WeightMatrix,
    x: &[f32],
    n: usize,
    numerics: Numerics,
    rounding: TwinRounding,
) -> Result<Vec<f32>> {
    let profile = numerics.profile;
    if x.len() != n * w.k {
        return Err(Error::Invalid(format!(
            "tensor '{}': {n} activation rows of width {} expected, got {} values",
            w.name,
            w.k,
            x.len()
        )));
    }
    let prepared = x
        .chunks_exact(w.k)
        .enumerate()
        .map(|(r, row)| prepare(w, row, n, numerics, (rounding.flip)(r)))
        .collect::<Result<Vec<_>>>()?;
    let post_scale = if profile == Profile::Ggml && w.ty == GgmlType::I2_S {
        Some(w.tensor_scale())
    } else {
        None
    };
    // Row-major per weight row (so a row's bytes are read once for all tokens), then transposed.
    const ROWS_PER_TASK: usize = 16;
    let mut by_row = vec![0f32; w.m * n];
    by_row
        .par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(|(chunk, out)| {
            let mut scratch = Vec::new();
            for (i, row_out) in out.chunks_exact_mut(n).enumerate() {
                let r = chunk * ROWS_PER_TASK + i;
                for (o, a) in row_out.iter_mut().zip(&prepared) {
                    let (i16, kernel) = (rounding.i16_sums, rounding.kernel);
                    let v = if rounding.f32_sums {
                        dot_f32_sum(w, r, a, &mut scratch)
                            .unwrap_or_else(|| dot(w, r, a, &mut scratch, i16, kernel))
                    } else {
                        dot(w, r, a, &mut scratch, i16, kernel)
                    };
                    *o = match post_scale {
                        Some(s) => v * s,
                        None => v,
                    };
                }
            }
        });
    let mut out = vec![0f32; n * w.m];
    for r in 0..w.m {
        for t in 0..n {
            out[t * w.m + r] = by_row[r * n + t];
        }
    }
    Ok(out)
}
