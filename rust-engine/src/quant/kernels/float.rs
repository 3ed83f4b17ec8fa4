//! The float dots of F32, F16 and BF16 weights in the SIMD kernel sets (AVX2 with FMA and F16C
//! in `x86`; AVX-512 in `avx512`, which the `amx` set shares; NEON in `aarch64`): one API over
//! them, and the order they sum in.
//!
//! - The plain dots ([`float_dots`]): the reference's products ([`FloatBatch`] says which are
//!   exact) summed in f64 in sixteen lanes, element `i + 4l + j` of every sixteen into lane
//!   `j` of accumulator `l`, the four accumulators added as `(a0 + a1) + (a2 + a3)`, the four
//!   lanes of that as `(v0 + v2) + (v1 + v3)`, then the tail (`k % 16`) one term after the
//!   other. Every set does exactly these operations (AVX2: four 4-lane f64 vectors; AVX-512:
//!   two 8-lane ones holding AVX2's four; NEON: eight 2-lane ones), so they give the same bits
//!   as each other and as [`lane_order_dot`], the portable statement of that order; against
//!   the references (`f32::vec_dot_f32` and the rest, which sum one term after the other)
//!   they are equal in nearly every row and otherwise within [`float_dot_bound`].
//! - The noise twin's folds ([`f32_sum_dots`]): `s = s + w[i] * x[i]` in f32, `i` in order, for
//!   up to eight rows side by side (one lane each): bit-identical to the scalar fold.

use super::Kernel;

/// Tokens per pass of the plain float dots over a weight row (each weight loaded and widened
/// once for them; more accumulators would not fit the registers; in the `avx512` set's exact
/// dots, four tokens' f64 activations no longer fit L1 beside the row: 2B-4T all-logits
/// prefill slower, 1577-1622 ms against 1416-1546 for two).
pub(crate) const FLOAT_TOKENS_PER_PASS: usize = 2;

/// Rows one pass of [`float_dots_rows`] reads side by side in the `avx512` set (one token,
/// F16 x f16): each row its own stream of weights, fetched ahead on its own; the 2B-4T lm_head
/// of a decode step (128256 rows of 2560) is read at about 25 GB/s on two cores rather than
/// 18-20 one row at a time (`forward_speed MODEL 8 32 2 amx 2`, TQ2_0: 2120-2130 ms per 32
/// steps against 2458, four rows 2200-2265).
pub const FLOAT_ROWS_PER_PASS: usize = 8;

/// Tokens one pass of [`f32_sum_dots`] serves: each token's fold is its own chain of dependent
/// adds, so four run side by side, and each transposed block of weights serves all four.
pub const F32_SUM_TOKENS: usize = 4;

/// Whether `kernel` has float dots and this CPU runs them (AVX2 with FMA and F16C; NEON).
pub fn available(kernel: Kernel) -> bool {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => super::x86::has_avx2_fma_f16c(),
        // Its own plain dots (`avx512::float_pass`); the AVX2 folds of the noise twin. The
        // `amx` set takes the `avx512` set's.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 | Kernel::Amx => super::x86::has_avx512_vnni(),
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => super::aarch64::has_neon(),
        _ => false,
    }
}

/// A row of float weights, as stored (little-endian).
#[derive(Clone, Copy, Debug)]
pub enum FloatRow<'a> {
    F32(&'a [u8]),
    F16(&'a [u8]),
    BF16(&'a [u8]),
}

/// A float weight type, for [`FloatBatch::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    F32,
    F16,
    BF16,
}

impl<'a> FloatRow<'a> {
    pub(crate) fn bytes(self) -> &'a [u8] {
        match self {
            FloatRow::F32(b) | FloatRow::F16(b) | FloatRow::BF16(b) => b,
        }
    }

    pub(crate) fn len(self) -> usize {
        match self {
            FloatRow::F32(b) => b.len() / 4,
            FloatRow::F16(b) | FloatRow::BF16(b) => b.len() / 2,
        }
    }

    pub fn ty(self) -> FloatType {
        match self {
            FloatRow::F32(_) => FloatType::F32,
            FloatRow::F16(_) => FloatType::F16,
            FloatRow::BF16(_) => FloatType::BF16,
        }
    }

    /// Weight `i` as f32 (every type here widens exactly).
    fn get(self, i: usize) -> f32 {
        let b = self.bytes();
        match self {
            FloatRow::F32(_) => {
                f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
            }
            FloatRow::F16(_) => half::f16::from_le_bytes([b[2 * i], b[2 * i + 1]]).to_f32(),
            FloatRow::BF16(_) => {
                f32::from_bits((u16::from_le_bytes([b[2 * i], b[2 * i + 1]]) as u32) << 16)
            }
        }
    }
}

