//! `harness inspect`: describe a GGUF file (header, type dialect, hyper-parameters, tokenizer,
//! tensor table); the rendering lives in [`crate::inspect`].

use std::path::PathBuf;

use clap::Args;
use xval_engine::gguf::GgufFile;

use crate::exit::Exit;
use crate::inspect;
use crate::output::emit;

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

pub fn run(args: &InspectArgs) -> anyhow::Result<Exit> {
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
