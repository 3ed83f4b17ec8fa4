//! Matrix-vector products over a weight tensor for a batch of activation rows, dispatched on
//! (weight type, numerics profile). Each output value is computed by one sequential scalar
//! function, whatever thread runs it, so results do not depend on the thread count.
//!
//! The scalar `vec_dot_*` functions are the reference; a SIMD kernel set (`TwinRounding::kernel`)
//! replaces the ternary dots for whole weight rows ([`SimdTernary`], several tokens per unpacked
//! chunk) and the float dots per token ([`simd_float_dot`]), each tested against the reference
//! in `tests/kernels_simd.rs`.

use rayon::prelude::*;

use super::act_i8::{self, ActI8};
use super::i2_s::I2sLayout;
use super::kernels::{ternary_block_dots, Kernel, TernaryActs, TernaryBatch, TernaryRow};
use super::q8_k::{self, BlockQ8K};
use super::ternary;
use super::tq2_0::Tq2_0;
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
        // `k` is a whole number of blocks (checked in `new`); I2_S's block reports 4 weights
        // per byte, which is its rows' size too (the trailer follows the last row).
        let b = self.ty.block();
        let rb = self.k / b.elements as usize * b.bytes as usize;
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
    /// The kernel set for the dot products that have SIMD variants (ternary ones bit-identical
    /// to scalar; float ones summing the same products in another f64 order).
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

/// Dot of weight row `r` with one prepared activation row: `kernel`'s float dot for float
/// weights where it has one, else the scalar reference; `i16` wraps I2_S integer sums. (The
/// ternary SIMD kernels run for whole rows in [`SimdTernary::row`].)
fn dot(
    w: &WeightMatrix,
    r: usize,
    a: &Prepared,
    scratch: &mut Vec<f32>,
    i16: bool,
    kernel: Kernel,
) -> f32 {
    let row = w.row(r);
    if let Some(v) = simd_float_dot(kernel, w.ty, row, a) {
        return v;
    }
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
        (Prepared::Q8K(y), GgmlType::TQ2_0) => tq2_0::vec_dot_q8_k(row, y),
        (Prepared::Q8K(y), GgmlType::TQ1_0) => tq1_0::vec_dot_q8_k(row, y),
        (Prepared::Q8K(y), GgmlType::I2_S) => i2_s::vec_dot_q8_k(row, y, w.i2s_layout),
        (Prepared::I8(a), GgmlType::TQ2_0) => tq2_0::vec_dot_i8(row, &a.q, a.scale),
        (Prepared::I8(a), GgmlType::TQ1_0) => tq1_0::vec_dot_i8(row, &a.q, a.scale),
        (Prepared::I8(a), GgmlType::I2_S) => {
            let sum = i2_s::vec_dot_i8(row, &a.q, w.i2s_layout);
            i2s_i8_epilogue(w, a, sum, i16)
        }
        (Prepared::F16(x), _) => f16::vec_dot_f16(row, x),
        (Prepared::F16xF32(x), _) => f16::vec_dot_f16_f32(row, x),
        (Prepared::BF16(x), _) => bf16::vec_dot_bf16(row, x),
        (Prepared::Q8_0(y), _) => q8_0::vec_dot_q8_0(row, y),
        _ => unreachable!("prepare() pairs every activation form with its weight types"),
    }
}

/// `kernel`'s float dot (F32, F16, BF16 weights), `None` where it has none or it does not run
/// here.
fn simd_float_dot(kernel: Kernel, ty: GgmlType, row: &[u8], a: &Prepared) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    {
        use super::kernels::x86::{float_dot, FloatActs, FloatRow};
        if kernel != Kernel::Avx2 {
            return None;
        }
        let w = match ty {
            GgmlType::F32 => FloatRow::F32(row),
            GgmlType::F16 => FloatRow::F16(row),
            GgmlType::BF16 => FloatRow::BF16(row),
            _ => return None,
        };
        let x = match a {
            Prepared::F32(x) | Prepared::F16xF32(x) => FloatActs::F32(x),
            Prepared::F16(x) => FloatActs::F16(x),
            Prepared::BF16(x) => FloatActs::BF16(x),
            _ => return None,
        };
        float_dot(w, x)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kernel, ty, row, a);
        None
    }
}

/// bitnet.cpp's I2_S epilogue for an integer dot, wrapped to 16 bits first under `i16`.
fn i2s_i8_epilogue(w: &WeightMatrix, a: &ActI8, sum: i32, i16: bool) -> f32 {
    let sum = if i16 { sum as i16 as i32 } else { sum };
    act_i8::epilogue(sum, a.scale, w.tensor_scale())
}