/// One token's activations in the form a float weight type's dot reads.
#[derive(Clone, Copy, Debug)]
pub enum FloatActs<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    /// bf16 bit patterns.
    BF16(&'a [u16]),
}

impl FloatActs<'_> {
    fn len(self) -> usize {
        match self {
            FloatActs::F32(v) => v.len(),
            FloatActs::F16(v) => v.len(),
            FloatActs::BF16(v) => v.len(),
        }
    }
}

/// The tokens of one float matmul for one kernel set, widened once (exactly) to f32 for
/// [`float_dots`] and [`f32_sum_dots`], token after token:
/// - F16 weights times f16 activations (`exact`): every product of two f16 values is exact in
///   f32 (11 significant bits each, exponents far inside f32's range), so the reference's
///   rounded f32 product is the exact product, and an f64 fused multiply-add of the widened
///   values adds exactly that product to the sum. For the x86 sets also widened once more,
///   to f64, which their fused multiply-adds read: widening a token's activations again for
///   every weight row was about half of the operations of a prefill's all-logits lm_head
///   (2B-4T, 32 tokens, one thread: 1752-1767 ms against 1888-1937 with AVX2). NEON keeps
///   them as f32 and widens as it loads (its f64 lanes are two wide either way).
/// - Every other pair (F32 weights, F16 weights times f32 activations, BF16, whose products
///   can round, underflow or overflow in f32): the kernel rounds each product in f32 as the
///   reference does before widening it to f64.
#[derive(Clone, Debug)]
pub struct FloatBatch {
    kernel: Kernel,
    w: FloatType,
    acts: Vec<f32>,
    /// F16 x f16: exact products, fused in f64.
    exact: bool,
    /// `acts` widened to f64 for the x86 sets' exact dots (empty otherwise): widened once per
    /// matmul rather than once per weight row.
    #[cfg(target_arch = "x86_64")]
    wide: Vec<f64>,
    k: usize,
    tokens: usize,
}

impl FloatBatch {
    /// `None` where `kernel` has no float dots on this CPU ([`available`]), a weight type and
    /// activation form are not a pair the references multiply, or the tokens differ in length.
    pub fn new(kernel: Kernel, w: FloatType, tokens: &[FloatActs]) -> Option<Self> {
        if !available(kernel) {
            return None;
        }
        let k = tokens.first().map_or(0, |x| x.len());
        if tokens.iter().any(|x| x.len() != k) {
            return None;
        }
        let mut acts = Vec::with_capacity(k * tokens.len());
        for x in tokens {
            match (w, x) {
                (FloatType::F32 | FloatType::F16, FloatActs::F32(v)) => acts.extend_from_slice(v),
                (FloatType::F16, FloatActs::F16(v)) => acts.extend(v.iter().map(|h| h.to_f32())),
                (FloatType::BF16, FloatActs::BF16(v)) => {
                    acts.extend(v.iter().map(|&b| f32::from_bits((b as u32) << 16)))
                }
                _ => return None,
            }
        }
        let exact = w == FloatType::F16 && tokens.iter().all(|x| matches!(x, FloatActs::F16(_)));
        // The x86 sets' exact dots read f64 (NEON widens as it loads).
        #[cfg(target_arch = "x86_64")]
        let wide = if exact && matches!(kernel, Kernel::Avx2 | Kernel::Avx512 | Kernel::Amx) {
            acts.iter().map(|&v| v as f64).collect()
        } else {
            Vec::new()
        };
        Some(FloatBatch {
            kernel,
            w,
            acts,
            exact,
            #[cfg(target_arch = "x86_64")]
            wide,
            k,
            tokens: tokens.len(),
        })
    }

    /// Token `t`'s activations as f32 (the values the references multiply).
    pub fn token(&self, t: usize) -> &[f32] {
        &self.acts[t * self.k..][..self.k]
    }

    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// The kernel set the batch is for.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Token `t`'s activations widened to f64 onwards for the x86 sets' exact dots, or null
    /// where the products are not exact.
    #[cfg(target_arch = "x86_64")]
    fn wide_at(&self, t: usize) -> *const f64 {
        if self.exact {
            self.wide[t * self.k..].as_ptr()
        } else {
            std::ptr::null()
        }
    }

    /// Tokens one pass of [`float_dots`] over a row serves.
    pub fn tokens_per_pass(&self) -> usize {
        FLOAT_TOKENS_PER_PASS
    }
}

