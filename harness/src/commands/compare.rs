//! `harness compare`: run the engine and an oracle on the same token ids, compare every tap and
//! the logits, follow both through greedy decode steps, write a receipt, print a report.
//!
//! The flow: [`inputs`] (prompts or ids), [`prepare`] (model, tokenizer, oracle, engine,
//! thresholds), then per input the oracle and the engine ([`crate::sides`]), with `--kernel all`
//! the engine again per other kernel set ([`crate::compare::kernel_sets`]), and
//! [`crate::compare::compare_core`] (the judgement), and [`emit`] (receipt, plot, HTML report,
//! text report).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, ValueEnum};
use xval_engine::model::Fault;
use xval_engine::quant::kernels::Kernel;
use xval_engine::taps::TapFilter;

use crate::compare::kernel_sets::{KernelParity, KernelSetRecord};
use crate::compare::receipt::{InputRecord, Shard};
use crate::compare::{compare_core, gate, html, plot, report, CompareSettings, Receipt, Side};
use crate::engine_args::{EngineArgs, KernelArg, KvArg};
use crate::error::Error;
use crate::exit::Exit;
use crate::inputs::{parse_token_ids, read_prompts, DEFAULT_PROMPT};
use crate::session::{Session, SessionRequest};
use crate::sides::{run_engine, run_oracle, EngineRun, RunPlan};

/// Where the engine runs (`cpu`), or, as older spellings of `--kernel`, which kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// The CPU, with the kernel set `--kernel` picks.
    Cpu,
    /// The scalar reference kernels (`--kernel scalar`).
    Scalar,
    /// The best SIMD kernel set this CPU runs (`--kernel auto`; refused without one).
    Simd,
    /// CUDA kernels: not in this version.
    Cuda,
    /// Scalar and every SIMD set this CPU runs, in one receipt (`--kernel all`).
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
    /// Run only shard K of N of the --prompts list (prompts i with i % N == K - 1), so a CI
    /// matrix can share the work; `harness gate` checks that the shards' receipts together
    /// cover the whole list.
    #[arg(long, value_name = "K/N", value_parser = parse_shard, requires = "prompts")]
    pub shard: Option<Shard>,
    /// The oracle: auto, builtin (mainline llama.cpp built in), golden (recorded outputs),
    /// ggml-graph (our BitNet graph from ggml ops) or dir:PATH (your llama.cpp/bitnet.cpp build
    /// tree; `dir` alone reads $BITNET_CPP_DIR). auto: the tree in $BITNET_CPP_DIR when set,
    /// else builtin for `bitnet`, ggml-graph for `bitnet-b1.58`, else golden recordings.
    #[arg(long, default_value = "auto")]
    pub oracle: String,
    /// Where the engine runs; `scalar`, `simd` and `all` are other spellings of `--kernel
    /// scalar`, `auto` (refused where this CPU has no SIMD set) and `all`.
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Taps to capture and compare (glob patterns, comma separated: `all`, `l_out-*`, ...).
    #[arg(long, default_value = "all")]
    pub taps: String,
    /// Greedy decode steps through both KV caches after the prompt.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Write the receipt (JSON) here; with --prompts, FILE gets `.N` (the prompt's index in
    /// the whole list) before its extension.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// What to print.
    #[arg(long, value_enum, default_value_t = FormatArg::Table)]
    pub format: FormatArg,
    /// Write an SVG plot of per-layer agreement (one line per metric, log scale).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Write a self-contained HTML report (verdict, first divergence and diagnosis, heatmaps
    /// of metric/limit per tap, layer and position, logit and decode charts; no network
    /// access needed to view it). With --prompts, FILE gets `.N` as --out does.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
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
    /// Inject a fault into the engine (repeatable), to see what the comparison catches:
    /// `scale:TENSOR:FACTOR` (e.g. `scale:blk.1.attn_q.weight:1.01`, a 1% scale error in one
    /// projection) or a self-test fault, optionally in one layer (`kv-one-short`,
    /// `layernorm@2`; `harness selftest --list` describes them). The receipt lists the faults in
    /// its engine identity.
    #[arg(long, value_name = "SPEC", value_parser = Fault::parse)]
    pub fault: Vec<Fault>,
    /// Where golden recordings live [default: the repository's fixtures/].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
}

/// One thing to compare: a prompt both sides tokenize, or ids given with `--tokens`.
enum Input {
    Prompt(String),
    Ids(Vec<u32>),
}

/// The inputs of this run: its share of the list, and the list's identity.
struct Inputs {
    /// (index in the whole list, input), this shard's share only.
    items: Vec<(usize, Input)>,
    total: usize,
    sha256: String,
    shard: Option<Shard>,
}

