//! The `harness` binary's library: the CLI ([`cli`]), exit codes ([`exit`]), `inspect`
//! ([`inspect`]) and the deterministic fixtures ([`fixtures`]).

pub mod cli;
pub mod compare;
pub mod engine_args;
pub mod error;
pub mod exit;
pub mod fixtures;
pub mod inspect;
pub mod run_cmd;

pub use error::{Error, Result};
