//! Which code computes the engine's numbers, and where it runs, as types: kept typed up to the
//! receipt, where serde writes their names.
//!
//! - [`Backend`]: where the kernels run (`cpu`; CUDA comes with its own issue).
//! - [`Kernel`]: which kernel set (`scalar`, the reference every other set is tested against;
//!   SIMD sets come with their own issue).

use serde::{Deserialize, Serialize};

#[cfg(target_arch = "x86_64")]
pub mod x86;

/// Where the engine's kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel set: the code behind every dot product and activation quantizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// The scalar reference (`quant/<format>.rs`), always compiled.
    Scalar,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
        }
    }

    /// The backend the set runs on.
    pub fn backend(self) -> Backend {
        match self {
            Kernel::Scalar => Backend::Cpu,
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