/// The tokens of a matmul in the form a SIMD ternary kernel reads, where the kernel set has
/// one for this weight type and activation form.
struct SimdTernary<'p> {
    kernel: Kernel,
    prepared: &'p [Prepared],
    batch: TernaryBatch<'p>,
}

impl<'p> SimdTernary<'p> {
    fn new(w: &WeightMatrix, prepared: &'p [Prepared], kernel: Kernel) -> Option<Self> {
        if kernel == Kernel::Scalar || ternary_row(w, 0).is_none() {
            return None;
        }
        let acts = prepared
            .iter()
            .map(|a| match a {
                Prepared::Q8K(y) => Some(TernaryActs::Q8K(y)),
                Prepared::I8(a) => Some(TernaryActs::I8(&a.q)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let batch = TernaryBatch::new(acts)?;
        Some(SimdTernary {
            kernel,
            prepared,
            batch,
        })
    }

    /// Every token's dot with weight row `r`, through the kernel's integer block dots and the
    /// scalar reference's own float epilogue (the block scales read once per row), so
    /// bit-identical to [`dot`]; `false` where the kernel does not run here (the caller then
    /// uses [`dot`]).
    fn row(
        &self,
        w: &WeightMatrix,
        r: usize,
        i16: bool,
        scratch: &mut (Vec<i32>, Vec<f32>),
        out: &mut [f32],
    ) -> bool {
        let Some(row) = ternary_row(w, r) else {
            return false;
        };
        let (dots, scales) = scratch;
        let blocks = row.blocks();
        dots.resize(blocks * self.batch.tokens(), 0);
        if ternary_block_dots(self.kernel, row, &self.batch, dots).is_none() {
            return false;
        }
        let bytes = w.row(r);
        if w.ty == GgmlType::TQ2_0 {
            scales.clear();
            scales.extend(ternary::block_scales::<Tq2_0>(bytes));
        }
        let tokens = out.iter_mut().zip(self.prepared);
        for ((o, a), d) in tokens.zip(dots.chunks_exact(blocks)) {
            let (d, s) = (d.iter().copied(), scales.iter().copied());
            *o = match (a, w.ty) {
                (Prepared::Q8K(y), GgmlType::TQ2_0) => ternary::epilogue_q8_k(s, y, d),
                (Prepared::Q8K(y), _) => i2_s::epilogue_q8_k(y, d),
                (Prepared::I8(a), GgmlType::TQ2_0) => ternary::epilogue_i8(s, a.scale, d),
                (Prepared::I8(a), _) => i2s_i8_epilogue(w, a, d.sum(), i16),
                _ => unreachable!("SimdTernary::new takes only Q8_K and int8 activations"),
            };
        }
        true
    }
}

/// Weight row `r` as a SIMD ternary kernel reads it, for the formats that have one.
fn ternary_row<'a>(w: &WeightMatrix<'a>, r: usize) -> Option<TernaryRow<'a>> {
    match w.ty {
        GgmlType::TQ2_0 => Some(TernaryRow::Tq2_0(w.row(r))),
        GgmlType::I2_S if w.i2s_layout == I2sLayout::Block128 => Some(TernaryRow::I2s(w.row(r))),
        _ => None,
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
    let simd = SimdTernary::new(w, &prepared, rounding.kernel);
    let (i16, kernel) = (rounding.i16_sums, rounding.kernel);
    // Row-major per weight row (so a row's bytes are read once for all tokens), then transposed.
    const ROWS_PER_TASK: usize = 16;
    let mut by_row = vec![0f32; w.m * n];
    by_row
        .par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(|(chunk, out)| {
            let (mut scratch, mut simd_scratch) = (Vec::new(), (Vec::new(), Vec::new()));
            for (i, row_out) in out.chunks_exact_mut(n).enumerate() {
                let r = chunk * ROWS_PER_TASK + i;
                let by_simd = simd
                    .as_ref()
                    .is_some_and(|s| s.row(w, r, i16, &mut simd_scratch, row_out));
                if !by_simd {
                    for (o, a) in row_out.iter_mut().zip(&prepared) {
                        *o = if rounding.f32_sums {
                            dot_f32_sum(w, r, a, &mut scratch)
                                .unwrap_or_else(|| dot(w, r, a, &mut scratch, i16, kernel))
                        } else {
                            dot(w, r, a, &mut scratch, i16, kernel)
                        };
                    }
                }
                if let Some(s) = post_scale {
                    row_out.iter_mut().for_each(|o| *o *= s);
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
