//! What the CPU offers, probed at run time: the SIMD features a kernel set may dispatch on
//! (recorded in every receipt beside the kernel that ran).

/// The SIMD features this CPU offers among those the kernels care about, in a fixed order.
pub fn features() -> Vec<String> {
    #[allow(unused_mut)]
    let mut f: Vec<String> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($feat:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($feat) {
                    f.push($feat.to_string());
                }
            )*};
        }
        probe!(
            "sse3",
            "ssse3",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($feat:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($feat) {
                    f.push($feat.to_string());
                }
            )*};
        }
        probe!("neon", "dotprod", "i8mm", "sve");
    }
    f
}
