//! `harness oracle MODEL`: run only the oracle (in its isolated worker process) and show what it
//! computed: its identity, the tokens, the last position's logits and the captured taps.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args};
use serde_json::json;
use xval_cpp_sys::{Evaluation, Limits, Oracle, OracleKind, OracleSettings};
use xval_engine::taps::TapFilter;

use crate::engine_args::KvArg;
use crate::error::Error;
use crate::exit::Exit;
use crate::inputs::parse_token_ids;
use crate::oracles::spawn_oracle;

/// Run only the oracle on MODEL and print its logits and taps.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["prompt", "tokens"])))]
pub struct OracleArgs {
    /// The GGUF model file.
    pub model: PathBuf,
    /// Text to evaluate, tokenized by the oracle's own tokenizer (BOS added as the model asks).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Token ids to evaluate, comma- or space-separated (e.g. `1,15043,3186`).
    #[arg(long)]
    pub tokens: Option<String>,
    /// Which oracle runs the model: builtin (mainline llama.cpp built into this binary),
    /// ggml-graph (our BitNet graph from ggml ops; runs bitnet-b1.58 too) or dir:PATH (your
    /// own llama.cpp or bitnet.cpp build tree; `dir` alone takes PATH from $BITNET_CPP_DIR).
    #[arg(long, default_value = "builtin", value_parser = OracleKind::parse)]
    pub oracle: OracleKind,
    /// Taps to capture: comma-separated glob patterns over tap names (`*`, `l_out-*`,
    /// `attn_norm-0,result_norm`); none by default.
    #[arg(long, default_value = "")]
    pub taps: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Oracle compute threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Context length in positions (the prompt is evaluated as one batch of at most this).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// K/V cache element type [default: f32, the most exact, or f16 where the oracle refuses
    /// an F32 V cache (bitnet.cpp's fork), said in its identity].
    #[arg(long, value_enum)]
    pub kv_type: Option<KvArg>,
    /// Seconds the oracle may take for loading or for one evaluation before it is killed.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// ggml's reference mode (`ggml_backend_cpu_set_use_ref`): only the ggml-graph oracle, which
    /// owns its CPU backend, can honour it; the others refuse.
    #[arg(long)]
    pub reference_kernels: bool,
}

/// Run the command, printing to stdout.
pub fn run(args: &OracleArgs) -> anyhow::Result<Exit> {
    let tokens = args.tokens.as_deref().map(parse_token_ids).transpose()?;
    let settings = OracleSettings {
        threads: args.threads,
        n_ctx: args.ctx,
        kv_type: args.kv_type.unwrap_or(KvArg::F32).into(),
        kv_fallback: args.kv_type.is_none(),
        reference_kernels: args.reference_kernels,
        ..OracleSettings::default()
    };
    let limits = Limits::each(Duration::from_secs(args.timeout.max(1)));
    let mut oracle = spawn_oracle(&args.oracle, &args.model, &settings, limits)?;
    let tokens = match (tokens, &args.prompt) {
        (Some(t), _) => t,
        (None, Some(p)) => oracle.tokenize(p, true, false).map_err(Error::Oracle)?,
        (None, None) => unreachable!("clap requires --prompt or --tokens"),
    };
    if tokens.is_empty() {
        return Err(Error::Invalid("the prompt tokenizes to no tokens".into()).into());
    }
    let eval = oracle
        .evaluate(&tokens, &TapFilter::parse(&args.taps))
        .map_err(Error::Oracle)?;
    let out = if args.json {
        serde_json::to_string_pretty(&to_json(&oracle, &eval))? + "\n"
    } else {
        table(&oracle, &eval)
    };
    print!("{out}");
    Ok(Exit::Success)
}

/// The `--json` form: `{"oracle", "model", "tokens", "n_vocab", "logits_last", "taps"}`.
pub fn to_json(oracle: &dyn Oracle, eval: &Evaluation) -> serde_json::Value {
    let last = eval.logits_row(eval.n_tokens() - 1);
    let taps: Vec<serde_json::Value> = eval
        .taps
        .iter()
        .zip(&eval.tap_sources)
        .map(|(t, s)| {
            json!({
                "name": t.name,
                "layer": t.layer(),
                "shape": t.shape,
                "op": s.op,
            })
        })
        .collect();
    json!({
        "oracle": oracle.identity(),
        "model": oracle.model(),
        "tokens": eval.tokens,
        "n_vocab": eval.n_vocab,
        "logits_last": last,
        "taps": taps,
    })
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

fn table(oracle: &dyn Oracle, eval: &Evaluation) -> String {
    let id = oracle.identity();
    let m = oracle.model();
    let s = &id.settings;
    let onoff = |b: bool| if b { "on" } else { "off" };
    let mut o = String::new();
    let _ = writeln!(o, "oracle    {} ({})", id.kind, id.version);
    let _ = writeln!(
        o,
        "build     {}, {}, {}, CPU {}",
        id.build.source,
        id.build.build_type,
        id.build.compiler,
        id.build.cpu_features.join(" ")
    );
    let _ = writeln!(
        o,
        "settings  threads {}, ctx {}, kv {}, flash-attn {}, fusion {}, reference kernels {}",
        s.threads,
        s.n_ctx,
        s.kv_type.name(),
        onoff(s.flash_attn),
        onoff(s.fusion),
        if s.reference_kernels.available {
            onoff(s.reference_kernels.enabled)
        } else {
            "unavailable"
        }
    );
    let _ = writeln!(
        o,
        "model     {} [{}], input {}",
        m.path, m.architecture, s.model_input
    );
    let _ = writeln!(
        o,
        "          {} layers, embd {}, heads {}/{} kv, vocab {}",
        m.n_layer, m.n_embd, m.n_head, m.n_head_kv, m.n_vocab
    );
    let _ = writeln!(o, "tokens    {:?} ({})", eval.tokens, eval.n_tokens());
    let last = eval.logits_row(eval.n_tokens() - 1);
    let _ = writeln!(o, "\ntop logits at position {}:", eval.n_tokens() - 1);
    let _ = writeln!(o, "  {:>8}  {:>12}", "token", "logit");
    for i in top_k(last, 5) {
        let _ = writeln!(o, "  {i:>8}  {:>12.6}", last[i]);
    }
    if !eval.taps.is_empty() {
        let _ = writeln!(o, "\ntaps ({}):", eval.taps.len());
        let _ = writeln!(
            o,
            "  {:<18} {:<9} {:<16} {:>12} {:>12}",
            "name", "op", "shape", "rms", "max|x|"
        );
        for (t, src) in eval.taps.iter().zip(&eval.tap_sources) {
            let n = t.data.len().max(1) as f64;
            let rms = (t.data.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / n).sqrt();
            let max = t.data.iter().fold(0f32, |m, x| m.max(x.abs()));
            let _ = writeln!(
                o,
                "  {:<18} {:<9} {:<16} {:>12.6} {:>12.6}",
                t.name,
                src.op,
                format!("{:?}", t.shape),
                rms,
                max
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_by_value_then_index() {
        assert_eq!(top_k(&[0.5, 2.0, 2.0, -1.0], 3), vec![1, 2, 0]);
    }
}
