//! The hidden `harness __oracle-worker` subcommand: the child side of oracle isolation. It
//! serves the pipe protocol of `xval_cpp_sys::protocol` on stdin/stdout with the built-in
//! oracle the parent names (built-in, ggml-graph or external); llama.cpp's log goes to stderr, which the parent keeps for error reports.

use clap::Args;
use std::io::{BufReader, BufWriter};
use xval_cpp_sys::worker::{serve, FaultPlan};

use crate::exit::Exit;

/// Test-only: make the worker fail on purpose (`abort:evaluate`, `hang:load`, `exit=N:OP`), so
/// that tests can check that a crashing or hanging oracle becomes a structured error.
pub const FAULT_ENV: &str = "XVAL_ORACLE_WORKER_FAULT";

/// Arguments of the hidden worker subcommand (everything else arrives over the pipe).
#[derive(Debug, Args)]
pub struct WorkerArgs {}

/// Serve until the parent says shutdown or closes the pipe.
pub fn run(_args: &WorkerArgs) -> Exit {
    let fault = match std::env::var(FAULT_ENV) {
        Ok(spec) => match FaultPlan::parse(&spec) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("error: {FAULT_ENV}: {e}");
                return Exit::BadInput;
            }
        },
        Err(_) => None,
    };
    // A worker whose harness was killed must not keep computing.
    #[cfg(unix)]
    xval_cpp_sys::worker::exit_with_parent();
    xval_cpp_sys::echo_oracle_log(true);
    let mut input = BufReader::new(std::io::stdin().lock());
    let mut output = BufWriter::new(std::io::stdout().lock());
    match serve(
        &mut input,
        &mut output,
        &mut xval_cpp_sys::open,
        fault.as_ref(),
    ) {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("error: oracle worker: {e}");
            Exit::OracleFailure
        }
    }
}