impl Inputs {
    fn record(&self, index: usize, input: &Input) -> InputRecord {
        InputRecord {
            prompt: match input {
                Input::Prompt(p) => Some(p.clone()),
                Input::Ids(_) => None,
            },
            prompt_index: index,
            prompts_total: self.total,
            prompts_sha256: self.sha256.clone(),
            shard: self.shard,
        }
    }

    /// Every prompt of a recording, replacing the default prompt.
    fn recorded(prompts: Vec<String>) -> Inputs {
        let sha = sha256_hex(prompts.join("\n").as_bytes());
        Inputs::of_list(prompts.into_iter().map(Input::Prompt).collect(), sha, None)
    }

    fn of_list(list: Vec<Input>, sha256: String, shard: Option<Shard>) -> Inputs {
        let total = list.len();
        let items = list
            .into_iter()
            .enumerate()
            .filter(|(i, _)| shard.is_none_or(|s| i % s.of == s.index - 1))
            .collect();
        Inputs {
            items,
            total,
            sha256,
            shard,
        }
    }
}

/// `K/N` (`--shard`): 1 <= K <= N.
fn parse_shard(s: &str) -> Result<Shard, String> {
    let bad = || format!("expected K/N with 1 <= K <= N, got '{s}'");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (index, of): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if index == 0 || of == 0 || index > of {
        return Err(bad());
    }
    Ok(Shard { index, of })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `--prompt`, `--tokens` or `--prompts` ask for (the default prompt when none), this
/// shard's share of it.
fn inputs(args: &CompareArgs) -> anyhow::Result<Inputs> {
    Ok(match (&args.prompt, &args.tokens, &args.prompts) {
        (Some(p), _, _) => Inputs::of_list(
            vec![Input::Prompt(p.clone())],
            sha256_hex(p.as_bytes()),
            None,
        ),
        (_, Some(t), _) => Inputs::of_list(
            vec![Input::Ids(parse_token_ids(t)?)],
            sha256_hex(t.as_bytes()),
            None,
        ),
        (_, _, Some(f)) => {
            let bytes = std::fs::read(f)
                .map_err(|e| Error::Invalid(format!("--prompts {}: {e}", f.display())))?;
            let list = read_prompts(f)?.into_iter().map(Input::Prompt).collect();
            Inputs::of_list(list, sha256_hex(&bytes), args.shard)
        }
        _ => Inputs::of_list(
            vec![Input::Prompt(DEFAULT_PROMPT.to_string())],
            sha256_hex(DEFAULT_PROMPT.as_bytes()),
            None,
        ),
    })
}

/// The session of a comparison: model, engine, oracle, thresholds.
fn prepare(args: &CompareArgs, engine: &EngineArgs, inputs: &Inputs) -> anyhow::Result<Session> {
    Session::open(
        &SessionRequest {
            model: &args.model,
            engine,
            oracle: &args.oracle,
            thresholds: args.thresholds.as_deref(),
            oracle_threads: args.oracle_threads,
            oracle_kv_type: args.oracle_kv_type,
            timeout: args.timeout,
            oracle_reference_kernels: args.oracle_reference_kernels,
            faults: args.fault.clone(),
            fixtures: args.fixtures.as_deref(),
            steps: args.steps,
        },
        |tokenizer| {
            Ok(inputs
                .items
                .iter()
                .map(|(_, i)| match i {
                    Input::Prompt(p) => tokenizer.encode_complete(p, true, true).map(|v| v.len()),
                    Input::Ids(ids) => Ok(ids.len()),
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .max()
                .unwrap_or(0))
        },
    )
}

/// The engine options with `--backend`'s kernel spelling applied: `scalar`, `simd` and `all`
/// set the kernel unless `--kernel` names another set (a contradiction, refused); `cuda` is
/// refused.
fn engine_args(args: &CompareArgs) -> anyhow::Result<EngineArgs> {
    let mut engine = args.engine.clone();
    let (name, kernel) = match args.backend {
        BackendArg::Cpu => return Ok(engine),
        BackendArg::Cuda => {
            return Err(Error::Invalid(
                "--backend cuda: this version of xval has no CUDA kernels".into(),
            )
            .into())
        }
        BackendArg::Scalar => ("scalar", KernelArg::Scalar),
        BackendArg::All => ("all", KernelArg::All),
        BackendArg::Simd => {
            if Kernel::detect() == Kernel::Scalar {
                return Err(Error::Invalid(
                    "--backend simd: this CPU runs no SIMD kernel set (avx2, avx512, neon)".into(),
                )
                .into());
            }
            ("simd", KernelArg::Auto)
        }
    };
    if engine.kernel != KernelArg::Auto && engine.kernel != kernel {
        return Err(Error::Invalid(format!(
            "--backend {name} contradicts --kernel {}",
            engine.kernel.name()
        ))
        .into());
    }
    engine.kernel = kernel;
    Ok(engine)
}

pub fn run(args: &CompareArgs) -> anyhow::Result<Exit> {
    let engine_args = engine_args(args)?;
    let mut inputs = inputs(args)?;
    let mut p = prepare(args, &engine_args, &inputs)?;
    // Recordings answer only for what was recorded: without an explicit input, compare them all.
    if let (Some(recorded), None, None, None) = (
        p.oracle.oracle.recorded_prompts(),
        &args.prompt,
        &args.tokens,
        &args.prompts,
    ) {
        inputs = Inputs::recorded(recorded);
    }
    let mut worst = Exit::Success;
    for (i, input) in &inputs.items {
        let receipt = compare_one(
            args,
            engine_args.kernel,
            &mut p,
            input,
            inputs.record(*i, input),
        )?;
        emit(args, &receipt, *i, inputs.total)?;
        if !receipt.summary.passes {
            worst = Exit::Divergence;
        }
    }
    Ok(worst)
}

/// Both sides on one input, judged.
fn compare_one(
    args: &CompareArgs,
    kernel: KernelArg,
    p: &mut Session,
    input: &Input,
    record: InputRecord,
) -> anyhow::Result<Receipt> {
    let (engine_ids, oracle_ids) = match input {
        Input::Prompt(text) => (
            p.tokenizer.encode_complete(text, true, true)?,
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
    let steps = p.decode_steps(&oracle_ids, args.steps);
    let taps = TapFilter::parse(&args.taps);
    let plan = RunPlan {
        ids: &oracle_ids,
        steps,
        taps: &taps,
        progress: std::io::stderr().is_terminal(),
    };
    let oracle = run_oracle(p.oracle.oracle.get(), &plan, &mut timings)?;
    let engine = run_engine(&p.engine, &oracle, &taps, &mut timings)?;
    // `--kernel all`: every other set on the same oracle run, then each judged against the one
    // oracle side (built once, not copied per set) with the scalar comparison's settings.
    let mut others = Vec::new();
    for kernel in kernel.others() {
        let mut own = BTreeMap::new();
        let run = run_engine(&p.engine.on_kernel(kernel)?, &oracle, &taps, &mut own)?;
        for (phase, s) in own {
            timings.insert(format!("{phase}[{kernel}]"), s);
        }
        others.push((kernel, run));
    }
    let settings = p.settings(&p.engine_identity, record, args.steps, timings);
    let oracle = oracle.into_side(oracle_ids);
    let sets = others
        .into_iter()
        .map(|(kernel, run)| kernel_set(kernel, run, &engine, &engine_ids, &oracle, &settings))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut receipt = compare_core(&engine.into_side(engine_ids), &oracle, &settings)?;
    if !sets.is_empty() {
        receipt.engine.kernels.extend(sets.iter().map(|s| s.kernel));
        receipt.kernel_sets = sets;
        receipt.summary.passes = gate::violations(&receipt, &receipt.thresholds).is_empty();
    }
    Ok(receipt)
}

/// `--kernel all`: one other set's engine `run` on the oracle's ids, compared with the oracle
/// by the same limits (its own noise twin and replays) and with the `scalar` engine's values.
fn kernel_set(
    kernel: Kernel,
    run: EngineRun,
    scalar: &EngineRun,
    engine_ids: &[u32],
    oracle: &Side,
    settings: &CompareSettings,
) -> anyhow::Result<KernelSetRecord> {
    let vs_scalar = KernelParity::of((&scalar.prefill, &scalar.steps), (&run.prefill, &run.steps));
    let r = compare_core(&run.into_side(engine_ids.to_vec()), oracle, settings)?;
    let violations = gate::violations(&r, &r.thresholds).len();
    Ok(KernelSetRecord {
        kernel,
        passes: r.summary.passes,
        verdict: r.summary.verdict,
        first_divergence: r
            .first_divergence
            .map(|d| format!("tap {} at position {}", d.tap, d.position)),
        violations,
        vs_scalar,
    })
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
    if let Some(p) = &args.report {
        let path = if n > 1 { numbered(p, i) } else { p.clone() };
        crate::output::write_atomic(&path, html::render_html(receipt).as_bytes())?;
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