/// The dots of tokens `tokens` of the batch with one float weight row, `out[t - tokens.start]`
/// for token `t`, [`FLOAT_TOKENS_PER_PASS`] tokens per pass over the row (so each weight is
/// loaded and widened once for them: a GEMM for prefill), in the order the module states.
/// Every token's sums are the same whatever the batch. `None` where the row's type or length
/// is not the batch's or the tokens are not in it.
pub fn float_dots(
    w: FloatRow,
    batch: &FloatBatch,
    tokens: std::ops::Range<usize>,
    out: &mut [f32],
) -> Option<()> {
    if w.ty() != batch.w
        || w.len() != batch.k
        || tokens.end > batch.tokens
        || out.len() != tokens.len()
    {
        return None;
    }
    let k = batch.k;
    let mut t = tokens.start;
    while t < tokens.end {
        let n = (tokens.end - t).min(FLOAT_TOKENS_PER_PASS);
        let o = &mut out[t - tokens.start..][..n];
        let x = batch.acts[t * k..].as_ptr();
        // SAFETY: `FloatBatch::new` checked that this CPU runs the batch's kernel set; the row
        // holds `k` weights of its type and every token `k` activations (checked above and in
        // `new`), which is all the kernels read; tokens `t..t + n` exist.
        unsafe {
            match batch.kernel {
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => super::x86::float_pass(w, x, batch.wide_at(t), n, k, o),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512 | Kernel::Amx => {
                    super::avx512::float_pass(w, x, batch.wide_at(t), n, k, o)
                }
                #[cfg(target_arch = "aarch64")]
                Kernel::Neon => super::aarch64::float_pass(w, batch.exact, x, n, k, o),
                _ => unreachable!("FloatBatch::new admits only a set with float dots"),
            }
        }
        t += n;
    }
    Some(())
}

/// [`float_dots`] of token `t` with every row of `rows` (`out[i]` for `rows[i]`): the same bits
/// as one row at a time. The `avx512` set (and `amx`, which shares it) takes F16 rows times
/// f16 activations [`FLOAT_ROWS_PER_PASS`] at a time ([`super::avx512::float_exact_rows`]),
/// the `j`th row of pass `e` of `E` being row `j * E + e`: each of the eight walks its own
/// eighth of the rows from start to end, a long sequential stream that the kernel's prefetch
/// runs ahead of into the next row (eight consecutive rows, the first version, restarted
/// every stream after 5 KB on the 2B-4T lm_head: decode `forward_speed MODEL 8 32 2 amx 2`
/// 1629-1662 ms per 32 steps against 1710-1753, three alternating pairs); every other case
/// goes row by row. `None` as [`float_dots`].
pub fn float_dots_rows(
    rows: &[FloatRow],
    batch: &FloatBatch,
    t: usize,
    out: &mut [f32],
) -> Option<()> {
    if out.len() != rows.len() {
        return None;
    }
    // Rows done side by side (none off x86).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if matches!(batch.kernel, Kernel::Avx512 | Kernel::Amx)
        && batch.exact
        && t < batch.tokens
        && rows.iter().all(|w| w.ty() == batch.w && w.len() == batch.k)
    {
        let x = batch.wide_at(t);
        let passes = rows.len() / FLOAT_ROWS_PER_PASS;
        let mut sums = [0f32; FLOAT_ROWS_PER_PASS];
        for e in 0..passes {
            let w = std::array::from_fn(|j| rows[j * passes + e].bytes().as_ptr());
            // SAFETY: `FloatBatch::new` checked that this CPU runs the set; every row holds
            // `k` F16 weights and the token `k` f64 activations (checked above and in `new`).
            unsafe { super::avx512::float_exact_rows(w, x, batch.k, &mut sums) };
            for (j, &s) in sums.iter().enumerate() {
                out[j * passes + e] = s;
            }
        }
        done = passes * FLOAT_ROWS_PER_PASS;
    }
    for (w, o) in rows[done..].iter().zip(out[done..].iter_mut()) {
        float_dots(*w, batch, t..t + 1, std::slice::from_mut(o))?;
    }
    Some(())
}

/// [`float_dots`] for one token. `None` where `kernel` has no float dots on this CPU or the
/// row and activations do not pair.
pub fn float_dot(kernel: Kernel, w: FloatRow, x: FloatActs) -> Option<f32> {
    let batch = FloatBatch::new(kernel, w.ty(), &[x])?;
    let mut out = [0f32];
    float_dots(w, &batch, 0..1, &mut out)?;
    Some(out[0])
}

