//! The `harness` command line: clap derive types (their doc comments are the help text) and
//! [`run`], which dispatches to the library and returns the exit code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use xval_engine::gguf::GgufFile;

use crate::exit::Exit;
use crate::fixtures::{self, manifest, ModelSpec, Vocab, WeightFormat};
use crate::inspect;

const EXIT_CODES: &str = "\
Exit codes:
  0  success (for comparisons: everything within the thresholds)
  1  divergence between the engine and the oracle
  2  bad input: unreadable or malformed model, bad arguments, missing file
  3  oracle failure";

/// Layer-by-layer cross-validation of BitNet b1.58 inference engines.
#[derive(Debug, Parser)]
#[command(name = "harness", version, after_help = EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a GGUF file: header, type dialect, hyper-parameters, tokenizer, tensor table.
    ///
    /// The first thing to run on a file you do not trust: a malformed file is reported with
    /// the field, tensor and byte offset where reading failed (exit 2).
    Inspect(InspectArgs),
    /// Generate greedily from a prompt with the xval engine; prints the text and the prefill
    /// and decode speeds (`--json`: tokens, text, profile, kernel, threads, speeds and the
    /// last prompt position's logits).
    Run(crate::run_cmd::RunArgs),
    /// Re-judge comparison receipts against thresholds: exit 0 when every receipt passes, 1
    /// with a table of violations, 2 when a receipt or the thresholds file cannot be read.
    ///
    /// Judges the metrics each receipt recorded with the same verdict rules as the comparison,
    /// by the receipt's own thresholds or, with --thresholds, by that file's rules for the
    /// receipt's weight format, profile and backend.
    Gate(GateArgs),
    /// Build and check the deterministic test models.
    #[command(subcommand)]
    Fixtures(FixturesCommand),
    /// Run only the oracle on a model (in its isolated worker process): its identity, the
    /// tokens, the last position's logits and the captured taps (`--json`: one object with
    /// oracle, model, tokens, n_vocab, logits_last, taps).
    Oracle(crate::oracle_cmd::OracleArgs),
    /// Compare the engine with an oracle on the same token ids: every tap of every layer, the
    /// logits, greedy decode steps through both KV caches. Writes a receipt (`--out`), prints a
    /// per-layer table (or markdown / the JSON receipt), exits 0 when everything is within the
    /// thresholds, 1 on divergence, 2 on bad input, 3 when the oracle fails.
    Compare(crate::compare_cmd::CompareArgs),
    /// Internal: serve an oracle over stdin/stdout for an isolated parent process.
    #[command(name = "__oracle-worker", hide = true)]
    OracleWorker(crate::oracle_worker::WorkerArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The GGUF file.
    pub model: PathBuf,
    /// Print the stable JSON form (keys: architecture, metadata, tensors, version, alignment,
    /// data_offset, type_dialect, tokenizer).
    #[arg(long)]
    pub json: bool,
    /// Print metadata arrays in full instead of summarising those longer than 64 items.
    #[arg(long)]
    pub full_arrays: bool,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// Receipt files (JSON, as `harness compare` writes them).
    #[arg(required = true, value_name = "RECEIPT")]
    pub receipts: Vec<PathBuf>,
    /// Thresholds TOML to judge by (format: ci/thresholds.toml) [default: each receipt's own].
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
}

