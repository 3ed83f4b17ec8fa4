//! `harness compare`: run the engine and an oracle on the same token ids, compare every tap and
//! the logits, follow both through greedy decode steps, write a receipt, print a report.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, ValueEnum};
use xval_cpp_sys::golden::GoldenOracle;
use xval_cpp_sys::{Evaluation, Limits, Oracle, OracleKind, OracleSettings};
use xval_engine::gguf::GgmlType;
use xval_engine::model::{Engine, KvCache};
use xval_engine::numerics::Profile;
use xval_engine::taps::{Tap, TapFilter};
use xval_engine::tokenizer::Tokenizer;

use crate::compare::receipt::{EngineIdentity, Mode, Provenance};
use crate::compare::thresholds::ThresholdKey;
use crate::compare::verdict::Pairing;
use crate::compare::{
    compare_core, gate, plot, replay_on_oracle_inputs, report, CompareSettings, Receipt, Side,
    SideEval, Thresholds,
};
use crate::engine_args::EngineArgs;
use crate::error::Error;
use crate::exit::Exit;
use crate::oracle_cmd::{parse_token_ids, spawn_oracle};
use crate::run_cmd::argmax;

/// The prompt compared when none is given.
pub const DEFAULT_PROMPT: &str = "The quick brown fox jumps over the lazy dog.";

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
    /// The oracle's K/V cache type: f32 is the most exact; bitnet.cpp's fork runs only f16
    /// (pair it with `--profile bitnet-cpp`).
    #[arg(long, value_enum, default_value_t = crate::engine_args::KvArg::F32)]
    pub oracle_kv_type: crate::engine_args::KvArg,
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

/// Which oracle to use, parsed from `--oracle`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OracleChoice {
    Auto,
    Golden,
    Live(OracleKind),
}

fn parse_oracle(s: &str) -> Result<OracleChoice, Error> {
    Ok(match s {
        "auto" => OracleChoice::Auto,
        "golden" => OracleChoice::Golden,
        _ => OracleChoice::Live(
            OracleKind::parse(s)
                .map_err(|e| Error::Invalid(format!("--oracle: {e} (or auto, golden)")))?,
        ),
    })
}

fn unavailable(oracle: &str, reason: impl Into<String>) -> anyhow::Error {
    Error::Oracle(xval_cpp_sys::Error::Unavailable {
        oracle: oracle.into(),
        reason: reason.into(),
    })
    .into()
}

/// A live oracle, or recorded outputs that answer only for what was recorded.
enum OracleBox {
    Live(Box<dyn Oracle>),
    Golden(Box<GoldenOracle>),
}

impl OracleBox {
    fn get(&mut self) -> &mut dyn Oracle {
        match self {
            OracleBox::Live(o) => o.as_mut(),
            OracleBox::Golden(g) => g.as_mut(),
        }
    }

    /// How many decode steps can follow `ids` (recordings hold a fixed greedy continuation).
    fn step_limit(&self, ids: &[u32]) -> Option<usize> {
        match self {
            OracleBox::Live(_) => None,
            OracleBox::Golden(g) => Some(g.greedy_continuation(ids).map_or(0, <[u32]>::len)),
        }
    }
}

/// An opened oracle and how the receipt should describe the run.
struct OpenedOracle {
    oracle: OracleBox,
    mode: Mode,
}

