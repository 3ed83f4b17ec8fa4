//! The hidden `harness __oracle-worker` subcommand: the child side of oracle isolation. It
//! serves the pipe protocol of `xval_cpp_sys::protocol` on stdin/stdout with the built-in
//! oracle; llama.cpp's log goes to stderr, which the parent keeps for error reports.

use std::io::{BufReader, BufWriter};
use std::process::ExitCode;

use clap::Args;
use xval_cpp_sys::worker::{serve, FaultPlan};

/// Test-only: make the worker fail on purpose (`abort:evaluate`, `hang:load`, `exit=N:OP`), so
/// that tests can check that a crashing or hanging oracle becomes a structured error.
pub const FAULT_ENV: &str = "XVAL_ORACLE_WORKER_FAULT";

/// Arguments of the hidden worker subcommand (everything else arrives over the pipe).
#[derive(Debug, Args)]
pub struct WorkerArgs {}

/// Serve until the parent says shutdown or closes the pipe.
pub fn run(_args: &WorkerArgs) -> ExitCode {
    let fault = match std::env::var(FAULT_ENV) {
        Ok(spec) => match FaultPlan::parse(&spec) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("error: {FAULT_ENV}: {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => None,
    };
    xval_cpp_sys::echo_oracle_log(true);
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    match serve(
        &mut input,
        &mut output,
        &mut xval_cpp_sys::open_builtin,
        fault.as_ref(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: oracle worker: {e}");
            ExitCode::from(3)
        }
    }
}
