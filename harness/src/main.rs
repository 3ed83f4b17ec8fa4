//! Interim entry point carrying the oracle subcommands until they join the full CLI.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xval_harness::{oracle_cmd, oracle_worker};

/// xval: layer-by-layer cross-validation of BitNet inference engines.
#[derive(Parser)]
#[command(name = "harness", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Oracle(oracle_cmd::OracleArgs),
    /// Internal: serve an oracle over stdin/stdout for the isolated parent process.
    #[command(name = "__oracle-worker", hide = true)]
    OracleWorker(oracle_worker::WorkerArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Oracle(args) => match oracle_cmd::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(oracle_cmd::exit_code(&e))
            }
        },
        Cmd::OracleWorker(args) => oracle_worker::run(&args),
    }
}