fn open_oracle(
    args: &CompareArgs,
    arch: &str,
    settings: &OracleSettings,
) -> anyhow::Result<OpenedOracle> {
    let choice = parse_oracle(&args.oracle)?;
    let limit = Duration::from_secs(args.timeout.max(1));
    let limits = Limits {
        load: limit,
        request: limit,
    };
    let live = |kind: OracleKind| -> anyhow::Result<OpenedOracle> {
        if kind == OracleKind::Builtin && arch != "bitnet" {
            return Err(unavailable(
                "builtin",
                format!(
                    "mainline llama.cpp cannot run architecture '{arch}' (its `bitnet` graph \
                     hard-codes SiLU; `bitnet-b1.58` needs ReLU^2): use --oracle ggml-graph or \
                     dir:PATH to a bitnet.cpp tree"
                ),
            ));
        }
        Ok(OpenedOracle {
            oracle: OracleBox::Live(Box::new(spawn_oracle(
                &kind,
                &args.model,
                settings,
                limits,
            )?)),
            mode: Mode::oracle(),
        })
    };
    match choice {
        OracleChoice::Live(kind) => live(kind),
        OracleChoice::Auto => match auto_kind(arch) {
            Some(kind) => live(kind),
            None => open_golden(args, choice),
        },
        OracleChoice::Golden => open_golden(args, choice),
    }
}

/// The engine profile that mirrors an oracle's arithmetic: ggml's (Q8_K activations) for
/// llama.cpp, ggml-graph and recordings of them; bitnet.cpp's (int8 per row) for a build tree
/// that reads I2_S natively, which only bitnet.cpp does (mainline trees get the TQ2_0
/// transcode, and their identity says so).
fn oracle_numerics(identity: &xval_cpp_sys::OracleIdentity, projection: GgmlType) -> Profile {
    let native_i2s = identity.kind == "external"
        && projection == GgmlType::I2_S
        && !identity.settings.model_input.starts_with("transcoded");
    if native_i2s {
        Profile::BitnetCpp
    } else {
        Profile::Ggml
    }
}

/// What `--oracle auto` runs live: the tree `$BITNET_CPP_DIR` names, else the built-in
/// llama.cpp for `bitnet` and the ggml-graph oracle for the architectures mainline lacks;
/// `None` (golden recordings) in a build without ggml.
fn auto_kind(arch: &str) -> Option<OracleKind> {
    if let Some(dir) = std::env::var_os(xval_cpp_sys::BITNET_CPP_DIR_ENV).filter(|d| !d.is_empty())
    {
        return Some(OracleKind::External { dir: dir.into() });
    }
    if !xval_cpp_sys::BUILTIN_AVAILABLE {
        return None;
    }
    Some(if arch == "bitnet" {
        OracleKind::Builtin
    } else {
        OracleKind::GgmlGraph
    })
}

fn open_golden(args: &CompareArgs, choice: OracleChoice) -> anyhow::Result<OpenedOracle> {
    let dir = match &args.fixtures {
        Some(d) => d.clone(),
        None => {
            let cwd = std::env::current_dir()
                .map_err(|e| Error::Invalid(format!("cannot read the current directory: {e}")))?;
            crate::fixtures::find_repo_root(&cwd)?.join(crate::fixtures::FIXTURES_DIR)
        }
    };
    let golden = GoldenOracle::open(&dir, &args.model).map_err(|e| {
        if choice == OracleChoice::Auto {
            unavailable(
                "auto",
                format!(
                    "no live oracle can run this model in this build and no golden recording \
                     fits it ({e})"
                ),
            )
        } else {
            Error::Oracle(e).into()
        }
    })?;
    Ok(OpenedOracle {
        oracle: OracleBox::Golden(Box::new(golden)),
        mode: Mode::rust_only(),
    })
}

fn side_eval(tokens: Vec<u32>, n_vocab: usize, logits: Vec<f32>, taps: Vec<Tap>) -> SideEval {
    SideEval {
        tokens,
        n_vocab,
        logits,
        taps,
    }
}

fn oracle_eval(e: Evaluation) -> SideEval {
    side_eval(e.tokens, e.n_vocab, e.logits, e.taps)
}

/// Prompt evaluations, decode steps of both sides, and the engine's op replays.
type Sides = (SideEval, SideEval, Vec<SideEval>, Vec<SideEval>, Vec<Tap>);

