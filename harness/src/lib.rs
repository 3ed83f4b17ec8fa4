//! The `harness` binary's library: the CLI ([`cli`]), exit codes ([`exit`]), `inspect`
//! ([`inspect`]), the deterministic fixtures ([`fixtures`]), `run` ([`run_cmd`]), `compare`
//! ([`compare`], [`compare_cmd`]) and the oracle commands
//! ([`oracle_cmd`], the hidden worker [`oracle_worker`]).

pub mod cli;
pub mod compare;
pub mod compare_cmd;
pub mod engine_args;
pub mod error;
pub mod exit;
pub mod fixtures;
pub mod inspect;
pub mod oracle_cmd;
pub mod oracle_worker;
pub mod run_cmd;

pub use error::{Error, Result};