/// The order of the SIMD float dots written out one scalar operation at a time (the module
/// states it): what [`float_dot`] gives with every set, bit for bit, on any CPU. For tests and
/// for readers; `None` where the row and activations do not pair or differ in length.
pub fn lane_order_dot(w: FloatRow, x: FloatActs) -> Option<f32> {
    let k = w.len();
    if x.len() != k {
        return None;
    }
    let xs: Vec<f32> = match (w.ty(), x) {
        (FloatType::F32 | FloatType::F16, FloatActs::F32(v)) => v.to_vec(),
        (FloatType::F16, FloatActs::F16(v)) => v.iter().map(|h| h.to_f32()).collect(),
        (FloatType::BF16, FloatActs::BF16(v)) => v
            .iter()
            .map(|&b| f32::from_bits((b as u32) << 16))
            .collect(),
        _ => return None,
    };
    let exact = matches!(x, FloatActs::F16(_));
    let mut acc = [[0f64; 4]; 4];
    let mut i = 0;
    while i + 16 <= k {
        for (l, acc) in acc.iter_mut().enumerate() {
            for (j, a) in acc.iter_mut().enumerate() {
                let e = i + 4 * l + j;
                *a = if exact {
                    (w.get(e) as f64).mul_add(xs[e] as f64, *a)
                } else {
                    *a + (w.get(e) * xs[e]) as f64
                };
            }
        }
        i += 16;
    }
    let v: [f64; 4] = std::array::from_fn(|j| (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]));
    let mut sum = (v[0] + v[2]) + (v[1] + v[3]);
    for (e, &x) in xs.iter().enumerate().skip(i) {
        sum += if exact {
            w.get(e) as f64 * x as f64
        } else {
            (w.get(e) * x) as f64
        };
    }
    Some(sum as f32)
}

/// The most [`float_dot`] may differ from its scalar reference for products `p`: each f64 sum
/// of `n` terms is within `n * 2^-53 * sum |p|` of the exact sum (both orders, so `n * 2^-52`
/// between them), and the final rounding to f32 adds at most one f32 ulp of the result.
pub fn float_dot_bound(reference: f32, abs_products: f64, n: usize) -> f64 {
    let ulp = if reference == 0.0 {
        f32::from_bits(1) as f64
    } else {
        (f32::from_bits(reference.abs().to_bits() + 1) - reference.abs()) as f64
    };
    ulp + n as f64 * f64::EPSILON * abs_products
}

/// The noise twin's float dots (`TwinRounding::f32_sums`) of up to eight weight rows of one
/// type with up to [`F32_SUM_TOKENS`] tokens' f32 activations (`xs`) with `kernel`: per row and
/// token `s = s + w[i] * x[i]` in f32, `i` in order, exactly the scalar fold of `quant::matmul`
/// (each product rounded, then the sum; no FMA), so bit-identical to it. The eight rows run
/// side by side in vector lanes (each lane its own sequential sum), which is what makes a
/// dependent chain fast: the rows' weights are loaded a block at a time and transposed; the
/// tokens' chains are independent of each other and run side by side too (one chain alone
/// waits on every add). `out[t * rows.len() + j]` for token `t`, `rows[j]`; `None` where the
/// set has no float dots on this CPU, the rows differ in type or length from the tokens, or
/// there are more than eight rows or no tokens or more than [`F32_SUM_TOKENS`].
pub fn f32_sum_dots(
    kernel: Kernel,
    rows: &[FloatRow],
    xs: &[&[f32]],
    out: &mut [f32],
) -> Option<()> {
    let k = xs.first()?.len();
    let ty = rows.first()?.ty();
    if !available(kernel)
        || rows.len() > 8
        || xs.len() > F32_SUM_TOKENS
        || xs.iter().any(|x| x.len() != k)
        || out.len() != rows.len() * xs.len()
        || rows.iter().any(|r| r.ty() != ty || r.len() != k)
    {
        return None;
    }
    // Missing rows repeat the first; their lanes are dropped.
    let mut ptrs = [rows[0].bytes().as_ptr(); 8];
    for (p, r) in ptrs.iter_mut().zip(rows) {
        *p = r.bytes().as_ptr();
    }
    let mut sums = [[0f32; 8]; F32_SUM_TOKENS];
    let sums = &mut sums[..xs.len()];
    // SAFETY: this CPU runs the set (checked above); every pointer is a row of `k` weights of
    // type `ty` and every token holds `k` values, all the kernels read; one row of sums per
    // token.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 | Kernel::Avx512 | Kernel::Amx => {
                super::x86::seq_sums(ty, &ptrs, xs, k, sums)
            }
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => super::aarch64::seq_sums(ty, &ptrs, xs, k, sums),
            _ => unreachable!("available() admits only a set with float dots"),
        }
    }
    // Token `t`'s sums of the rows asked for; the lanes of the repeated first row dropped.
    let m = rows.len();
    for (o, s) in out.chunks_exact_mut(m).zip(sums.iter()) {
        o.copy_from_slice(&s[..m]);
    }
    Some(())
}
