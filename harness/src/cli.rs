//! The `harness` command line: the clap types of the top level (their doc comments are the help
//! text) and [`run`], which hands each subcommand to its module in [`crate::commands`] and
//! returns the exit code.

use clap::{Parser, Subcommand};

use crate::commands::{
    bench, compare, fixtures, gate, inspect, oracle, run as run_cmd, selftest, stats, worker,
};
use crate::exit::Exit;

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
    Inspect(inspect::InspectArgs),
    /// Generate greedily from a prompt with the xval engine; prints the text and the prefill
    /// and decode speeds (`--json`: tokens, text, profile, kernel, threads, speeds and the
    /// last prompt position's logits).
    Run(run_cmd::RunArgs),
    /// Activation statistics of a model on prompts: per layer the residual stream's largest
    /// feature over its RMS and the attention entropy; the logits' top-1 margins (`--json`:
    /// model, prompts, tokens, layers, margins). What tells a trained model from a random one.
    Stats(stats::StatsArgs),
    /// Re-judge comparison receipts against thresholds: exit 0 when every receipt passes, 1
    /// with a table of violations, 2 when a receipt or the thresholds file cannot be read.
    ///
    /// Judges the metrics each receipt recorded with the same verdict rules as the comparison,
    /// by the receipt's own thresholds or, with --thresholds, by that file's rules for the
    /// receipt's weight format, profile and backend.
    Gate(gate::GateArgs),
    /// Build and check the deterministic test models.
    #[command(subcommand)]
    Fixtures(fixtures::FixturesCommand),
    /// Run only the oracle on a model (in its isolated worker process): its identity, the
    /// tokens, the last position's logits and the captured taps (`--json`: one object with
    /// oracle, model, tokens, n_vocab, logits_last, taps).
    Oracle(oracle::OracleArgs),
    /// Compare the engine with an oracle on the same token ids: every tap of every layer, the
    /// logits, greedy decode steps through both KV caches. Writes a receipt (`--out`), prints a
    /// per-layer table (or markdown / the JSON receipt), exits 0 when everything is within the
    /// thresholds, 1 on divergence, 2 on bad input, 3 when the oracle fails.
    Compare(compare::CompareArgs),
    /// Inject realistic engine faults one at a time, compare each with the oracle, and report
    /// what the comparison caught: detected, first divergence against where the fault is,
    /// diagnosis (`--json`: faults, detected_rate, localized_rate, diagnosis_rate,
    /// false_alarms). Exits 1 below the goals (100% detected, 95% localized, 80% diagnosed,
    /// no false alarm).
    Selftest(selftest::SelftestArgs),
    /// Prefill and decode speed of the engine and, in the same run on the same ids, of an
    /// oracle (`--vs`, default the built-in llama.cpp); their ratio; decode's effective
    /// bandwidth against the machine's read bandwidth, measured by the command (`--json`:
    /// engine, peer, ratio, bandwidth_gb_s, decode_gb_s).
    Bench(bench::BenchArgs),
    /// Internal: serve an oracle over stdin/stdout for an isolated parent process.
    #[command(name = "__oracle-worker", hide = true)]
    OracleWorker(worker::WorkerArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<Exit> {
    match cli.command {
        Command::Inspect(args) => inspect::run(&args),
        Command::Run(args) => run_cmd::run(&args),
        Command::Stats(args) => stats::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Gate(args) => gate::run(&args),
        Command::Fixtures(cmd) => fixtures::run(cmd),
        Command::Oracle(args) => oracle::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Selftest(args) => selftest::run(&args),
        Command::OracleWorker(args) => Ok(worker::run(&args)),
    }
}
