//! `harness compare`: run the engine and an oracle on the same token ids, compare every tap and
//! the logits, follow both through greedy decode steps, write a receipt, print a report.
//!
//! The flow: [`inputs`] (prompts or ids), [`prepare`] (model, tokenizer, oracle, engine,
//! thresholds), then per input [`crate::sides::run_sides`] (both sides) and
//! [`crate::compare::compare_core`] (the judgement), and [`emit`] (receipt, plot, report).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, ValueEnum};
use xval_cpp_sys::{Limits, OracleSettings};
use xval_engine::model::Engine;
use xval_engine::tokenizer::Tokenizer;

use crate::compare::receipt::{EngineIdentity, Provenance};
use crate::compare::thresholds::{AppliedThresholds, ThresholdKey};
use crate::compare::verdict::Pairing;
use crate::compare::{
    compare_core, gate, plot, report, CompareSettings, Receipt, Side, Thresholds,
};
use crate::engine_args::{EngineArgs, KvArg};
use crate::error::Error;
use crate::exit::Exit;
use crate::inputs::{parse_token_ids, read_prompts, DEFAULT_PROMPT};
use crate::oracles::{self, OpenRequest, OracleChoice};
use crate::sides::{run_sides, RunPlan};

/// Kernel families of the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The scalar reference kernels.
    Scalar,
    /// SIMD kernels (AVX2, AVX-512, NEON): not in this version.
    Simd,
    /// CUDA kernels: not in this version.
    Cuda,
    /// Every backend this build has (today: scalar).
    All,
}

/// Report formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// A table per layer for a terminal.
    Table,
    /// The receipt itself.
    Json,
    /// A summary for a pull-request comment.
    Markdown,
}

/// Compare the xval engine with an oracle, layer by layer.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").args(["prompt", "tokens", "prompts"])))]
pub struct CompareArgs {
    /// The GGUF model.
    pub model: PathBuf,
    /// Prompt text [default: "The quick brown fox jumps over the lazy dog."; with golden
    /// recordings, every recorded prompt]. Both sides tokenize it; both then run the oracle's
    /// ids.
    #[arg(long, short = 'p')]
    pub prompt: Option<String>,
    /// Token ids to run instead of a prompt (comma or space separated).
    #[arg(long)]
    pub tokens: Option<String>,
    /// A file of prompts, one per line (empty lines skipped): one receipt per prompt.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The oracle: auto, builtin (mainline llama.cpp built in), golden (recorded outputs),
    /// ggml-graph (our BitNet graph from ggml ops) or dir:PATH (your llama.cpp/bitnet.cpp build
    /// tree; `dir` alone reads $BITNET_CPP_DIR). auto: the tree in $BITNET_CPP_DIR when set,
    /// else builtin for `bitnet`, ggml-graph for `bitnet-b1.58`, else golden recordings.
    #[arg(long, default_value = "auto")]
    pub oracle: String,
    /// Engine kernels to compare.
    #[arg(long, value_enum, default_value_t = BackendArg::Scalar)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Taps to capture and compare (glob patterns, comma separated: `all`, `l_out-*`, ...).
    #[arg(long, default_value = "all")]
    pub taps: String,
    /// Greedy decode steps through both KV caches after the prompt.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Write the receipt (JSON) here; with --prompts, FILE gets `.N` before its extension.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Write an SVG plot of per-layer agreement (one line per metric, log scale).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Threshold file [default: ci/thresholds.toml as built in].
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Oracle compute threads (its results do not depend on it).
    #[arg(long, default_value_t = 1)]
    pub oracle_threads: usize,
    /// The oracle's K/V cache type [default: f32, the most exact, or f16 where the oracle
    /// refuses an F32 V cache (bitnet.cpp's fork), said in the receipt]. The engine mirrors
    /// what the oracle runs unless --kv says otherwise.
    #[arg(long, value_enum)]
    pub oracle_kv_type: Option<KvArg>,
    /// Seconds the oracle may take to load or to answer one request before it is stopped.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Run the oracle in ggml's reference mode (ggml-graph oracle only; recorded in the
    /// receipt's oracle settings).
    #[arg(long)]
    pub oracle_reference_kernels: bool,
    /// Where golden recordings live [default: the repository's fixtures/].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
}

