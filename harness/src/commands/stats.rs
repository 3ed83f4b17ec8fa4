//! `harness stats`: the activation statistics of a model on prompts (residual outliers,
//! attention entropy, logit margins), computed in [`crate::stats`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use xval_engine::taps::TapFilter;

use crate::engine_args::EngineArgs;
use crate::exit::Exit;
use crate::inputs::{read_prompts, DEFAULT_PROMPT};
use crate::output::emit;
use crate::stats::{Heads, LayerStats, MarginStats, StatsAccumulator};

/// Activation statistics of a model on prompts.
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// A prompt (repeatable) [default: the compare default prompt].
    #[arg(long, short = 'p')]
    pub prompt: Vec<String>,
    /// A file of prompts, one per line (added to --prompt).
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print one JSON object (model, prompts, tokens, layers, margins).
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct StatsReport {
    model: String,
    prompts: usize,
    tokens: usize,
    layers: Vec<LayerStats>,
    margins: MarginStats,
}

pub fn run(args: &StatsArgs) -> Result<Exit> {
    args.engine.single_kernel("stats")?;
    let engine = args.engine.engine(&args.model)?;
    let tokenizer = engine.model().tokenizer()?;
    let mut prompts = args.prompt.clone();
    if let Some(p) = &args.prompts {
        prompts.extend(read_prompts(p)?);
    }
    if prompts.is_empty() {
        prompts.push(DEFAULT_PROMPT.to_string());
    }
    let hp = &engine.model().hparams;
    let heads = Heads {
        n_head: hp.n_head,
        n_head_kv: hp.n_head_kv,
        head_dim: hp.head_dim,
    };
    let filter = TapFilter::parse("l_out-*,Qcur-*,Kcur-*");
    let mut acc = StatsAccumulator::default();
    let mut tokens = 0;
    for p in &prompts {
        let ids = tokenizer.encode_complete(p, true, true)?;
        if ids.is_empty() {
            anyhow::bail!("the prompt {p:?} tokenized to nothing");
        }
        tokens += ids.len();
        let out = engine.forward(&mut engine.new_cache(), &ids, &filter)?;
        acc.add(&out.taps, heads, hp.n_layer, &out.logits, out.n_vocab);
    }
    let (layers, margins) = acc.finish();
    let report = StatsReport {
        model: args.model.display().to_string(),
        prompts: prompts.len(),
        tokens,
        layers,
        margins,
    };
    emit(|out| {
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            return writeln!(out);
        }
        writeln!(
            out,
            "{}: {} prompts, {} tokens",
            report.model, report.prompts, report.tokens
        )?;
        writeln!(
            out,
            "layer  outlier max  outlier mean  top feature (share)  attn entropy  rel. entropy"
        )?;
        for l in &report.layers {
            writeln!(
                out,
                "{:>5}  {:>11.2}  {:>12.2}  {:>11} ({:>4.0}%)  {:>12.3}  {:>12.3}",
                l.layer,
                l.outlier_max,
                l.outlier_mean,
                l.outlier_feature,
                l.outlier_feature_share * 100.0,
                l.attn_entropy,
                l.attn_entropy_rel
            )?;
        }
        let m = &report.margins;
        writeln!(
            out,
            "logits over {} positions: top-1 margin median {:.3}, min {:.3e}; mean top-1 \
             probability {:.3}",
            m.positions, m.margin_median, m.margin_min, m.top1_prob_mean
        )
    })?;
    Ok(Exit::Success)
}