/// Evaluate the prompt on both sides, then follow the oracle's greedy tokens for `steps`.
#[allow(clippy::too_many_arguments)]
fn run_both(
    engine: &Engine,
    cache: &mut KvCache,
    oracle: &mut dyn Oracle,
    ids: &[u32],
    steps: usize,
    taps: &TapFilter,
    timings: &mut BTreeMap<String, f64>,
    progress: bool,
) -> anyhow::Result<Sides> {
    cache.clear();
    let t = Instant::now();
    let e = engine.forward(cache, ids, taps)?;
    timings.insert("engine_prefill".into(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let o = oracle.evaluate(ids, taps).map_err(Error::Oracle)?;
    timings.insert("oracle_prefill".into(), t.elapsed().as_secs_f64());
    let mut next = argmax(o.logits_row(o.n_tokens() - 1));
    let (e_pre, o_pre) = (
        side_eval(ids.to_vec(), e.n_vocab, e.logits, e.taps),
        oracle_eval(o),
    );
    let t = Instant::now();
    let replay = replay_on_oracle_inputs(engine, ids, &e_pre.taps, &o_pre.taps);
    timings.insert("engine_replay".into(), t.elapsed().as_secs_f64());
    let steps = steps.min(cache.capacity().saturating_sub(ids.len()));
    let bar = progress.then(|| {
        let b = indicatif::ProgressBar::new(steps as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("decode {bar:30} {pos}/{len} steps {elapsed}")
                .expect("valid template"),
        );
        b
    });
    let (mut e_steps, mut o_steps) = (Vec::new(), Vec::new());
    let (mut te, mut to) = (0.0, 0.0);
    for _ in 0..steps {
        let t = Instant::now();
        let e = engine.forward(cache, &[next], taps)?;
        te += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let o = oracle.decode_step(next, taps).map_err(Error::Oracle)?;
        to += t.elapsed().as_secs_f64();
        e_steps.push(side_eval(vec![next], e.n_vocab, e.logits, e.taps));
        next = argmax(o.logits_row(0));
        o_steps.push(oracle_eval(o));
        if let Some(b) = &bar {
            b.inc(1);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    timings.insert("engine_decode".into(), te);
    timings.insert("oracle_decode".into(), to);
    Ok((e_pre, o_pre, e_steps, o_steps, replay))
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
    let t_load = Instant::now();
    // The model first: a malformed file is bad input (exit 2) before any oracle sees it.
    let model = args.engine.model(&args.model)?;
    let tokenizer = Tokenizer::from_gguf(model.file())?;
    let arch = model.hparams.arch_name.clone();
    let projection_type = model.projection_type();

    // Inputs: prompts (tokenized by both sides) or ids.
    let mut prompts: Vec<Option<String>> = match (&args.prompt, &args.tokens, &args.prompts) {
        (Some(p), _, _) => vec![Some(p.clone())],
        (_, Some(_), _) => vec![None],
        (_, _, Some(f)) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| Error::Invalid(format!("--prompts {}: {e}", f.display())))?;
            let v: Vec<Option<String>> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| Some(l.to_string()))
                .collect();
            if v.is_empty() {
                return Err(
                    Error::Invalid(format!("--prompts {}: no prompts", f.display())).into(),
                );
            }
            v
        }
        _ => vec![Some(DEFAULT_PROMPT.to_string())],
    };
    let given_ids = args.tokens.as_deref().map(parse_token_ids).transpose()?;
    let longest = prompts
        .iter()
        .map(|p| match p {
            Some(p) => tokenizer.encode(p, true, true).map(|v| v.len()),
            None => Ok(given_ids.as_ref().map_or(0, Vec::len)),
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
        kv_type: args.oracle_kv_type.into(),
        reference_kernels: args.oracle_reference_kernels,
        ..OracleSettings::default()
    };
    let mut opened = open_oracle(args, &arch, &settings)?;
    let oracle_numerics = oracle_numerics(opened.oracle.get().identity(), projection_type);
    // Without --profile the engine mirrors the oracle's arithmetic.
    let engine = args.engine.engine_for(model, Some(oracle_numerics))?;
    let thresholds = match &args.thresholds {
        Some(p) => Thresholds::load(p)?,
        None => Thresholds::default(),
    };
    let key = ThresholdKey {
        format: engine.model().projection_type().name().to_string(),
        profile: engine.numerics().profile.name().to_string(),
        backend: "scalar".into(),
    };
    let applied = thresholds.resolve(&key);
    // Recordings answer only for what was recorded: without an explicit input, compare them all.
    if let (OracleBox::Golden(g), None, None, None) =
        (&opened.oracle, &args.prompt, &args.tokens, &args.prompts)
    {
        prompts = g
            .recording()
            .prompts
            .iter()
            .map(|p| Some(p.text.clone()))
            .collect();
    }
    let load_s = t_load.elapsed().as_secs_f64();
    let pairing = Pairing::new(
        engine.numerics().profile.name(),
        &opened.oracle.get().identity().kind,
        oracle_numerics.name(),
    );
    let oracle_identity = serde_json::to_value(opened.oracle.get().identity())?;
    let mut engine_identity =
        EngineIdentity::of_engine(&engine, option_env!("XVAL_GIT_COMMIT").map(String::from));
    engine_identity.backend = "scalar".into();
    let provenance = Provenance::of_model(&args.model, engine.model(), &tokenizer);
    let taps = TapFilter::parse(&args.taps);
    let progress = std::io::stderr().is_terminal();

    let mut worst = Exit::Success;
    let mut cache = engine.new_cache();
    for (i, prompt) in prompts.iter().enumerate() {
        let (engine_ids, oracle_ids) = match prompt {
            Some(p) => (
                tokenizer.encode(p, true, true)?,
                opened
                    .oracle
                    .get()
                    .tokenize(p, true, true)
                    .map_err(Error::Oracle)?,
            ),
            None => {
                let ids = given_ids.clone().expect("--tokens given");
                (ids.clone(), ids)
            }
        };
        if oracle_ids.is_empty() {
            return Err(Error::Invalid("the prompt tokenizes to no tokens".into()).into());
        }
        let mut timings = BTreeMap::from([("load".to_string(), load_s)]);
        let steps = match opened.oracle.step_limit(&oracle_ids) {
            Some(limit) => args.steps.min(limit),
            None => args.steps,
        };
        let (e_pre, o_pre, e_steps, o_steps, replay) = run_both(
            &engine,
            &mut cache,
            opened.oracle.get(),
            &oracle_ids,
            steps,
            &taps,
            &mut timings,
            progress,
        )?;
        let receipt = compare_core(
            &Side {
                tokenized: engine_ids,
                prefill: e_pre,
                decode: e_steps,
                replay,
            },
            &Side {
                tokenized: oracle_ids,
                prefill: o_pre,
                decode: o_steps,
                replay: Vec::new(),
            },
            &CompareSettings {
                mode: opened.mode.clone(),
                provenance: provenance.clone(),
                engine: engine_identity.clone(),
                oracle: oracle_identity.clone(),
                pairing: pairing.clone(),
                thresholds: applied.clone(),
                top_k: 10,
                steps_requested: args.steps,
                created: crate::compare::receipt::now_rfc3339(),
                timings,
            },
        )?;
        emit(args, &receipt, i, prompts.len())?;
        if !receipt.summary.passes {
            worst = Exit::Divergence;
        }
    }
    Ok(worst)
}

fn emit(args: &CompareArgs, receipt: &Receipt, i: usize, n: usize) -> anyhow::Result<()> {
    if let Some(out) = &args.out {
        let path = if n > 1 { numbered(out, i) } else { out.clone() };
        receipt.write_atomic(&path)?;
    }
    if let Some(p) = &args.plot {
        let path = if n > 1 { numbered(p, i) } else { p.clone() };
        crate::compare::receipt::write_atomic(&path, plot::render_svg(receipt).as_bytes())?;
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
