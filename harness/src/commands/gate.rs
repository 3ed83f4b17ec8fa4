//! `harness gate`: re-judge receipts against their own thresholds or a given file; the
//! judging lives in [`crate::compare::gate`].

use std::path::PathBuf;

use clap::Args;

use crate::compare::gate;
use crate::exit::Exit;
use crate::output::emit;

#[derive(Debug, Args)]
pub struct GateArgs {
    /// Receipt files (JSON, as `harness compare` writes them).
    #[arg(required = true, value_name = "RECEIPT")]
    pub receipts: Vec<PathBuf>,
    /// Thresholds TOML to judge by (format: ci/thresholds.toml) [default: each receipt's own].
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
}

pub fn run(args: &GateArgs) -> anyhow::Result<Exit> {
    let results = gate::gate(&args.receipts, args.thresholds.as_deref())?;
    let text = gate::render(&results);
    emit(|out| out.write_all(text.as_bytes()))?;
    Ok(if gate::all_pass(&results) {
        Exit::Success
    } else {
        Exit::Divergence
    })
}
