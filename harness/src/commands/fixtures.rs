//! `harness fixtures`: rebuild, verify and synthesize the test models; the generators live in
//! [`crate::fixtures`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::exit::Exit;
use crate::fixtures::{self, manifest, EmbeddingFormat, ModelSpec, Vocab, WeightFormat};

/// Where the repository is, for commands that read or write its `fixtures/` directory.
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Repository root [default: the first directory at or above the current one with a
    /// Cargo.toml and a fixtures/ directory].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

impl RootArgs {
    /// The repository's `fixtures/` directory.
    fn fixtures_dir(&self) -> anyhow::Result<PathBuf> {
        let root = match &self.root {
            Some(r) => r.clone(),
            None => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                fixtures::find_repo_root(&cwd)?
            }
        };
        let dir = root.join(fixtures::FIXTURES_DIR);
        if !dir.is_dir() {
            anyhow::bail!("{} is not a directory (wrong --root?)", dir.display());
        }
        Ok(dir)
    }
}

#[derive(Debug, Subcommand)]
pub enum FixturesCommand {
    /// Rebuild every committed fixture byte for byte and rewrite its MANIFEST.
    Regen {
        /// Output directory [default: the repository's fixtures/].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// A built bitnet.cpp tree to re-record the `bitnet` I2_S fixture's golden recording
        /// with [default: $BITNET_CPP_DIR; without either, that recording is kept as
        /// committed]. scripts/bitnet-cpp.sh builds the bundled tree.
        #[arg(long, value_name = "DIR", env = "BITNET_CPP_DIR")]
        bitnet_cpp: Option<PathBuf>,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Check every file listed in MANIFEST against its sha256 (exit 2 on any mismatch or
    /// missing file, listing them all).
    Verify {
        /// Directory holding MANIFEST [default: the repository's fixtures/].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Write a random ternary model with the official BitNet b1.58 2B-4T shapes (for
    /// benchmarks; about 1.2 GB at 30 layers, streamed to disk).
    Synth {
        /// Which official shape.
        #[arg(long, value_enum)]
        shape: SynthShape,
        /// Projection format.
        #[arg(long, value_enum)]
        format: SynthFormat,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Number of layers [default: the shape's, 30].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        layers: Option<u32>,
        /// Seed of the random weights.
        #[arg(long, default_value_t = fixtures::model::SEED_SYNTH)]
        seed: u64,
        /// Architecture written to the file (`bitnet` lets mainline llama.cpp load a TQ2_0
        /// model; its FFN is SiLU instead of ReLU^2).
        #[arg(long, value_enum, default_value = "bitnet-b1.58")]
        arch: fixtures::Arch,
        #[command(flatten)]
        root: RootArgs,
    },
    /// Write a small random model of any shape with the exact generator of the committed
    /// fixtures (for trying the comparison on models the project did not tune on).
    Gen(GenArgs),
    /// Write a model trained by scripts/train-tiny-bitnet.py (its export directory) as GGUF:
    /// `relu2` models as `bitnet-b1.58`, `silu` ones as `bitnet`.
    Import {
        /// The export directory (config.json, weights.json, weights.bin).
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// Projection format: i2_s (the official layout, per-tensor scale), tq2_0 or tq1_0
        /// (the scale as every block's f16 d).
        #[arg(long, value_enum)]
        format: SynthFormat,
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Write the one-layer model with the full LLaMA-3 vocabulary (128256 tokens), built from
    /// fixtures/tokenizer/llama3/tokenizer.json.gz. Not committed (65 MB); tests build it.
    Llama3 {
        /// Output file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Pre-tokenizer: `llama-bpe` writes tokenizer.ggml.pre; `default` leaves the key out,
        /// as the official 2B-4T file does (llama.cpp then uses its default regexes).
        #[arg(long, value_enum, default_value = "llama-bpe")]
        pre: PreTokenizer,
        /// Projection format: i2_s gives arch bitnet-b1.58, tq2_0 and tq1_0 give arch bitnet.
        #[arg(long, value_enum, default_value = "i2_s")]
        format: SynthFormat,
        /// Seed of the random weights.
        #[arg(long, default_value_t = fixtures::model::SEED_LLAMA3)]
        seed: u64,
        #[command(flatten)]
        root: RootArgs,
    },
}

/// `harness fixtures gen`: every shape parameter of a synthetic model.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Output file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Architecture (`bitnet`: SiLU FFN; `bitnet-b1.58`: ReLU^2).
    #[arg(long, value_enum, default_value = "bitnet")]
    pub arch: fixtures::Arch,
    /// Projection format.
    #[arg(long, value_enum, default_value = "tq2_0")]
    pub format: WeightFormat,
    /// Layers.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub layers: u32,
    /// Embedding width (a multiple of 256, or of 128 for I2_S).
    #[arg(long, default_value_t = 256)]
    pub n_embd: u64,
    /// FFN width (a multiple of 256, or of 128 for I2_S).
    #[arg(long, default_value_t = 512)]
    pub n_ff: u64,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: u32,
    /// KV heads (GQA ratio = heads / kv-heads).
    #[arg(long, default_value_t = 2)]
    pub kv_heads: u32,
    /// Write an untied `output.weight` (default: lm_head is the tied embedding).
    #[arg(long)]
    pub untied: bool,
    /// Type of `token_embd.weight` (and of `output.weight` with --untied): f16, or q6_k as
    /// newer bitnet.cpp conversions write it (needs --n-embd a multiple of 256).
    #[arg(long, value_enum, default_value = "f16")]
    pub embd: EmbeddingFormat,
    /// Write one-element `.scale` tensors after each projection (not with I2_S).
    #[arg(long)]
    pub scale_tensors: bool,
    /// RoPE base.
    #[arg(long, default_value_t = 10_000.0)]
    pub rope_base: f32,
    /// Context length.
    #[arg(long, default_value_t = 256)]
    pub ctx: u32,
    /// Projection scale multiplier (1: unit-variance activations; larger: chaotic depth).
    #[arg(long, default_value_t = 1.0)]
    pub gain: f64,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Vocabulary: the fixtures' 384-token one, or LLaMA-3's 128256 tokens.
    #[arg(long, value_enum, default_value = "small")]
    pub vocab: VocabArg,
    #[command(flatten)]
    pub root: RootArgs,
}

/// Vocabularies `fixtures gen` can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VocabArg {
    /// The fixtures' 384-token byte-level BPE vocabulary.
    Small,
    /// LLaMA-3's 128256 tokens (from fixtures/tokenizer/llama3/).
    Llama3,
}

impl GenArgs {
    fn spec(&self) -> ModelSpec {
        ModelSpec {
            name: format!(
                "xval gen {} {} L{} e{} ff{} h{}/{}{}{}",
                self.arch.name(),
                self.format.ggml_type().name(),
                self.layers,
                self.n_embd,
                self.n_ff,
                self.heads,
                self.kv_heads,
                if self.untied { " untied" } else { "" },
                match self.embd {
                    EmbeddingFormat::F16 => String::new(),
                    other => format!(" embd {}", other.ggml_type().name()),
                }
            ),
            arch: self.arch,
            weights: self.format,
            n_embd: self.n_embd,
            n_ff: self.n_ff,
            n_layer: self.layers,
            n_head: self.heads,
            n_head_kv: self.kv_heads,
            context_length: self.ctx,
            rope_freq_base: self.rope_base,
            rms_eps: 1e-5,
            scale_tensors: self.scale_tensors,
            untied_output: self.untied,
            embedding: self.embd,
            gain: self.gain,
            pre_tokenizer: match self.vocab {
                VocabArg::Small => Some("llama-bpe".into()),
                VocabArg::Llama3 => None,
            },
            seed: self.seed,
        }
    }
}

/// The shapes `fixtures synth` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SynthShape {
    /// BitNet b1.58 2B-4T: n_embd 2560, n_ff 6912, 30 layers, 20/5 heads, vocab 128256.
    #[value(name = "2b-4t")]
    B2_4t,
}

/// Projection formats of the generated big models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SynthFormat {
    /// bitnet.cpp's I2_S (official 128-weight blocks, per-tensor scale).
    #[value(name = "i2_s")]
    I2S,
    /// Mainline ggml's TQ2_0 (per-256-block f16 scale).
    #[value(name = "tq2_0")]
    Tq2_0,
    /// Mainline ggml's TQ1_0 (five values per byte in base 3, per-256-block f16 scale): the
    /// same values as TQ2_0 from the same seed.
    #[value(name = "tq1_0")]
    Tq1_0,
}

impl From<SynthFormat> for WeightFormat {
    fn from(f: SynthFormat) -> Self {
        match f {
            SynthFormat::I2S => WeightFormat::I2S,
            SynthFormat::Tq2_0 => WeightFormat::Tq2_0,
            SynthFormat::Tq1_0 => WeightFormat::Tq1_0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PreTokenizer {
    /// `tokenizer.ggml.pre = "llama-bpe"` (LLaMA-3's split regex).
    LlamaBpe,
    /// No `tokenizer.ggml.pre` key: llama.cpp's `default` pre-tokenizer.
    Default,
}

impl PreTokenizer {
    fn key(self) -> Option<&'static str> {
        match self {
            PreTokenizer::LlamaBpe => Some("llama-bpe"),
            PreTokenizer::Default => None,
        }
    }
}

pub fn run(cmd: FixturesCommand) -> anyhow::Result<Exit> {
    match cmd {
        FixturesCommand::Regen {
            out,
            bitnet_cpp,
            root,
        } => {
            let source = root.fixtures_dir()?;
            let out = out.unwrap_or_else(|| source.clone());
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            let start = Instant::now();
            let files = fixtures::regen(&fixtures::RegenContext {
                source: &source,
                out: &out,
                bitnet_cpp: bitnet_cpp.as_deref(),
            })?;
            for f in &files {
                eprintln!("wrote {}", out.join(f).display());
            }
            eprintln!(
                "wrote {} ({} files) in {:.2} s",
                out.join(manifest::MANIFEST).display(),
                files.len(),
                start.elapsed().as_secs_f64()
            );
        }
        FixturesCommand::Verify { dir, root } => {
            let dir = match dir {
                Some(d) => d,
                None => root.fixtures_dir()?,
            };
            let n = manifest::verify(&dir)?;
            eprintln!("{n} files match {}", dir.join(manifest::MANIFEST).display());
        }
        FixturesCommand::Synth {
            shape: SynthShape::B2_4t,
            format,
            out,
            layers,
            seed,
            arch,
            root,
        } => {
            let vocab = load_llama3(&root)?;
            let mut spec = ModelSpec::official_2b4t(format.into());
            spec.n_layer = layers.unwrap_or(spec.n_layer);
            spec.seed = seed;
            spec.arch = arch;
            let start = Instant::now();
            fixtures::write_model_streaming(&spec, &vocab, &out)?;
            report_written(&out, start)?;
        }
        FixturesCommand::Gen(args) => {
            let vocab = match args.vocab {
                VocabArg::Small => Vocab::small(),
                VocabArg::Llama3 => load_llama3(&args.root)?,
            };
            let start = Instant::now();
            fixtures::build_model(&args.spec(), &vocab)?.write_file(&args.out)?;
            report_written(&args.out, start)?;
        }
        FixturesCommand::Import { from, format, out } => {
            let start = Instant::now();
            fixtures::trained::import(&from, format.into())?.write_file(&out)?;
            report_written(&out, start)?;
        }
        FixturesCommand::Llama3 {
            out,
            pre,
            format,
            seed,
            root,
        } => {
            let vocab = load_llama3(&root)?;
            let spec = ModelSpec {
                seed,
                ..ModelSpec::llama3(format.into(), pre.key())
            };
            let start = Instant::now();
            fixtures::build_model(&spec, &vocab)?.write_file(&out)?;
            report_written(&out, start)?;
        }
    }
    Ok(Exit::Success)
}

fn load_llama3(root: &RootArgs) -> anyhow::Result<Vocab> {
    let path = root.fixtures_dir()?.join(fixtures::vocab::LLAMA3_TOKENIZER);
    Ok(Vocab::llama3(&path)?)
}

fn report_written(path: &Path, start: Instant) -> anyhow::Result<()> {
    let secs = start.elapsed().as_secs_f64();
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    eprintln!("wrote {} ({len} bytes) in {secs:.2} s", path.display());
    Ok(())
}
