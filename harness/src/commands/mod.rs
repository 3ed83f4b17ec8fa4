//! One module per subcommand, each with its clap `Args` and its `run` (as cargo's and ruff's
//! CLIs are laid out). What several commands share lives in the library beside this folder
//! (oracle opening in [`crate::oracles`], inputs in [`crate::inputs`], output in
//! [`crate::output`]); a command never imports another command.

pub mod bench;
pub mod compare;
pub mod fixtures;
pub mod gate;
pub mod inspect;
pub mod oracle;
pub mod run;
pub mod selftest;
pub mod stats;
pub mod worker;
