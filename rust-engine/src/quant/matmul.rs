//! Matrix-vector products over a weight tensor for a batch of activation rows, dispatched on
//! (weight type, numerics profile). Each output value is computed by one sequential scalar
//! function, whatever thread runs it, so results do not depend on the thread count.
//!
//! The scalar `vec_dot_*` functions are the reference; a SIMD kernel set (`TwinRounding::kernel`)
//! replaces the ternary dots for whole weight rows ([`SimdTernary`], several tokens per unpacked
//! chunk) and the float dots ([`SimdFloat`], two tokens per pass over a row), each tested against the reference
//! in `tests/kernels_simd.rs`.

use rayon::prelude::*;

use super::act_i8::{self, ActI8};
use super::i2_s::I2sLayout;
#[cfg(target_arch = "x86_64")]
use super::kernels::amx::{AmxActs, Out as AmxOut};
use super::kernels::float::{
    self, f32_sum_dots, float_dots, float_dots_rows, FloatActs, FloatBatch, FloatRow,
    F32_SUM_TOKENS,
};
use super::kernels::{
    Kernel, Sums8, TernaryActs, TernaryBatch, TernaryRow, TernaryRunner, TERNARY_TOKENS_PER_PASS,
};
use super::q8_k::{self, BlockQ8K};
use super::ternary;
use super::{bf16, f16, f32 as f32q, i2_s, q6_k, q8_0, tq1_0, tq2_0};
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
            GgmlType::Q6_K => q6_k::BLOCK,
            GgmlType::TQ1_0 | GgmlType::TQ2_0 => tq2_0::BLOCK,
            // Rows must start on an I2_S block boundary for row-wise kernels.
            GgmlType::I2_S => i2s_layout.block(),
            other => {
                return Err(bad(format!(
                    "type {other} is not supported as a matmul weight"
                )))
            }
        };
        if !k.is_multiple_of(block) {
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
        // ggml's vec_dot_type for Q6_K is Q8_K, under every profile but F32.
        (_, GgmlType::Q6_K) => {
            let mut blocks = Vec::with_capacity(x.len() / q8_k::BLOCK);
            q8_k::quantize_row_flip(x, &mut blocks, flip)
                .map_err(|e| Error::Invalid(format!("tensor '{}' (q6_K weights): {e}", w.name)))?;
            Prepared::Q8K(blocks)
        }
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
    pub flip: &'a (dyn Fn(usize) -> bool + Sync),
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

/// Dot of weight row `r` with one prepared activation row by the scalar reference; `i16` wraps
/// I2_S integer sums. (The SIMD kernels run for whole rows and every token in
/// [`SimdTernary::rows`] and [`SimdFloat::rows`].)
fn dot(w: &WeightMatrix, r: usize, a: &Prepared, scratch: &mut Vec<f32>, i16: bool) -> f32 {
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
        (Prepared::Q8K(y), GgmlType::TQ2_0) => tq2_0::vec_dot_q8_k(row, y),
        (Prepared::Q8K(y), GgmlType::TQ1_0) => tq1_0::vec_dot_q8_k(row, y),
        (Prepared::Q8K(y), GgmlType::I2_S) => i2_s::vec_dot_q8_k(row, y, w.i2s_layout),
        (Prepared::Q8K(y), GgmlType::Q6_K) => q6_k::vec_dot_q8_k(row, y),
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

/// The tokens of a float matmul (F32, F16, BF16 weights) in the form a kernel set's float dots
/// read them, where the set has them and this CPU runs them (AVX2 with F16C and FMA; NEON):
/// the plain engine's dots (`float::float_dots`, two tokens per pass over a row; the
/// reference's products summed in f64 in another order, so within `float::float_dot_bound` of
/// it and nearly always equal), or under the noise twin's [`TwinRounding::f32_sums`] its
/// sequential f32 folds (`float::f32_sum_dots`, eight rows side by side, bit-identical to
/// [`dot_f32_sum`]).
struct SimdFloat {
    batch: FloatBatch,
    f32_sums: bool,
}

impl SimdFloat {
    fn new(
        w: &WeightMatrix,
        prepared: &[Prepared],
        kernel: Kernel,
        f32_sums: bool,
    ) -> Option<Self> {
        if !float::available(kernel) {
            return None;
        }
        let ty = float_row(w, 0)?.ty();
        let acts = prepared
            .iter()
            .map(|a| match a {
                Prepared::F32(x) | Prepared::F16xF32(x) => Some(FloatActs::F32(x)),
                Prepared::F16(x) => Some(FloatActs::F16(x)),
                Prepared::BF16(x) => Some(FloatActs::BF16(x)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SimdFloat {
            batch: FloatBatch::new(kernel, ty, &acts)?,
            f32_sums,
        })
    }

    /// Every token's dot with weight rows `r0..r0 + out.len() / n` (`out[i * n + t]` for row
    /// `r0 + i`, token `t`). The plain dots go token pass by token pass, each over all the
    /// rows, so a pass's activations stay in L1 while the rows (a tile that fits L2) are read
    /// again; the twin's folds go eight rows at a time, every token over them.
    fn rows(&self, w: &WeightMatrix, r0: usize, out: &mut [f32]) {
        let n = self.batch.tokens();
        let row = |r| float_row(w, r).expect("a float weight type (checked in new)");
        if self.f32_sums {
            let kernel = self.batch.kernel();
            let mut sums = [0f32; 8 * F32_SUM_TOKENS];
            for (i0, tile_out) in out.chunks_mut(8 * n).enumerate().map(|(c, o)| (8 * c, o)) {
                let views: Vec<_> = (0..tile_out.len() / n).map(|i| row(r0 + i0 + i)).collect();
                let m = views.len();
                let mut t0 = 0;
                while t0 < n {
                    let tn = (n - t0).min(F32_SUM_TOKENS);
                    let mut xs = [&[][..]; F32_SUM_TOKENS];
                    for (t, x) in xs.iter_mut().enumerate().take(tn) {
                        *x = self.batch.token(t0 + t);
                    }
                    let sums = &mut sums[..tn * m];
                    f32_sum_dots(kernel, &views, &xs[..tn], sums)
                        .expect("the rows fit the batch (checked in new)");
                    for t in 0..tn {
                        for j in 0..m {
                            tile_out[j * n + t0 + t] = sums[t * m + j];
                        }
                    }
                    t0 += tn;
                }
            }
            return;
        }
        if n == 1 {
            // One token (decode's lm_head): rows side by side, each its own stream.
            let rows: Vec<_> = (0..out.len()).map(|i| row(r0 + i)).collect();
            float_dots_rows(&rows, &self.batch, 0, out)
                .expect("the rows fit the batch (checked in new)");
            return;
        }
        let mut t0 = 0;
        while t0 < n {
            let tokens = t0..(t0 + self.batch.tokens_per_pass()).min(n);
            for (i, row_out) in out.chunks_exact_mut(n).enumerate() {
                float_dots(
                    row(r0 + i),
                    &self.batch,
                    tokens.clone(),
                    &mut row_out[tokens.clone()],
                )
                .expect("the row fits the batch (checked in new)");
            }
            t0 = tokens.end;
        }
    }
}

/// Weight row `r` as the SIMD float dots read it, for the float weight types.
fn float_row<'a>(w: &WeightMatrix<'a>, r: usize) -> Option<FloatRow<'a>> {
    match w.ty {
        GgmlType::F32 => Some(FloatRow::F32(w.row(r))),
        GgmlType::F16 => Some(FloatRow::F16(w.row(r))),
        GgmlType::BF16 => Some(FloatRow::BF16(w.row(r))),
        _ => None,
    }
}

/// A fused kernel's float sum for token `a` as the matmul's output: with int8 activations the
/// reference epilogue's sum before its division by the activation scale, which comes here.
#[inline]
fn float_sum_output(sum: f32, a: &Prepared) -> f32 {
    match a {
        Prepared::I8(a) => sum / a.scale,
        _ => sum,
    }
}

/// A fused kernel's integer sum (I2_S rows, int8 activations) for token `a` as the matmul's
/// output: bitnet.cpp's epilogue.
#[inline]
fn int_sum_output(w: &WeightMatrix, a: &Prepared, sum: i32, i16: bool) -> f32 {
    match a {
        Prepared::I8(a) => i2s_i8_epilogue(w, a, sum, i16),
        _ => unreachable!("integer sums only for int8 activations"),
    }
}

/// bitnet.cpp's I2_S epilogue for an integer dot, wrapped to 16 bits first under `i16`.
fn i2s_i8_epilogue(w: &WeightMatrix, a: &ActI8, sum: i32, i16: bool) -> f32 {
    let sum = if i16 { sum as i16 as i32 } else { sum };
    act_i8::epilogue(sum, a.scale, w.tensor_scale())
}

/// The tokens of a matmul in the form a SIMD ternary kernel reads, where the kernel set has
/// one for this weight type and activation form and this CPU runs it: groups of up to four
/// tokens, the most one pass of the kernel over a weight row serves.
struct SimdTernary<'p> {
    runner: TernaryRunner,
    prepared: &'p [Prepared],
    groups: Vec<TernaryBatch<'p>>,
    /// The tokens as AMX tiles, where the set runs them and there are enough tokens.
    #[cfg(target_arch = "x86_64")]
    amx: Option<AmxActs>,
}

/// The fewest tokens the `amx` set's tile kernel takes a matmul for (a token tile holds
/// sixteen; fewer leave lanes empty): where it measured faster than the `avx512` kernels,
/// 2B-4T TQ2_0 prefill (`forward_speed MODEL N 0 3 amx 2`, two runs each): 8 tokens 126-127
/// ms against 133-135, 7 tokens 125-128 against 126, 5 tokens 120-124 against 109-113.
#[cfg(target_arch = "x86_64")]
const AMX_MIN_TOKENS: usize = 8;

impl<'p> SimdTernary<'p> {
    fn new(w: &WeightMatrix, prepared: &'p [Prepared], kernel: Kernel) -> Option<Self> {
        let runner = TernaryRunner::new(kernel)?;
        TernaryRows::of(w)?;
        let acts = prepared
            .iter()
            .map(|a| match a {
                Prepared::Q8K(y) => Some(TernaryActs::Q8K(y)),
                Prepared::I8(a) => Some(TernaryActs::I8(&a.q)),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        let groups = acts
            .chunks(TERNARY_TOKENS_PER_PASS)
            .map(|g| TernaryBatch::new(g.to_vec()))
            .collect::<Option<Vec<_>>>()?;
        #[cfg(target_arch = "x86_64")]
        let amx = (runner.has_rows16()
            && acts.len() >= AMX_MIN_TOKENS
            && matches!(w.ty, GgmlType::TQ2_0 | GgmlType::TQ1_0 | GgmlType::I2_S))
        .then(|| {
            let int = w.ty == GgmlType::I2_S && matches!(acts[0], TernaryActs::I8(_));
            AmxActs::new(&groups, int)
        })
        .flatten();
        Some(SimdTernary {
            runner,
            prepared,
            groups,
            #[cfg(target_arch = "x86_64")]
            amx,
        })
    }

    /// The row count the matmul's tasks and tiles are best a multiple of: sixteen for the AMX
    /// tiles, else eight (the fused eight-row kernels).
    fn row_align(&self) -> usize {
        #[cfg(target_arch = "x86_64")]
        if self.amx.is_some() {
            return 16;
        }
        8
    }

    /// Every token's dot with weight rows `r0..r0 + out.len() / n` (`out[i * n + t]` for row
    /// `r0 + i`, token `t`), through the kernel's integer block dots and the scalar
    /// reference's own float epilogue, so bit-identical to [`dot`]. Token group by token group,
    /// each over all the rows: the group's activations stay in the L1 cache while the rows'
    /// codes stream past (a whole prefill's activations do not fit it).
    fn rows(
        &self,
        w: &WeightMatrix,
        r0: usize,
        i16: bool,
        scratch: &mut (Vec<i32>, Vec<f32>),
        out: &mut [f32],
    ) {
        let n = self.prepared.len();
        let tr = TernaryRows::of(w).expect("a ternary kernel format (checked in new)");
        // Sixteen rows at a time on AMX tiles where the set has them, every token at once.
        #[cfg(target_arch = "x86_64")]
        let tiled = self.amx_rows(w, tr, r0, i16, &mut scratch.0, out);
        #[cfg(not(target_arch = "x86_64"))]
        let tiled = 0;
        let (dots, scales) = scratch;
        let mut sums8 = [Sums8::I32([0; 8]); TERNARY_TOKENS_PER_PASS];
        // Eight rows at a time by the set's fused kernel where it has one, the rest (and every
        // row where it has none) one by one.
        let eights = if self.runner.has_rows8() {
            (out.len() / n - tiled) / 8
        } else {
            0
        };
        let fused = tiled + 8 * eights;
        let streams = n == 1 && w.ty != GgmlType::TQ1_0;
        for (g, batch) in self.groups.iter().enumerate() {
            let t0 = g * TERNARY_TOKENS_PER_PASS;
            let tokens = &self.prepared[t0..t0 + batch.tokens()];
            for e in 0..eights {
                let i = |j: usize| tiled + eight_row(streams, eights, e, j);
                let rows = std::array::from_fn(|j| tr.row(r0 + i(j)));
                let sums8 = &mut sums8[..batch.tokens()];
                let ran = self.runner.rows8(&rows, batch, sums8);
                debug_assert!(ran, "has_rows8");
                for (t, (s, a)) in sums8.iter().zip(tokens).enumerate() {
                    for j in 0..8 {
                        out[i(j) * n + t0 + t] = match s {
                            Sums8::F32(v) => float_sum_output(v[j], a),
                            Sums8::I32(v) => int_sum_output(w, a, v[j], i16),
                        };
                    }
                }
            }
            for (i, row_out) in out.chunks_exact_mut(n).enumerate().skip(fused) {
                let r = r0 + i;
                let row = tr.row(r);
                let blocks = row.blocks();
                dots.resize(blocks * batch.tokens(), 0);
                self.runner.block_dots(row, batch, dots);
                self.runner.block_scales(row, scales);
                // TQ2_0 and TQ1_0 take per-block scales; I2_S the tensor's.
                let tq = !matches!(row, TernaryRow::I2s(_));
                let outs = row_out[t0..t0 + batch.tokens()].iter_mut();
                for ((o, a), d) in outs.zip(tokens).zip(dots.chunks_exact(blocks)) {
                    let (d, s) = (d.iter().copied(), scales.iter().copied());
                    *o = match (a, tq) {
                        (Prepared::Q8K(y), true) => ternary::epilogue_q8_k(s, y, d),
                        (Prepared::Q8K(y), false) => i2_s::epilogue_q8_k(y, d),
                        (Prepared::I8(a), true) => ternary::epilogue_i8(s, a.scale, d),
                        (Prepared::I8(a), false) => i2s_i8_epilogue(w, a, d.sum(), i16),
                        _ => unreachable!("SimdTernary::new takes only Q8_K and int8 activations"),
                    };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl SimdTernary<'_> {
    /// [`SimdTernary::rows`]'s first rows, sixteen at a time, by the `amx` set's tile kernel
    /// where it runs for this matmul; how many rows it did (a multiple of sixteen; none where
    /// it does not run).
    fn amx_rows(
        &self,
        w: &WeightMatrix,
        tr: TernaryRows,
        r0: usize,
        i16: bool,
        ints: &mut Vec<i32>,
        out: &mut [f32],
    ) -> usize {
        let Some(acts) = &self.amx else {
            return 0;
        };
        let n = self.prepared.len();
        let m = out.len() / n;
        let mut done = 0;
        while done + 16 <= m {
            let rows = std::array::from_fn(|j| tr.row(r0 + done + j));
            let block = &mut out[done * n..(done + 16) * n];
            if acts.int() {
                ints.resize(16 * n, 0);
                if !self.runner.rows16(&rows, acts, AmxOut::I32(ints)) {
                    break;
                }
                for (o, s) in block.chunks_exact_mut(n).zip(ints.chunks_exact(n)) {
                    for ((o, &s), a) in o.iter_mut().zip(s).zip(self.prepared) {
                        *o = int_sum_output(w, a, s, i16);
                    }
                }
            } else {
                // The sums in place; with Q8_K activations they are the outputs.
                if !self.runner.rows16(&rows, acts, AmxOut::F32(block)) {
                    break;
                }
                if matches!(self.prepared[0], Prepared::I8(_)) {
                    for o in block.chunks_exact_mut(n) {
                        for (o, a) in o.iter_mut().zip(self.prepared) {
                            *o = float_sum_output(*o, a);
                        }
                    }
                }
            }
            done += 16;
        }
        done
    }
}

/// Which of a task's rows (counted from the first not on AMX tiles) the `e`th of `eights`
/// eight-row kernel calls takes as its `j`th row. With `streams` (one token, TQ2_0 and I2_S:
/// decode): rows `e`, `eights + e`, `2 * eights + e`, ...: row `j` of each call follows row
/// `j` of the call before, so the eight are eight sequential streams of weights, which the
/// kernels fetch ahead one by one (`Ahead::Streams` in `kernels/x86.rs`); 2B-4T decode,
/// `forward_speed MODEL 8 32 2 amx 2`: TQ2_0 16.6 tok/s against 14.3-14.8 for eight
/// consecutive rows, I2_S 18.0 against 16.0. Otherwise eight consecutive rows: with more
/// tokens each pass over a row is longer and the next eight rows are fetched during it; TQ1_0's
/// base-3 unpacking is compute-bound and its decode was slower as streams (bench.sh's fresh
/// 8-layer model, `forward_speed MODEL 64 64 3 amx 2`, three alternating pairs: 302-309 tok/s
/// consecutive against 280-299; the 2B-4T TQ1_0 shape alike within noise).
#[inline(always)]
fn eight_row(streams: bool, eights: usize, e: usize, j: usize) -> usize {
    if streams {
        j * eights + e
    } else {
        8 * e + j
    }
}

/// A matrix's rows as the SIMD ternary kernels read them, with the row size worked out once:
/// [`WeightMatrix::row`] looks the type's block up and divides by it, which every eight-row
/// call did eight times. One-token TQ2_0 GEMV, `avx512` (`examples/gemv_speed.rs`, three
/// alternating pairs): 256x6912 41.0-42.6 us against 50.3-51.2, 2560x6912 167.6-171.0 against
/// 175.7-177.0.
#[derive(Clone, Copy)]
struct TernaryRows<'a> {
    data: &'a [u8],
    row_bytes: usize,
    /// Row 0, whose variant every row takes.
    first: TernaryRow<'a>,
}

impl<'a> TernaryRows<'a> {
    /// `w`'s rows, for the formats that have a SIMD ternary kernel.
    fn of(w: &WeightMatrix<'a>) -> Option<Self> {
        let row = w.row(0);
        let first = match w.ty {
            GgmlType::TQ2_0 => TernaryRow::Tq2_0(row),
            GgmlType::TQ1_0 => TernaryRow::Tq1_0(row),
            GgmlType::I2_S if w.i2s_layout == I2sLayout::Block128 => TernaryRow::I2s(row),
            _ => return None,
        };
        Some(TernaryRows {
            data: w.data,
            row_bytes: row.len(),
            first,
        })
    }

    /// Row `r` ([`WeightMatrix::row`]).
    #[inline(always)]
    fn row(&self, r: usize) -> TernaryRow<'a> {
        let row = &self.data[r * self.row_bytes..(r + 1) * self.row_bytes];
        match self.first {
            TernaryRow::Tq2_0(_) => TernaryRow::Tq2_0(row),
            TernaryRow::Tq1_0(_) => TernaryRow::Tq1_0(row),
            TernaryRow::I2s(_) => TernaryRow::I2s(row),
        }
    }
}

/// The fewest activation rows quantized in parallel (one row is a few microseconds: less than
/// handing it to another thread).
const PARALLEL_PREPARE_ROWS: usize = 4;

/// Tasks per thread of a matmul of several tokens: enough that a thread slowed by something
/// else leaves little of the matmul to wait for.
const TASKS_PER_THREAD: usize = 16;

/// Tasks per thread of a one-token matmul (decode), each one tile ([`TILE_BYTES`] does not
/// apply): each task's eight row streams run longer before they restart. 2B-4T decode
/// (`forward_speed MODEL 64 32 3 amx 2`, four alternating pairs): TQ2_0 1854-1874 ms per 32
/// steps against 1950-1969 with sixteen tasks of L2 tiles, I2_S 1810-1811 against 1850-1860,
/// TQ1_0 2911-2928 against 2988-3025; one task per thread measured the same as two.
const ONE_TOKEN_TASKS_PER_THREAD: usize = 2;

/// The fewest weight rows one matmul task computes.
const MIN_ROWS_PER_TASK: usize = 16;

/// Weight bytes per tile of rows that the SIMD kernels pass every token over before moving on:
/// well inside a core's L2 (512 KB and up on the x86 and Arm cores this runs on), so a prefill
/// reads each weight from memory once, however many tokens (an lm_head's rows, 5 KB each in
/// F16, would otherwise come from memory once per pass of two tokens).
const TILE_BYTES: usize = 128 * 1024;

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
    // The activation rows quantized in parallel where there are several (each row on its
    // own, collected in order: the same values whatever the thread count; one thread, this
    // was 6% of a 64-token 2B-4T TQ2_0 prefill and 18% of an I2_S one under bitnet.cpp's
    // profile).
    let prepare_row = |(r, row): (usize, &[f32])| prepare(w, row, n, numerics, (rounding.flip)(r));
    let prepared = if n >= PARALLEL_PREPARE_ROWS {
        x.par_chunks_exact(w.k)
            .enumerate()
            .map(prepare_row)
            .collect::<Result<Vec<_>>>()?
    } else {
        x.chunks_exact(w.k)
            .enumerate()
            .map(prepare_row)
            .collect::<Result<Vec<_>>>()?
    };
    let post_scale = if profile == Profile::Ggml && w.ty == GgmlType::I2_S {
        Some(w.tensor_scale())
    } else {
        None
    };
    let simd = SimdTernary::new(w, &prepared, rounding.kernel);
    let simd_float = SimdFloat::new(w, &prepared, rounding.kernel, rounding.f32_sums);
    let i16 = rounding.i16_sums;
    // Row-major per weight row (so a row's bytes are read once for all tokens), then transposed.
    // Tasks per thread: enough to balance, few enough that a decode step's small matmuls are
    // not mostly scheduling ([`TASKS_PER_THREAD`]); which rows a task gets changes no value.
    // Both in whole eights of rows where they can be, for the fused eight-row kernels
    // (sixteens for the `amx` set's tiles).
    let align = simd.as_ref().map_or(8, SimdTernary::row_align);
    let tasks_per_thread = if n == 1 {
        ONE_TOKEN_TASKS_PER_THREAD
    } else {
        TASKS_PER_THREAD
    };
    let rows_per_task =
        w.m.div_ceil(rayon::current_num_threads() * tasks_per_thread)
            .max(MIN_ROWS_PER_TASK)
            .next_multiple_of(align);
    // Tiles let several tokens reuse a tile's weights from L2; one token reads each weight
    // once, and a tile would only cut its eight streams of rows short: its task is one tile.
    let tile_rows = if n == 1 {
        rows_per_task
    } else {
        match (TILE_BYTES / w.row(0).len().max(1)).clamp(1, rows_per_task) {
            t if t >= align => t / align * align,
            t => t,
        }
    };
    let mut by_row = vec![0f32; w.m * n];
    by_row
        .par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each(|(chunk, out)| {
            let (mut scratch, mut simd_scratch) = (Vec::new(), (Vec::new(), Vec::new()));
            // Tiles of rows whose weights stay in L2 while every token passes over them.
            for (tile_index, out) in out.chunks_mut(tile_rows * n).enumerate() {
                let r0 = chunk * rows_per_task + tile_index * tile_rows;
                let by_simd = if let Some(s) = &simd {
                    s.rows(w, r0, i16, &mut simd_scratch, out);
                    true
                } else if let Some(s) = &simd_float {
                    s.rows(w, r0, out);
                    true
                } else {
                    false
                };
                if !by_simd {
                    for (i, row_out) in out.chunks_exact_mut(n).enumerate() {
                        let r = r0 + i;
                        for (o, a) in row_out.iter_mut().zip(&prepared) {
                            *o = if rounding.f32_sums {
                                dot_f32_sum(w, r, a, &mut scratch)
                                    .unwrap_or_else(|| dot(w, r, a, &mut scratch, i16))
                            } else {
                                dot(w, r, a, &mut scratch, i16)
                            };
                        }
                    }
                }
                if let Some(s) = post_scale {
                    out.iter_mut().for_each(|o| *o *= s);
                }
            }
        });
    if n == 1 {
        return Ok(by_row);
    }
    // Sixteen tokens at a time (one cache line of each row's outputs), in parallel: each
    // token's outputs are then written in order. (Element by element over every token, one
    // thread, this copy was 5% of a 64-token 2B-4T prefill.)
    const TOKENS: usize = 16;
    let mut out = vec![0f32; n * w.m];
    out.par_chunks_mut(TOKENS * w.m)
        .enumerate()
        .for_each(|(block, out)| {
            let t0 = block * TOKENS;
            let tokens = out.len() / w.m;
            for (r, row) in by_row.chunks_exact(n).enumerate() {
                for (t, &v) in row[t0..t0 + tokens].iter().enumerate() {
                    out[t * w.m + r] = v;
                }
            }
        });
    Ok(out)
}
