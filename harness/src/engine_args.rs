//! Engine options shared by every command that runs the engine (`run`, later `compare`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use xval_engine::gguf::{GgufFile, Residence};
use xval_engine::model::{Engine, Model};
use xval_engine::numerics::{KvType, Numerics, Profile};
use xval_engine::quant::i2_s::I2sLayout;
use xval_engine::quant::kernels::Kernel;

/// Numerics profile names (`--profile`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// int8 per-token activations for ternary matmuls, bitnet.cpp's epilogue, F16 KV cache.
    BitnetCpp,
    /// Q8_K per-256 activations for ternary matmuls, as mainline ggml; F32 KV cache.
    Ggml,
    /// Dequantized weights, f32 activations, f64 sums: the mathematical reference.
    F32,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::BitnetCpp => Profile::BitnetCpp,
            ProfileArg::Ggml => Profile::Ggml,
            ProfileArg::F32 => Profile::F32,
        }
    }
}

/// KV cache element types (`--kv`, `--kv-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvArg {
    F32,
    F16,
}

impl From<KvArg> for KvType {
    fn from(k: KvArg) -> KvType {
        match k {
            KvArg::F32 => KvType::F32,
            KvArg::F16 => KvType::F16,
        }
    }
}

/// Kernel sets (`--kernel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KernelArg {
    /// The scalar reference.
    Scalar,
    /// AVX2 where a kernel exists (the I2_S, TQ2_0 and TQ1_0 dots, bit-exact against scalar;
    /// the F32/F16/BF16 dots, the same products summed in another f64 order; attention);
    /// scalar elsewhere.
    Avx2,
    /// AVX2 with AVX-512 VNNI (`vpdpbusd`) in the eight-row ternary kernel: the same bits as
    /// avx2 (needs AVX-512 F, BW, VL and VNNI).
    Avx512,
    /// avx512 with Intel AMX tiles (AMX-INT8 `tdpbusd`) for the ternary matmuls of
    /// eight tokens and more (prefill): the same bits as scalar (needs AMX-TILE, AMX-INT8
    /// and an OS that grants the tile state).
    Amx,
    /// NEON (aarch64) for the I2_S and TQ2_0 dots, bit-exact against scalar, the F32/F16/BF16
    /// dots in avx2's order and attention; scalar elsewhere.
    Neon,
    /// The best set this CPU runs.
    Auto,
    /// compare only: the scalar reference against the oracle, and every other set this CPU
    /// runs against the same oracle run and against scalar, in one receipt.
    All,
}