/// One thing to compare: a prompt both sides tokenize, or ids given with `--tokens`.
enum Input {
    Prompt(String),
    Ids(Vec<u32>),
}

/// What `--prompt`, `--tokens` or `--prompts` ask for (the default prompt when none).
fn inputs(args: &CompareArgs) -> anyhow::Result<Vec<Input>> {
    Ok(match (&args.prompt, &args.tokens, &args.prompts) {
        (Some(p), _, _) => vec![Input::Prompt(p.clone())],
        (_, Some(t), _) => vec![Input::Ids(parse_token_ids(t)?)],
        (_, _, Some(f)) => read_prompts(f)?.into_iter().map(Input::Prompt).collect(),
        _ => vec![Input::Prompt(DEFAULT_PROMPT.to_string())],
    })
}

/// Everything fixed for the whole command: the engine, the oracle and how to judge.
struct Prepared {
    engine: Engine,
    tokenizer: Tokenizer,
    oracle: oracles::OpenedOracle,
    thresholds: AppliedThresholds,
    pairing: Pairing,
    provenance: Provenance,
    engine_identity: EngineIdentity,
    oracle_identity: serde_json::Value,
    load_s: f64,
}

/// Load and check the model (bad input is exit 2 before any oracle starts), open the oracle,
/// and build the engine under the profile that mirrors the oracle unless `--profile` says
/// otherwise.
fn prepare(args: &CompareArgs, inputs: &[Input]) -> anyhow::Result<Prepared> {
    let t_load = Instant::now();
    let model = args.engine.model(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(model.file())?;
    let arch = model.hparams.arch_name.clone();
    let longest = inputs
        .iter()
        .map(|i| match i {
            Input::Prompt(p) => tokenizer.encode(p, true, true).map(|v| v.len()),
            Input::Ids(ids) => Ok(ids.len()),
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let settings = OracleSettings {
        threads: args.oracle_threads.max(1),
        // Room for the longest prompt (with slack for the oracle's own tokenization) and the
        // decode steps; llama.cpp rounds it up to a multiple of 256.
        n_ctx: (2 * longest + args.steps + 8).max(64),
        kv_type: args.oracle_kv_type.unwrap_or(KvArg::F32).into(),
        kv_fallback: args.oracle_kv_type.is_none(),
        reference_kernels: args.oracle_reference_kernels,
        ..OracleSettings::default()
    };
    let limit = Duration::from_secs(args.timeout.max(1));
    let oracle = oracles::open(&OpenRequest {
        choice: &OracleChoice::parse(&args.oracle)?,
        model: &args.model,
        arch: &arch,
        settings: &settings,
        limits: Limits {
            load: limit,
            request: limit,
        },
        fixtures: args.fixtures.as_deref(),
    })?;
    let identity = oracle.oracle.identity();
    // Without --profile the engine mirrors the oracle's arithmetic.
    let engine = args.engine.engine_for(model, Some(identity.numerics))?;
    let thresholds = match &args.thresholds {
        Some(p) => Thresholds::load(p)?,
        None => Thresholds::default(),
    }
    .resolve(&ThresholdKey {
        format: engine.model().projection_type().name().to_string(),
        profile: engine.numerics().profile,
        backend: engine.backend(),
    });
    let pairing = Pairing::new(engine.numerics(), &identity.kind, identity.numerics);
    let oracle_identity = serde_json::to_value(identity)?;
    let engine_identity =
        EngineIdentity::of_engine(&engine, option_env!("XVAL_GIT_COMMIT").map(String::from));
    let provenance = Provenance::of_model(&args.model, engine.model(), &tokenizer);
    Ok(Prepared {
        engine,
        tokenizer,
        oracle,
        thresholds,
        pairing,
        provenance,
        engine_identity,
        oracle_identity,
        load_s: t_load.elapsed().as_secs_f64(),
    })
}

pub fn run(args: &CompareArgs) -> anyhow::Result<Exit> {
    match args.backend {
        BackendArg::Scalar | BackendArg::All => {}
        BackendArg::Simd | BackendArg::Cuda => {
            let name = if args.backend == BackendArg::Simd {
                "simd"
            } else {
                "cuda"
            };
            return Err(Error::Invalid(format!(
                "--backend {name}: this version of xval has only the scalar kernels"
            ))
            .into());
        }
    }
    let mut inputs = inputs(args)?;
    let mut p = prepare(args, &inputs)?;
    // Recordings answer only for what was recorded: without an explicit input, compare them all.
    if let (Some(recorded), None, None, None) = (
        p.oracle.oracle.recorded_prompts(),
        &args.prompt,
        &args.tokens,
        &args.prompts,
    ) {
        inputs = recorded.into_iter().map(Input::Prompt).collect();
    }
    let mut worst = Exit::Success;
    for (i, input) in inputs.iter().enumerate() {
        let receipt = compare_one(args, &mut p, input)?;
        emit(args, &receipt, i, inputs.len())?;
        if !receipt.summary.passes {
            worst = Exit::Divergence;
        }
    }
    Ok(worst)
}

/// Both sides on one input, judged.
fn compare_one(args: &CompareArgs, p: &mut Prepared, input: &Input) -> anyhow::Result<Receipt> {
    let (engine_ids, oracle_ids) = match input {
        Input::Prompt(text) => (
            p.tokenizer.encode(text, true, true)?,
            p.oracle
                .oracle
                .get()
                .tokenize(text, true, true)
                .map_err(Error::Oracle)?,
        ),
        Input::Ids(ids) => (ids.clone(), ids.clone()),
    };
    if oracle_ids.is_empty() {
        return Err(Error::Invalid("the prompt tokenizes to no tokens".into()).into());
    }
    let mut timings = BTreeMap::from([("load".to_string(), p.load_s)]);
    let steps = match p.oracle.oracle.step_limit(&oracle_ids) {
        Some(limit) => args.steps.min(limit),
        None => args.steps,
    };
    let mut cache = p.engine.new_cache();
    let sides = run_sides(
        &p.engine,
        &mut cache,
        p.oracle.oracle.get(),
        &RunPlan {
            ids: &oracle_ids,
            steps,
            taps: &xval_engine::taps::TapFilter::parse(&args.taps),
            progress: std::io::stderr().is_terminal(),
        },
        &mut timings,
    )?;
    Ok(compare_core(
        &Side {
            tokenized: engine_ids,
            prefill: sides.engine_prefill,
            decode: sides.engine_steps,
            replay: sides.replay,
        },
        &Side {
            tokenized: oracle_ids,
            prefill: sides.oracle_prefill,
            decode: sides.oracle_steps,
            replay: Vec::new(),
        },
        &CompareSettings {
            mode: p.oracle.mode.clone(),
            provenance: p.provenance.clone(),
            engine: p.engine_identity.clone(),
            oracle: p.oracle_identity.clone(),
            pairing: p.pairing.clone(),
            thresholds: p.thresholds.clone(),
            top_k: 10,
            steps_requested: args.steps,
            created: crate::timefmt::now_rfc3339(),
            timings,
        },
    )?)
}

/// `out` with `.N` before its extension (`r.json` -> `r.2.json`).
fn numbered(out: &Path, i: usize) -> PathBuf {
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("receipt");
    let name = match out.extension().and_then(|e| e.to_str()) {
        Some(ext) => format!("{stem}.{i}.{ext}"),
        None => format!("{stem}.{i}"),
    };
    out.with_file_name(name)
}

fn emit(args: &CompareArgs, receipt: &Receipt, i: usize, n: usize) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        let path = if n > 1 { numbered(out, i) } else { out.clone() };
        receipt.write_atomic(&path)?;
    }
    if let Some(p) = &args.plot {
        let path = if n > 1 { numbered(p, i) } else { p.clone() };
        crate::output::write_atomic(&path, plot::render_svg(receipt).as_bytes())?;
    }
    let text = match args.format {
        FormatArg::Table => report::render_table(receipt, std::io::stdout().is_terminal()),
        FormatArg::Markdown => report::render_markdown(receipt),
        FormatArg::Json => serde_json::to_string_pretty(receipt)? + "\n",
    };
    print!("{text}");
    if args.format != FormatArg::Json {
        if let Some(w) = &receipt.mode.warning {
            eprintln!("warning: {w}");
        }
        let v = gate::violations(receipt, &receipt.thresholds);
        if !v.is_empty() {
            eprintln!("{} violation(s) of the thresholds", v.len());
        }
    }
    Ok(())
}
