//! The `harness` binary's library.
//!
//! - [`cli`]: the command line and its dispatch; [`commands`]: one module per subcommand.
//! - [`compare`]: judging a comparison (metrics, alignment, thresholds, verdicts, receipts, the
//!   gate, reports) from plain data.
//! - [`sides`]: running the engine and an oracle on the same ids; [`oracles`]: opening them;
//!   [`inputs`]: prompts and token ids; [`engine_args`]: the engine's shared flags.
//! - [`fixtures`]: the deterministic test models; [`inspect`]: describing a GGUF file.
//! - [`exit`]: exit codes; [`output`]: stdout and atomic files; [`timefmt`]: timestamps.

pub mod bench;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod digest_cache;
pub mod engine_args;
pub mod error;
pub mod exit;
pub mod fixtures;
pub mod inputs;
pub mod inspect;
pub mod oracles;
pub mod output;
pub mod selftest;
pub mod session;
pub mod sides;
pub mod stats;
pub mod timefmt;

pub use error::{Error, Result};
