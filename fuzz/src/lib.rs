//! Bodies of the fuzz targets, shared by the libFuzzer build (`fuzz_targets/*.rs`) and the
//! stable replay runner. Each target's body takes arbitrary bytes and returns `Some(n)` when the
//! input was accepted (`n` counts what it exercised) or `None` when it was rejected with an
//! error; a panic, an abort or a sanitizer report is a bug.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub mod gguf;
pub mod model;
pub mod receipt;
pub mod thresholds;
pub mod tokenizer;

/// A fuzz target: its body and the seed inputs it starts from.
pub struct Target {
    pub name: &'static str,
    pub check: fn(&[u8]) -> Option<usize>,
    /// Small synthetic inputs that reach what the committed files may not.
    pub seeds: fn() -> Vec<(String, Vec<u8>)>,
    /// What `Some(n)` counts, for the replay runner's summary.
    pub counts: &'static str,
}

/// Every target, by the name of its `fuzz_targets/` file.
pub const TARGETS: [Target; 5] = [
    Target {
        name: "gguf_parse",
        check: gguf::check_gguf,
        seeds: gguf::seeds,
        counts: "tensors decoded",
    },
    Target {
        name: "gguf_model",
        check: model::check_model,
        seeds: model::seeds,
        counts: "tokens evaluated",
    },
    Target {
        name: "tokenizer",
        check: tokenizer::check_tokenizer,
        seeds: tokenizer::seeds,
        counts: "tokens",
    },
    Target {
        name: "receipt",
        check: receipt::check_receipt,
        seeds: receipt::seeds,
        counts: "violations",
    },
    Target {
        name: "thresholds",
        check: thresholds::check_thresholds,
        seeds: thresholds::seeds,
        counts: "rules",
    },
];

/// Deterministic filler bytes (splitmix64).
pub(crate) fn filler(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// Write a target's seeds into `dir`.
pub fn write_seeds(t: &Target, dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let seeds = (t.seeds)();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(seeds.len())
}

/// The stable stand-in for libFuzzer: feed every file named on the command line (folders are
/// read one level deep; default `fuzz/corpus/<target>`) through `check`, report which input
/// panicked, and sum up. `--write-seeds DIR` writes [`seeds`] instead.
pub fn replay_main(target: &str) -> ExitCode {
    let Some(t) = TARGETS.iter().find(|t| t.name == target) else {
        eprintln!("{target}: not a fuzz target");
        return ExitCode::from(2);
    };
    let check = t.check;
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.first().is_some_and(|a| a == "--write-seeds") {
        let Some(dir) = args.get(1) else {
            eprintln!("{target}: --write-seeds needs a folder");
            return ExitCode::from(2);
        };
        return match write_seeds(t, dir) {
            Ok(n) => {
                println!("{target}: wrote {n} seed files into {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{target}: {}: {e}", dir.display());
                ExitCode::from(2)
            }
        };
    }
    if args.is_empty() {
        args.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target),
        );
    }
    let mut inputs = Vec::new();
    for a in &args {
        match std::fs::read_dir(a) {
            Ok(dir) => {
                let mut files: Vec<PathBuf> = dir
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_file())
                    .collect();
                files.sort();
                inputs.extend(files);
            }
            Err(_) if a.is_file() => inputs.push(a.clone()),
            Err(e) => {
                eprintln!("{target}: {}: {e}", a.display());
                return ExitCode::from(2);
            }
        }
    }
    if inputs.is_empty() {
        eprintln!(
            "{target}: no inputs in {:?} (run scripts/fuzz-seed.sh first)",
            args
        );
        return ExitCode::from(2);
    }
    let (mut parsed, mut decoded, mut panicked) = (0usize, 0usize, Vec::new());
    for path in &inputs {
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{target}: {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        match std::panic::catch_unwind(|| check(&data)) {
            Ok(Some(d)) => {
                parsed += 1;
                decoded += d;
            }
            Ok(None) => {}
            Err(_) => panicked.push(path.display().to_string()),
        }
    }
    println!(
        "{target}: replayed {} inputs: {parsed} accepted ({decoded} {}), {} panicked",
        inputs.len(),
        t.counts,
        panicked.len()
    );
    if panicked.is_empty() {
        ExitCode::SUCCESS
    } else {
        for p in &panicked {
            eprintln!("{target}: PANIC on {p}");
        }
        ExitCode::FAILURE
    }
}