impl KernelArg {
    /// The spelling `--kernel` takes.
    pub fn name(self) -> &'static str {
        match self {
            KernelArg::Scalar => "scalar",
            KernelArg::Avx2 => "avx2",
            KernelArg::Avx512 => "avx512",
            KernelArg::Amx => "amx",
            KernelArg::Neon => "neon",
            KernelArg::Auto => "auto",
            KernelArg::All => "all",
        }
    }

    /// The set the engine computes with (`all`: the scalar reference, the others run beside
    /// it: [`KernelArg::others`]).
    pub fn kernel(self) -> Kernel {
        match self {
            KernelArg::Scalar | KernelArg::All => Kernel::Scalar,
            KernelArg::Avx2 => Kernel::Avx2,
            KernelArg::Avx512 => Kernel::Avx512,
            KernelArg::Amx => Kernel::Amx,
            KernelArg::Neon => Kernel::Neon,
            KernelArg::Auto => Kernel::detect(),
        }
    }

    /// With `all`, every other set this CPU runs; else none.
    pub fn others(self) -> Vec<Kernel> {
        match self {
            KernelArg::All => Kernel::ALL
                .into_iter()
                .filter(|k| *k != Kernel::Scalar && k.available())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// How the model's bytes are held (`--load`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadArg {
    /// Read into memory once, on 2 MB pages where the OS has transparent huge pages: decode
    /// reads every weight per token, and 4 KB pages cost it about 6% on the 2B-4T shape.
    Resident,
    /// Memory-mapped (nothing copied; pages read from the page cache as they are first
    /// touched).
    Mapped,
}

impl From<LoadArg> for Residence {
    fn from(a: LoadArg) -> Residence {
        match a {
            LoadArg::Resident => Residence::Resident,
            LoadArg::Mapped => Residence::Mapped,
        }
    }
}

/// How the engine runs a model.
#[derive(Args, Clone, Debug)]
pub struct EngineArgs {
    /// Numerics profile [default: bitnet-cpp for I2_S models, ggml otherwise].
    #[arg(long, value_enum)]
    pub profile: Option<ProfileArg>,
    /// KV cache type [default: f16 for bitnet-cpp, f32 otherwise].
    #[arg(long, value_enum)]
    pub kv: Option<KvArg>,
    /// Worker threads (0 = one per core). Results do not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// I2_S block layout: 128 (the official file, bitnet.cpp x86) or 64 (files written by
    /// bitnet.cpp ARM builds after Nov 2025).
    #[arg(long = "i2s-block", default_value_t = 128, value_parser = parse_i2s_block)]
    pub i2s_block: u32,
    /// Kernel set (the ternary dots give the same numbers in every set, the float dots sum the
    /// same products in another order; the receipt records which ran) [default: auto, the best
    /// this CPU runs; `scalar` for the reference]. `all` is for compare.
    #[arg(long, value_enum, default_value_t = KernelArg::Auto, hide_default_value = true)]
    pub kernel: KernelArg,
    /// How the model file is held: read into memory (on huge pages where the OS has them:
    /// faster decode) or memory-mapped (nothing copied: faster to start). The numbers are the
    /// same either way [default: resident for run, bench and stats; mapped for compare and
    /// selftest, whose engine runs are short beside the read].
    #[arg(long, value_enum)]
    pub load: Option<LoadArg>,
}

fn parse_i2s_block(s: &str) -> Result<u32, String> {
    match s {
        "128" => Ok(128),
        "64" => Ok(64),
        _ => Err(format!("expected 128 or 64, got {s}")),
    }
}

impl EngineArgs {
    pub fn i2s_layout(&self) -> I2sLayout {
        if self.i2s_block == 64 {
            I2sLayout::Block64
        } else {
            I2sLayout::Block128
        }
    }

    /// Refuse `--kernel all` in a command that runs one engine (`command`).
    pub fn single_kernel(&self, command: &str) -> Result<()> {
        if self.kernel == KernelArg::All {
            return Err(crate::error::Error::Invalid(format!(
                "--kernel all: `{command}` runs one kernel set; `compare --kernel all` compares \
                 them all"
            ))
            .into());
        }
        Ok(())
    }

    /// Open the model and build an engine with these options.
    pub fn engine(&self, path: &Path) -> Result<Engine> {
        self.engine_for(self.model(path)?, None)
    }

    /// Open and check the model (every tensor and hyper-parameter) without building an engine.
    pub fn model(&self, path: &Path) -> Result<Model> {
        self.model_held(path, Residence::Resident)
    }

    /// [`EngineArgs::model`], the file held as `--load` says, else as `default`.
    pub fn model_held(&self, path: &Path, default: Residence) -> Result<Model> {
        let residence = self.load.map_or(default, Residence::from);
        let file = Arc::new(GgufFile::open_with(path, residence)?);
        Model::load(file, self.i2s_layout())
            .with_context(|| format!("loading model {}", path.display()))
    }

    /// Build the engine on a loaded model. With `--profile`, that profile's numerics; without,
    /// `mirror` (the numerics that mirror the oracle at hand: profile, KV type and F16
    /// activations) or else the model's usual profile. `--kv` overrides the KV type either way.
    pub fn engine_for(&self, model: Model, mirror: Option<Numerics>) -> Result<Engine> {
        let mut numerics = match (self.profile, mirror) {
            (Some(p), _) => Numerics::new(p.into()),
            (None, Some(m)) => m,
            (None, None) => Numerics::new(Profile::default_for(model.projection_type())),
        };
        if let Some(kv) = self.kv {
            numerics = numerics.with_kv(kv.into());
        }
        Ok(Engine::new(model, numerics, self.threads)?.with_kernel(self.kernel.kernel())?)
    }
}
