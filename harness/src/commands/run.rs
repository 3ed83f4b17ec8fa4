//! `harness run`: greedy generation with the engine alone.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use xval_engine::numerics::{KvType, Profile};
use xval_engine::quant::kernels::Kernel;
use xval_engine::sampling::argmax;
use xval_engine::taps::TapFilter;

use crate::engine_args::EngineArgs;
use crate::exit::Exit;

/// Generate greedily from a prompt with the xval engine.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// Prompt text (tokenized with the model's own tokenizer, BOS added as the model says,
    /// special tokens such as <|eot_id|> recognised).
    #[arg(long, short = 'p')]
    pub prompt: String,
    /// Tokens to generate (generation also stops at end-of-generation tokens).
    #[arg(short = 'n', long = "n-predict", default_value_t = 16)]
    pub n: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The `--json` output.
#[derive(Serialize)]
struct RunReport<'a> {
    model: String,
    prompt_tokens: &'a [u32],
    generated_tokens: &'a [u32],
    text: String,
    profile: Profile,
    kv_type: KvType,
    kernel: Kernel,
    threads: usize,
    prefill_tok_s: f64,
    decode_tok_s: Option<f64>,
    /// All vocabulary logits at the last prompt position.
    last_logits: &'a [f32],
}

pub fn run(args: &RunArgs) -> Result<Exit> {
    args.engine.single_kernel("run")?;
    let engine = args.engine.engine(&args.model)?;
    let tokenizer = engine.model().tokenizer()?;
    let prompt = tokenizer.encode_complete(&args.prompt, true, true)?;
    if prompt.is_empty() {
        anyhow::bail!("the prompt tokenized to nothing: give a non-empty prompt");
    }
    let none = TapFilter::none();
    let mut cache = engine.new_cache();
    let t0 = Instant::now();
    // The prompt's last position is the only output, as llama.cpp's own CLI evaluates it.
    let last_logits = engine.forward_last(&mut cache, &prompt)?;
    let prefill_s = t0.elapsed().as_secs_f64();

    let mut generated = Vec::with_capacity(args.n);
    let mut next = argmax(&last_logits);
    let t1 = Instant::now();
    while generated.len() < args.n {
        generated.push(next);
        if tokenizer.is_eog(next) || generated.len() == args.n {
            break;
        }
        let out = engine.forward(&mut cache, &[next], &none)?;
        next = argmax(out.last_logits());
    }
    let decode_s = t1.elapsed().as_secs_f64();
    // The first generated token comes from the prefill; each later one costs one decode step.
    let steps = generated.len().saturating_sub(1);
    let text = tokenizer.decode(&generated)?;
    let report = RunReport {
        model: args.model.display().to_string(),
        prompt_tokens: &prompt,
        generated_tokens: &generated,
        text,
        profile: engine.numerics().profile,
        kv_type: engine.numerics().kv,
        kernel: engine.kernel(),
        threads: engine.threads(),
        prefill_tok_s: prompt.len() as f64 / prefill_s,
        decode_tok_s: (steps > 0).then(|| steps as f64 / decode_s),
        last_logits: &last_logits,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}{}", args.prompt, report.text);
        eprintln!(
            "\n[{} prompt tokens, {} generated | profile {} (kv {}), kernel {}, {} threads | \
             prefill {:.1} tok/s{}]",
            prompt.len(),
            generated.len(),
            report.profile,
            report.kv_type,
            report.kernel,
            report.threads,
            report.prefill_tok_s,
            report
                .decode_tok_s
                .map(|r| format!(", decode {r:.1} tok/s"))
                .unwrap_or_default()
        );
    }
    Ok(Exit::Success)
}
