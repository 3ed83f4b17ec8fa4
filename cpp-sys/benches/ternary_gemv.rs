//! The ternary GEMV of the 2B-4T shape (`ffn_up`/`ffn_gate`: 6912 rows of 2560 weights;
//! `ffn_down`: 2560 rows of 6912) in one process, one thread each: ggml's TQ2_0 kernel through
//! FFI (`ggml_get_type_traits_cpu(TQ2_0)`: `from_float` quantizes the activations to Q8_K once,
//! then `vec_dot` per row, as `ggml_compute_forward_mul_mat` does for one token) against the
//! engine's `matmul` (the same Q8_K quantization and one dot per row) with each kernel set.
//! The same weights and activations on both sides; the outputs are checked to agree before
//! timing (both are exact integer sums per block; ggml's AVX2 epilogue fuses the block scales
//! in another order, so the last bits may differ). `read_weights` only reads the TQ2_0
//! matrix's bytes on the same thread (the loop `harness bench` measures bandwidth with), and
//! `read_weights_widest` with 512-bit loads where the CPU has them: as the weights do not fit
//! L2, how fast a kernel could at best be on this machine.
//!
//! `cargo bench -p xval-cpp-sys --bench ternary_gemv` (`scripts/bench.sh` runs it and writes
//! the ratios into docs/performance.md).

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use xval_engine::gguf::GgmlType;
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::i2_s::I2sLayout;
use xval_engine::quant::kernels::Kernel;
use xval_engine::quant::matmul::{matmul_twin, TwinRounding, WeightMatrix, PLAIN};
use xval_engine::quant::{self};

#[allow(dead_code)]
#[path = "../tests/parity_support/ffi.rs"]
mod ffi;

/// Deterministic values in [-1, 1) (xorshift), so every run times the same inputs.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// ggml's one-token matmul: activations to Q8_K, then one `vec_dot` per weight row.
fn ggml_gemv(w: &[u8], x: &[f32], k: usize, m: usize, out: &mut [f32]) {
    let y = ffi::cpu_from_float(ffi::Q8_K, x);
    let row = w.len() / m;
    for (r, o) in out.iter_mut().enumerate() {
        *o = ffi::vec_dot(ffi::TQ2_0, k, &w[r * row..(r + 1) * row], &y);
    }
}

/// Every byte of `bytes` read: 64-byte lines' eight words added, so that each load counts.
fn read_bytes(bytes: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    for line in bytes.chunks_exact(64) {
        for (a, w) in acc.iter_mut().zip(line.chunks_exact(8)) {
            *a = a.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
    }
    acc.iter().fold(0, |a, &b| a ^ b)
}

/// [`read_bytes`] with 512-bit loads where the CPU has AVX-512 (four independent sums of
/// 64-byte lines), else [`read_bytes`] itself.
fn read_bytes_widest(bytes: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512 F (checked).
        return unsafe { read_bytes_avx512(bytes) };
    }
    read_bytes(bytes)
}

/// # Safety
/// AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn read_bytes_avx512(bytes: &[u8]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 4];
    let blocks = bytes.chunks_exact(256);
    let rest = read_bytes(blocks.remainder());
    for b in blocks {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: 64 bytes at `64 * j` of a 256-byte block, read unaligned.
            let v = unsafe { _mm512_loadu_si512(b.as_ptr().add(64 * j) as *const __m512i) };
            *a = _mm512_add_epi64(*a, v);
        }
    }
    let s = _mm512_add_epi64(
        _mm512_add_epi64(acc[0], acc[1]),
        _mm512_add_epi64(acc[2], acc[3]),
    );
    (_mm512_reduce_add_epi64(s) as u64) ^ rest
}

fn bench(c: &mut Criterion) {
    ffi::init();
    let numerics = Numerics::new(Profile::Ggml);
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("a one-thread pool");
    for (name, k, m) in [("2560x6912", 2560, 6912), ("6912x2560", 6912, 2560)] {
        // Ternary weights with realistic TQ2_0 block scales.
        let wv: Vec<f32> = values(k * m, 7)
            .iter()
            .map(|v| (v * 1.5).round().clamp(-1.0, 1.0) * 0.02)
            .collect();
        let x = values(k, 11);
        let tq2 = quant::quantize(GgmlType::TQ2_0, &wv).expect("whole blocks");
        let w = WeightMatrix::new("bench", GgmlType::TQ2_0, k, m, &tq2, I2sLayout::Block128)
            .expect("a valid matrix");
        let i2s = quant::quantize(GgmlType::I2_S, &wv).expect("whole blocks");
        let wi = WeightMatrix::new("bench", GgmlType::I2_S, k, m, &i2s, I2sLayout::Block128)
            .expect("a valid matrix");
        let mut reference = vec![0f32; m];
        ggml_gemv(&tq2, &x, k, m, &mut reference);

        let mut group = c.benchmark_group(format!("ternary_gemv_{name}"));
        group.throughput(Throughput::Bytes(tq2.len() as u64));
        // The floor under any kernel here: the same bytes only read (each 64-byte line's
        // words folded into one), on this thread. The weights do not fit L2, so every call
        // streams them from L3 or memory; a kernel reading them at this speed does nothing else.
        group.bench_function("read_weights", |b| b.iter(|| read_bytes(black_box(&tq2))));
        // The same with the widest loads the CPU has: the fastest pure read of this core.
        group.bench_function("read_weights_widest", |b| {
            b.iter(|| read_bytes_widest(black_box(&tq2)))
        });
        group.bench_function("ggml_tq2_0", |b| {
            let mut out = vec![0f32; m];
            b.iter(|| ggml_gemv(&tq2, &x, k, m, &mut out))
        });
        for (ty, w) in [("tq2_0", &w), ("i2_s", &wi)] {
            let scalar = one_thread
                .install(|| matmul_twin(w, &x, 1, numerics, PLAIN))
                .expect("matmul");
            if ty == "tq2_0" {
                // ggml's AVX2 dot applies the block scales with FMA across eight blocks at a
                // time, the engine as ggml's reference does (one f32 sum after the other): the
                // same integer sums, float epilogues that differ in the last bits.
                let scale = reference.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = scalar
                    .iter()
                    .zip(&reference)
                    .fold(0f32, |a, (o, r)| a.max((o - r).abs()));
                assert!(
                    worst <= 1e-5 * scale,
                    "differs from ggml's TQ2_0 dot by {worst:e} (outputs up to {scale:e})"
                );
            }
            for kernel in Kernel::ALL.into_iter().filter(|k| k.available()) {
                let out = one_thread
                    .install(|| matmul_twin(w, &x, 1, numerics, TwinRounding { kernel, ..PLAIN }))
                    .expect("matmul");
                assert!(
                    out.iter()
                        .zip(&scalar)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{kernel} {ty}: not bit-identical to scalar"
                );
                // Every iteration on the pool's one thread, timed there: handing each call
                // to it from criterion's thread (`install` per iteration) woke it every time,
                // 70-80 us a call on this project's 2-core machine, which ggml's side (called
                // in place) does not pay.
                let rounding = TwinRounding { kernel, ..PLAIN };
                group.bench_function(BenchmarkId::new(format!("engine_{ty}"), kernel), |b| {
                    b.iter_custom(|iters| {
                        one_thread.install(|| {
                            let t = Instant::now();
                            for _ in 0..iters {
                                black_box(
                                    matmul_twin(w, &x, 1, numerics, rounding).expect("matmul"),
                                );
                            }
                            t.elapsed()
                        })
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
