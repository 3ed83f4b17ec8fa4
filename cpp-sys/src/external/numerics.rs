//! Which arithmetic an external tree runs, read from the tree itself: the profile comes from
//! whether it reads I2_S ([`crate::llama_common::ModelInput`]); this module decides what its
//! F16-weight matmuls multiply by.
//!
//! ggml serves a matmul of two or more activation rows with llamafile's tinyBLAS when it can
//! (`llamafile_sgemm`, `n >= 2`, `GGML_LLAMAFILE` on). For F16 weights on x86, mainline's
//! tinyBLAS takes F16 activations (`tinyBLAS<.., ggml_fp16_t, ggml_fp16_t, float>`, after ggml
//! converted them to F16's vec_dot_type), while bitnet.cpp's fork at 406a5036 takes the F32
//! activations as they are (`tinyBLAS<.., ggml_fp16_t, float, float>`, `Btype !=
//! GGML_TYPE_F32` refused). Measured here: that one difference is what moved the fork's
//! attention (`kqv_out`) and F16 lm_head (`result_output`) by NMSE 3e-8 to 7e-8 from an engine
//! that rounded to f16. The decision is made from the tree's sgemm.cpp and its build, and the
//! reason goes into the receipt.

use std::path::Path;

use xval_engine::numerics::F16Activations;

use super::tree::Tree;

/// What the tree's F16-weight matmuls multiply by, and why.
pub(super) fn f16_activations(tree: &Tree, system_info: &str) -> (F16Activations, String) {
    let round = |why: String| (F16Activations::Round, why);
    if tree.cmake.get("GGML_LLAMAFILE").is_some_and(|v| is_off(v)) {
        return round("GGML_LLAMAFILE is off: F16 matmuls take the vec_dot path (F16)".into());
    }
    let on = |feature: &str| {
        system_info
            .split('|')
            .filter_map(|p| p.rsplit(':').next()?.split_once('='))
            .any(|(k, v)| k.trim() == feature && v.trim() == "1")
    };
    let x86 = on("AVX512") || (on("AVX2") && on("F16C")) || (on("AVX") && on("F16C"));
    if !x86 {
        return round(
            "not an x86 build with AVX-512F or AVX/AVX2+F16C: tinyBLAS's F16 case is not the \
             x86 one"
                .into(),
        );
    }
    let Some((path, text)) = sgemm_source(&tree.llama_root) else {
        return round("no llamafile sgemm.cpp in the tree: F16 activations".into());
    };
    match x86_f16_b_type(&text) {
        Some("float") => (
            F16Activations::F32Batches,
            format!(
                "{}: tinyBLAS's x86 F16 case takes F32 activations (ggml_fp16_t, float, float), \
                 so matmuls of 2+ rows keep f32 activations; single rows take the vec_dot path \
                 (F16)",
                path.display()
            ),
        ),
        Some(b) => round(format!(
            "{}: tinyBLAS's x86 F16 case takes {b} activations",
            path.display()
        )),
        None => round(format!(
            "{}: no x86 F16 case recognised; assuming F16 activations",
            path.display()
        )),
    }
}

fn is_off(v: &str) -> bool {
    matches!(
        v.to_ascii_uppercase().as_str(),
        "OFF" | "0" | "FALSE" | "NO" | "N"
    )
}

/// The tree's llamafile sgemm.cpp (the fork's `ggml/src/llamafile/`, mainline's
/// `ggml/src/ggml-cpu/llamafile/`).
fn sgemm_source(llama_root: &Path) -> Option<(std::path::PathBuf, String)> {
    [
        "ggml/src/llamafile/sgemm.cpp",
        "ggml/src/ggml-cpu/llamafile/sgemm.cpp",
    ]
    .iter()
    .map(|p| llama_root.join(p))
    .find_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
}

/// The activation type (`float` or `ggml_fp16_t`) of the first x86 tinyBLAS instantiation in
/// `llamafile_sgemm`'s `case GGML_TYPE_F16:` (before its ARM branches).
fn x86_f16_b_type(sgemm: &str) -> Option<&str> {
    let start = sgemm.find("case GGML_TYPE_F16:")?;
    let case = &sgemm[start..];
    let end = case.find("__ARM_").unwrap_or(case.len());
    let x86 = &case[..end];
    let inst = x86.find("tinyBLAS<")?;
    // tinyBLAS<KN, D, V, TA, TB, TC>: the fifth argument is TB.
    let args = &x86[inst + "tinyBLAS<".len()..];
    let args = &args[..args.find('>')?];
    args.split(',').nth(4).map(str::trim)
}

#[cfg(test)]
mod tests {
    use super::x86_f16_b_type;

    #[test]
    fn reads_the_activation_type_of_the_x86_f16_case() {
        let fork =
            "case GGML_TYPE_F32: { tinyBLAS<16, __m512, __m512, float, float, float> tb; }\n\
                    case GGML_TYPE_F16: {\n#if defined(__AVX512F__)\n if (Btype != GGML_TYPE_F32) \
                    return false;\n tinyBLAS<16, __m512, __m512, ggml_fp16_t, float, float> tb{};\n\
                    #elif defined(__ARM_FEATURE_FP16_VECTOR_ARITHMETIC)\n tinyBLAS<8, a, b, \
                    ggml_fp16_t, ggml_fp16_t, float> tb{};";
        assert_eq!(x86_f16_b_type(fork), Some("float"));
        let mainline = "case GGML_TYPE_F16: {\n#if defined(__AVX512F__)\n if (Btype == \
                        GGML_TYPE_F16) {\n tinyBLAS<16, __m512, __m512, ggml_fp16_t, ggml_fp16_t, \
                        float> tb{ params, k };";
        assert_eq!(x86_f16_b_type(mainline), Some("ggml_fp16_t"));
        assert_eq!(x86_f16_b_type("no such case"), None);
    }
}