/// Where the repository is, for commands that read or write its `fixtures/` directory.
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Repository root [default: the first directory at or above the current one with a
    /// Cargo.toml and a fixtures/ directory].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl RootArgs {
    /// The repository's `fixtures/` directory.
    fn fixtures_dir(&self) -> anyhow::Result<PathBuf> {
        let root = match &self.root {
            Some(r) => r.clone(),
            None => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                fixtures::find_repo_root(&cwd)?
            }
        };
        let dir = root.join(fixtures::FIXTURES_DIR);
        if !dir.is_dir() {
            anyhow::bail!("{} is not a directory (wrong --root?)", dir.display());
        }
        Ok(dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum FixturesCommand {
    /// Rebuild every committed fixture byte for byte and rewrite its MANIFEST.
    Regen {
        /// Output directory [default: the repository's fixtures/].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Check every file listed in MANIFEST against its sha256 (exit 2 on any mismatch or
    /// missing file, listing them all).
    Verify {
        /// Directory holding MANIFEST [default: the repository's fixtures/].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Write a random ternary model with the official BitNet b1.58 2B-4T shapes (for
    /// benchmarks; about 1.2 GB at 30 layers, streamed to disk).
    Synth {
        /// Which official shape.
        #[arg(long, value_enum)]
        shape: SynthShape,
        /// Projection format.
        #[arg(long, value_enum)]
        format: SynthFormat,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Number of layers [default: the shape's, 30].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        layers: Option<u32>,
        /// Seed of the random weights.
        #[arg(long, default_value_t = fixtures::model::SEED_SYNTH)]
        seed: u64,
        /// Architecture written to the file (`bitnet` lets mainline llama.cpp load a TQ2_0
        /// model; its FFN is SiLU instead of ReLU^2).
        #[arg(long, value_enum, default_value = "bitnet-b1.58")]
        arch: fixtures::Arch,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Write the one-layer model with the full LLaMA-3 vocabulary (128256 tokens), built from
    /// fixtures/tokenizer/llama3/tokenizer.json.gz. Not committed (65 MB); tests build it.
    Llama3 {
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Pre-tokenizer: `llama-bpe` writes tokenizer.ggml.pre; `default` leaves the key out,
        /// as the official 2B-4T file does (llama.cpp then uses its default regexes).
        #[arg(long, value_enum, default_value = "llama-bpe")]
        pre: PreTokenizer,
        /// Projection format: i2_s gives arch bitnet-b1.58, tq2_0 gives arch bitnet.
        #[arg(long, value_enum, default_value = "i2_s")]
        format: SynthFormat,
        /// Seed of the random weights.
        #[arg(long, default_value_t = fixtures::model::SEED_LLAMA3)]
        seed: u64,
        #[command(flatten)]
        root: RootArgs,
    },
}

/// The shapes `fixtures synth` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SynthShape {
    /// BitNet b1.58 2B-4T: n_embd 2560, n_ff 6912, 30 layers, 20/5 heads, vocab 128256.
    #[value(name = "2b-4t")]
    B2_4t,
}

/// Projection formats of the generated big models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SynthFormat {
    /// bitnet.cpp's I2_S (official 128-weight blocks, per-tensor scale).
    #[value(name = "i2_s")]
    I2S,
    /// Mainline ggml's TQ2_0 (per-256-block f16 scale).
    #[value(name = "tq2_0")]
    Tq2_0,
}

impl From<SynthFormat> for WeightFormat {
    fn from(f: SynthFormat) -> Self {
        match f {
            SynthFormat::I2S => WeightFormat::I2S,
            SynthFormat::Tq2_0 => WeightFormat::Tq2_0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreTokenizer {
    /// `tokenizer.ggml.pre = "llama-bpe"` (LLaMA-3's split regex).
    LlamaBpe,
    /// No `tokenizer.ggml.pre` key: llama.cpp's `default` pre-tokenizer.
    Default,
}

impl PreTokenizer {
    fn key(self) -> Option<&'static str> {
        match self {
            PreTokenizer::LlamaBpe => Some("llama-bpe"),
            PreTokenizer::Default => None,
        }
    }
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Inspect(args) => inspect_cmd(&args),
        Command::Run(args) => crate::run_cmd::run(&args).map(|()| Exit::Success),
        Command::Gate(args) => gate_cmd(&args),
        Command::Fixtures(cmd) => fixtures_cmd(cmd),
        Command::Oracle(args) => crate::oracle_cmd::run(&args).map(|()| Exit::Success),
        Command::Compare(args) => crate::compare_cmd::run(&args),
        Command::OracleWorker(args) => Ok(crate::oracle_worker::run(&args)),
    }
}

/// Write to stdout; a closed pipe (`harness inspect m.gguf | head`) ends output quietly.
fn emit(f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match f(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write to stdout"),
    }
}

fn inspect_cmd(args: &InspectArgs) -> anyhow::Result<Exit> {
    let file = GgufFile::open(&args.model)?;
    if args.json {
        let json = inspect::to_json(&file, args.full_arrays);
        emit(|out| {
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)
        })?;
    } else {
        emit(|out| inspect::render_text(&file, args.full_arrays, out))?;
    }
    Ok(Exit::Success)
}

fn gate_cmd(args: &GateArgs) -> anyhow::Result<Exit> {
    use crate::compare::gate;
    let results = gate::gate(&args.receipts, args.thresholds.as_deref())?;
    let text = gate::render(&results);
    emit(|out| out.write_all(text.as_bytes()))?;
    Ok(if gate::all_pass(&results) {
        Exit::Success
    } else {
        Exit::Divergence
    })
}

fn fixtures_cmd(cmd: FixturesCommand) -> anyhow::Result<Exit> {
    match cmd {
        FixturesCommand::Regen { out, root } => {
            let source = root.fixtures_dir()?;
            let out = out.unwrap_or_else(|| source.clone());
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let start = Instant::now();
            let files = fixtures::regen(&fixtures::RegenContext {
                source: &source,
                out: &out,
            })?;
            for f in &files {
                eprintln!("wrote {}", out.join(f).display());
            }
            eprintln!(
                "wrote {} ({} files) in {:.2} s",
                out.join(manifest::MANIFEST).display(),
                files.len(),
                start.elapsed().as_secs_f64()
            );
        }
        FixturesCommand::Verify { dir, root } => {
            let dir = match dir {
                Some(d) => d,
                None => root.fixtures_dir()?,
            };
            let n = manifest::verify(&dir)?;
            eprintln!("{n} files match {}", dir.join(manifest::MANIFEST).display());
        }
        FixturesCommand::Synth {
            shape: SynthShape::B2_4t,
            format,
            out,
            layers,
            seed,
            arch,
            root,
        } => {
            let vocab = load_llama3(&root)?;
            let mut spec = ModelSpec::official_2b4t(format.into());
            spec.n_layer = layers.unwrap_or(spec.n_layer);
            spec.seed = seed;
            spec.arch = arch;
            let start = Instant::now();
            fixtures::write_model_streaming(&spec, &vocab, &out)?;
            report_written(&out, start)?;
        }
        FixturesCommand::Llama3 {
            out,
            pre,
            format,
            seed,
            root,
        } => {
            let vocab = load_llama3(&root)?;
            let spec = ModelSpec {
                seed,
                ..ModelSpec::llama3(format.into(), pre.key())
            };
            let start = Instant::now();
            fixtures::build_model(&spec, &vocab)?.write_file(&out)?;
            report_written(&out, start)?;
        }
    }
    Ok(Exit::Success)
}

fn load_llama3(root: &RootArgs) -> anyhow::Result<Vocab> {
    let path = root.fixtures_dir()?.join(fixtures::vocab::LLAMA3_TOKENIZER);
    Ok(Vocab::llama3(&path)?)
}

fn report_written(path: &Path, start: Instant) -> anyhow::Result<()> {
    let secs = start.elapsed().as_secs_f64();
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    eprintln!("wrote {} ({len} bytes) in {secs:.2} s", path.display());
    Ok(())
}
