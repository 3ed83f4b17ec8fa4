//! Support for `kernel_parity.rs`: ggml's type-traits tables ([`ffi`]), a one-op graph runner
//! ([`graph`]), agreement figures ([`stats`]) and the input generator ([`Rows`]).

pub mod ffi;
pub mod graph;
pub mod stats;

/// What a generated row looks like. Random rows cover the ordinary case; the others are the
/// inputs where encoders disagree when they disagree at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Uniform in [-1, 1) times 2^e, one e per row in -8..8.
    Uniform,
    /// Each element with its own exponent in -24..12 and sign (heavy tails; block maxima stay
    /// inside f16's range, so quantized scales are finite: overflow is `Extreme`'s job).
    Spread,
    /// Sum of four uniforms (bell-shaped, like activations).
    Bell,
    /// Every element the same value.
    AllEqual,
    /// Zeros, half of them -0.0.
    Zeros,
    /// Ties of the 8-bit quantizers: (k + 1/2) * 2^e with a +-127 * 2^e in every 32 values, so
    /// that Q8_0's `d` and Q8_K's `iscale` are exact powers of two and `x * id` is exactly a half.
    Ties8,
    /// Ties of the ternary quantizers: {0, +-1/2, +-1} * 2^e with a +-2^e in every 32 values.
    TiesTernary,
    /// Ties of the f16 and bf16 conversions: midpoints between neighbouring representable values.
    TiesHalf,
    /// +-f32::MAX, values past f16's range, f16 and f32 subnormals, zeros, ordinary values.
    Extreme,
    /// Every |x| below 2^-126 (f32 subnormals), in half the rows below 2^-146: quantizer scales
    /// whose reciprocal overflows (Q8_0's amax/127 in all, TQ's amax in the deep ones).
    Tiny,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Uniform,
        Kind::Spread,
        Kind::Bell,
        Kind::AllEqual,
        Kind::Zeros,
        Kind::Ties8,
        Kind::TiesTernary,
        Kind::TiesHalf,
        Kind::Extreme,
        Kind::Tiny,
    ];
    /// The kinds with finite, moderate values: inputs of dot products and ops, where inf or an
    /// overflowing product would compare NaN with NaN rather than the arithmetic.
    pub const FINITE: [Kind; 7] = [
        Kind::Uniform,
        Kind::Spread,
        Kind::Bell,
        Kind::AllEqual,
        Kind::Zeros,
        Kind::Ties8,
        Kind::TiesTernary,
    ];
}

/// xorshift64*: a deterministic stream from proptest's seed (proptest picks and shrinks the
/// seed, kind and length; the values follow from them).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 {
            1.0
        } else {
            -1.0
        }
    }
}

/// A row of `n` values of the given kind.
pub fn make_row(kind: Kind, seed: u64, n: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let p2 = |e: i32| 2f32.powi(e);
    match kind {
        Kind::Uniform => {
            let s = p2(r.below(16) as i32 - 8);
            (0..n).map(|_| r.unit() * s).collect()
        }
        Kind::Spread => (0..n)
            .map(|_| r.unit() * p2(r.below(36) as i32 - 24))
            .collect(),
        Kind::Bell => (0..n)
            .map(|_| (r.unit() + r.unit() + r.unit() + r.unit()) * 0.5)
            .collect(),
        Kind::AllEqual => {
            let v = r.unit() * p2(r.below(16) as i32 - 8);
            vec![v; n]
        }
        Kind::Zeros => (0..n)
            .map(|i| if i % 2 == 0 { 0.0 } else { -0.0 })
            .collect(),
        Kind::Ties8 => {
            let s = p2(r.below(12) as i32 - 6);
            (0..n)
                .map(|i| {
                    if i % 32 == (seed as usize % 32) {
                        127.0 * s * r.sign()
                    } else {
                        (r.below(254) as f32 - 127.0 + 0.5) * s
                    }
                })
                .collect()
        }
        Kind::TiesTernary => {
            let s = p2(r.below(12) as i32 - 6);
            const V: [f32; 5] = [0.0, 0.5, -0.5, 1.0, -1.0];
            (0..n)
                .map(|i| {
                    if i % 32 == 0 {
                        s * r.sign()
                    } else {
                        V[r.below(5) as usize] * s
                    }
                })
                .collect()
        }
        Kind::TiesHalf => (0..n)
            .map(|_| {
                // A random finite f16 (or bf16) and its upper neighbour; their midpoint is an
                // f32 (more mantissa bits), exactly halfway.
                let (lo, hi) = if r.next_u64() & 1 == 0 {
                    let b = (r.below(0x7bff) as u16) | ((r.below(2) as u16) << 15);
                    (
                        half::f16::from_bits(b).to_f32(),
                        half::f16::from_bits(b + 1).to_f32(),
                    )
                } else {
                    let b = (r.below(0x7f7f) as u32) | ((r.below(2) as u32) << 15);
                    (f32::from_bits(b << 16), f32::from_bits((b + 1) << 16))
                };
                lo + (hi - lo) / 2.0
            })
            .collect(),
        Kind::Extreme => {
            const V: [f32; 12] = [
                f32::MAX,
                -f32::MAX,
                65504.0,
                65520.0,
                -65536.0,
                6.0e-8,
                -3.0e-8,
                1.0e-40,
                0.0,
                -0.0,
                1.0,
                -0.3,
            ];
            (0..n).map(|_| V[r.below(12) as usize]).collect()
        }
        Kind::Tiny => {
            let s = if seed & 2 == 0 { 1.0 } else { p2(-20) };
            (0..n).map(|_| r.unit() * f32::MIN_POSITIVE * s).collect()
        }
    }
}

/// Run `test` on `cases` inputs drawn from `strategy`, then print this test's rows of the
/// summary table. The RNG is proptest's deterministic one, so the figures quoted in
/// docs/kernel-parity.md come back on every run; a failing case is shrunk and reported as
/// proptest does. No regression files are written (cases are cheap to regenerate).
pub fn run<S>(cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S: proptest::strategy::Strategy,
    S::Value: std::fmt::Debug,
{
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let result = runner.run(&strategy, |v| {
        test(v);
        Ok(())
    });
    stats::print_mine();
    if let Err(e) = result {
        panic!("{e}");
    }
}
