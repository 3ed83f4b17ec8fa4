//! `harness bench MODEL`: the engine's prefill and decode speed against an oracle's on the same
//! ids in the same run, and decode's effective bandwidth against the machine's measured read
//! bandwidth; the measuring lives in [`crate::bench`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use xval_cpp_sys::{Limits, Oracle, OracleKind, OracleSettings};
use xval_engine::model::Outputs;
use xval_engine::numerics::KvType;

use crate::bench::{engine_speed, oracle_speed, prompt_ids, read_bandwidth, Speed};
use crate::engine_args::EngineArgs;
use crate::error::Error;
use crate::exit::Exit;
use crate::oracles::spawn_oracle;
use crate::output::emit;

/// Engine speed against an oracle's, in one run.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// The peer measured in the same run: `builtin` (the built-in llama.cpp, compiled for
    /// x86-64-v3), `dir:PATH` (a llama.cpp or bitnet.cpp build tree, e.g. one built with
    /// native flags), `ggml-graph`, or `none`.
    #[arg(long, default_value = "builtin", value_parser = parse_vs)]
    pub vs: Peer,
    /// Prompt tokens evaluated in one batch (prefill).
    #[arg(long, default_value_t = 64)]
    pub prompt_tokens: usize,
    /// Greedy single-token steps after the prompt (decode).
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Runs of each measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Give every prompt position logits on both sides (what a comparison needs), instead of
    /// the last one only (what `llama-bench` and `llama-cli` do, the default).
    #[arg(long)]
    pub all_logits: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print one JSON object: engine {pp_tok_s, tg_tok_s, kernel}, peer {name, pp_tok_s,
    /// tg_tok_s}, ratio {pp, tg}, bandwidth_gb_s, decode_gb_s, and the settings.
    #[arg(long)]
    pub json: bool,
}

/// `--vs`: an oracle kind, or none.
#[derive(Clone, Debug)]
pub struct Peer(pub Option<OracleKind>);

fn parse_vs(s: &str) -> Result<Peer, String> {
    if s == "none" {
        return Ok(Peer(None));
    }
    OracleKind::parse(s).map(|k| Peer(Some(k)))
}

#[derive(Serialize)]
struct EngineSpeed {
    #[serde(flatten)]
    speed: Speed,
    kernel: String,
    profile: String,
}

#[derive(Serialize)]
struct PeerSpeed {
    name: String,
    #[serde(flatten)]
    speed: Speed,
}

#[derive(Serialize)]
struct Ratio {
    pp: f64,
    tg: f64,
}

#[derive(Serialize)]
struct BenchReport {
    model: String,
    threads: usize,
    prompt_tokens: usize,
    /// Which prompt positions got logits: `last` or `all`.
    prefill_outputs: &'static str,
    steps: usize,
    repeats: usize,
    engine: EngineSpeed,
    peer: Option<PeerSpeed>,
    ratio: Option<Ratio>,
    bandwidth_gb_s: f64,
    decode_bytes_per_token: u64,
    decode_gb_s: f64,
}

pub fn run(args: &BenchArgs) -> Result<Exit> {
    args.engine.single_kernel("bench")?;
    if args.prompt_tokens == 0 || args.steps == 0 {
        return Err(Error::Invalid("--prompt-tokens and --steps must be at least 1".into()).into());
    }
    let engine = args.engine.engine(&args.model)?;
    let hp = &engine.model().hparams;
    let needed = args.prompt_tokens + args.steps;
    if needed > hp.n_ctx {
        return Err(Error::Invalid(format!(
            "{} prompt tokens and {} steps need {needed} positions; the model's context is {}",
            args.prompt_tokens, args.steps, hp.n_ctx
        ))
        .into());
    }
    let threads = engine.threads();
    let prompt = prompt_ids(args.prompt_tokens, hp.n_vocab);
    let outputs = if args.all_logits {
        Outputs::All
    } else {
        Outputs::Last
    };
    let mine = engine_speed(&engine, &prompt, outputs, args.steps, args.repeats)?;

    let peer = match &args.vs.0 {
        None => None,
        Some(kind) => {
            // llama.cpp's own defaults for speed: fused ops where its ggml has them (a tree
            // without, such as bitnet.cpp's fork, runs unfused as it always does), an F16 KV
            // cache.
            let fusion = match kind {
                OracleKind::External { dir } => xval_cpp_sys::external::inspect(dir)
                    .map_err(Error::Oracle)?
                    .fuses(),
                _ => true,
            };
            let settings = OracleSettings {
                threads,
                n_ctx: needed,
                kv_type: KvType::F16,
                kv_fallback: false,
                flash_attn: false,
                fusion,
                reference_kernels: false,
            };
            let limits = Limits::each(Duration::from_secs(3600));
            let mut oracle = spawn_oracle(kind, &args.model, &settings, limits)?;
            let speed = oracle_speed(&mut oracle, &prompt, outputs, args.steps, args.repeats)?;
            Some(PeerSpeed {
                name: format!("{} ({})", oracle.identity().version, kind.label()),
                speed,
            })
        }
    };
    let bandwidth = read_bandwidth(threads)?;
    let bytes = engine.model().decode_bytes_per_token();
    let report = BenchReport {
        model: args.model.display().to_string(),
        threads,
        prompt_tokens: args.prompt_tokens,
        prefill_outputs: outputs.name(),
        steps: args.steps,
        repeats: args.repeats.max(1),
        engine: EngineSpeed {
            speed: mine,
            kernel: engine.kernel().name().to_string(),
            profile: engine.numerics().profile.name().to_string(),
        },
        ratio: peer.as_ref().map(|p| Ratio {
            pp: mine.pp_tok_s / p.speed.pp_tok_s,
            tg: mine.tg_tok_s / p.speed.tg_tok_s,
        }),
        peer,
        bandwidth_gb_s: bandwidth,
        decode_bytes_per_token: bytes,
        decode_gb_s: bytes as f64 * mine.tg_tok_s / 1e9,
    };
    if args.json {
        emit(|out| {
            serde_json::to_writer(&mut *out, &report)?;
            writeln!(out)
        })?;
    } else {
        emit(|out| write!(out, "{}", render(&report)))?;
    }
    Ok(Exit::Success)
}

fn render(r: &BenchReport) -> String {
    let mut s = format!(
        "bench {}: {}-token prefill, {} decode steps, threads {}, median of {}\n",
        r.model, r.prompt_tokens, r.steps, r.threads, r.repeats
    );
    let row = |who: &str, pp: f64, tg: f64| {
        format!("{who:<44} pp {pp:>10.1} tok/s  tg {tg:>8.1} tok/s\n")
    };
    s += &row(
        &format!(
            "engine (kernel {}, profile {})",
            r.engine.kernel, r.engine.profile
        ),
        r.engine.speed.pp_tok_s,
        r.engine.speed.tg_tok_s,
    );
    if let (Some(p), Some(x)) = (&r.peer, &r.ratio) {
        s += &row(&p.name, p.speed.pp_tok_s, p.speed.tg_tok_s);
        s += &format!(
            "{:<44} pp {:>9.2}x        tg {:>7.2}x\n",
            "engine / peer", x.pp, x.tg
        );
    }
    s += &format!(
        "decode reads {:.2} MB of weights per token: {:.2} GB/s, {:.0}% of the measured read \
         bandwidth ({:.1} GB/s with {} threads)\n",
        r.decode_bytes_per_token as f64 / 1e6,
        r.decode_gb_s,
        100.0 * r.decode_gb_s / r.bandwidth_gb_s,
        r.bandwidth_gb_s,
        r.threads
    );
    s
}
