//! Which code computes the engine's numbers, and where it runs, as types: kept typed up to the
//! receipt, where serde writes their names.
//!
//! - [`Backend`]: where the kernels run (`cpu`; CUDA comes with its own issue).
//! - [`Kernel`]: which kernel set (`scalar`, the reference every other set is tested against;
//!   `avx2`, whose kernels are tested bit for bit against it in `tests/kernels_simd.rs`).

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
    /// AVX2 where a kernel exists (the ternary dots: I2_S and TQ2_0 with int8 or Q8_K
    /// activations, bit-exact against scalar), the scalar reference for everything else.
    Avx2,
}

impl Kernel {
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
        }
    }

    /// The backend the set runs on.
    pub fn backend(self) -> Backend {
        match self {
            Kernel::Scalar | Kernel::Avx2 => Backend::Cpu,
        }
    }

    /// Whether this CPU runs the set.
    pub fn available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => x86::has_avx2(),
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 => false,
        }
    }

    /// The best set this CPU runs.
    pub fn detect() -> Kernel {
        if Kernel::Avx2.available() {
            Kernel::Avx2
        } else {
            Kernel::Scalar
        }
    }
}

impl std::fmt::Display for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
