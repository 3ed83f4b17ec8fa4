//! Prefill and decode speed of the engine alone (no oracle, no taps), to check that a change
//! costs nothing measurable, e.g. that an engine without a fault plan pays nothing for the
//! plan's hooks: build this example at two commits and run both on the same model.
//!
//! `cargo run --release -p xval-engine --example forward_speed -- MODEL [PROMPT_TOKENS] [STEPS] [REPEATS] [scalar|avx2|avx512|amx] [THREADS] [last|all]`
//!
//! Prints the best of REPEATS runs (default 5) of a PROMPT_TOKENS-token prefill (default 32;
//! the last position's logits only, or `all` positions', as `harness bench --outputs` says)
//! followed by STEPS single-token decode steps (default 16), under the model's default
//! profile, THREADS threads (default 1). `harness bench` measures the same against an oracle in one run.

use std::sync::Arc;
use std::time::Instant;

use xval_engine::gguf::{GgufFile, Residence};
use xval_engine::model::{Engine, Model};
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::i2_s::I2sLayout;
use xval_engine::quant::kernels::Kernel;
use xval_engine::sampling::argmax;
use xval_engine::taps::TapFilter;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: forward_speed MODEL [PROMPT_TOKENS] [STEPS] [REPEATS]")?;
    let arg = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (n_prompt, steps, repeats) = (arg(1, 32)?, arg(2, 16)?, arg(3, 5)?);
    // Held as `harness run` and `bench` hold it by default (`--load resident`).
    let file = Arc::new(GgufFile::open_with(path, Residence::Resident)?);
    let model = Model::load(file, I2sLayout::Block128)?;
    let profile = Profile::default_for(model.projection_type());
    let kernel = match args.get(4).map(String::as_str) {
        None | Some("scalar") => Kernel::Scalar,
        Some("avx2") => Kernel::Avx2,
        Some("avx512") => Kernel::Avx512,
        Some("amx") => Kernel::Amx,
        Some(k) => return Err(format!("kernel {k}: expected scalar, avx2, avx512 or amx").into()),
    };
    let threads = arg(5, 1)?;
    let engine = Engine::new(model, Numerics::new(profile), threads)?.with_kernel(kernel)?;
    let n_vocab = engine.model().hparams.n_vocab as u32;
    // Deterministic token ids spread over the vocabulary.
    let prompt: Vec<u32> = (0..n_prompt as u32)
        .map(|i| (i * 7919 + 1) % n_vocab)
        .collect();
    let none = TapFilter::none();
    let (mut best_prefill, mut best_decode) = (f64::MAX, f64::MAX);
    for _ in 0..repeats {
        let mut cache = engine.new_cache();
        let t = Instant::now();
        // The prompt's last position the only output, as `harness bench` times it.
        let last = match args.get(6).map(String::as_str) {
            None | Some("last") => engine.forward_last(&mut cache, &prompt)?,
            Some("all") => {
                let f = engine.forward(&mut cache, &prompt, &none)?;
                f.logits[f.logits.len() - n_vocab as usize..].to_vec()
            }
            Some(o) => return Err(format!("outputs {o}: expected last or all").into()),
        };
        best_prefill = best_prefill.min(t.elapsed().as_secs_f64());
        let mut next = argmax(&last);
        let t = Instant::now();
        for _ in 0..steps {
            let f = engine.forward(&mut cache, &[next], &none)?;
            next = argmax(&f.logits);
        }
        best_decode = best_decode.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{path} ({kernel}): prefill {n_prompt} tokens {:.2} ms ({:.1} tok/s), decode {steps} steps {:.2} ms ({:.1} tok/s), best of {repeats}",
        best_prefill * 1e3,
        n_prompt as f64 / best_prefill,
        best_decode * 1e3,
        steps as f64 / best_decode
    );
    Ok(())
}
