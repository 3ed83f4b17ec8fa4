//! One ternary GEMV shape, repeated, on one thread: for `perf stat` (cycles and instructions
//! per call are steadier than wall time on a shared machine) while tuning a kernel.
//! `criterion` in `cpp-sys/benches/ternary_gemv.rs` times the same against ggml.
//!
//! `cargo run --release -p xval-engine --example gemv_speed -- [tq2_0|tq1_0|i2_s] [K] [M] [CALLS] [scalar|avx2|avx512|amx|neon] [TOKENS]`

use std::time::Instant;

use xval_engine::gguf::GgmlType;
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::i2_s::I2sLayout;
use xval_engine::quant::kernels::Kernel;
use xval_engine::quant::matmul::{matmul_twin, TwinRounding, WeightMatrix, PLAIN};
use xval_engine::quant::{self};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let ty = match args.first().map(String::as_str) {
        None | Some("tq2_0") => GgmlType::TQ2_0,
        Some("tq1_0") => GgmlType::TQ1_0,
        Some("i2_s") => GgmlType::I2_S,
        Some(t) => return Err(format!("type {t}: expected tq2_0, tq1_0 or i2_s").into()),
    };
    let (k, m, calls, tokens) = (arg(1, 2560)?, arg(2, 6912)?, arg(3, 1000)?, arg(5, 1)?);
    let kernel = match args.get(4).map(String::as_str) {
        None | Some("avx2") => Kernel::Avx2,
        Some("avx512") => Kernel::Avx512,
        Some("amx") => Kernel::Amx,
        Some("scalar") => Kernel::Scalar,
        Some("neon") => Kernel::Neon,
        Some(k) => {
            return Err(format!("kernel {k}: expected scalar, avx2, avx512, amx or neon").into())
        }
    };
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let wv: Vec<f32> = (0..k * m)
        .map(|_| (next() * 1.5).round().clamp(-1.0, 1.0) * 0.02)
        .collect();
    let x: Vec<f32> = (0..k * tokens).map(|_| next()).collect();
    let bytes = quant::quantize(ty, &wv)?;
    let w = WeightMatrix::new("gemv", ty, k, m, &bytes, I2sLayout::Block128)?;
    let profile = if ty == GgmlType::I2_S {
        Profile::BitnetCpp
    } else {
        Profile::Ggml
    };
    let numerics = Numerics::new(profile);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let rounding = || TwinRounding { kernel, ..PLAIN };
    // The whole loop on the pool's one thread: handing each call to it from this thread
    // (`install` per call) cost 70-80 us a call here, a quarter of the matmul.
    let (dt, check) = pool
        .install(
            || -> Result<(f64, f32), Box<dyn std::error::Error + Send + Sync>> {
                let t = Instant::now();
                let mut check = 0f32;
                for _ in 0..calls {
                    check += matmul_twin(&w, &x, tokens, numerics, rounding())?[0];
                }
                Ok((t.elapsed().as_secs_f64(), check))
            },
        )
        .map_err(|e| e.to_string())?;
    println!(
        "{ty} {k}x{m} x {tokens} token(s), {kernel}: {:.1} us per call ({calls} calls, check {check})",
        dt / calls as f64 * 1e6
    );
    Ok(())
}
