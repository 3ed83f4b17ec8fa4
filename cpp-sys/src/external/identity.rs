//! What the receipt says about an external tree: its version line, build identity (CMake
//! options, commits, a hash of the linked libraries) and CPU features.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::api::Api;
use super::ffi::{c_str, Shim};
use super::{shim, tree};
use crate::oracle::BuildIdentity;

/// "bitnet.cpp tree, llama.cpp <version> (ggml <version>)".
pub(super) fn version(shim: &Shim, tree: &tree::Tree) -> String {
    // SAFETY: static strings.
    let (llama, ggml) = unsafe { (c_str((shim.llama_version)()), c_str((shim.ggml_version)())) };
    let or_unknown = |s: String| if s.is_empty() { "unknown".into() } else { s };
    let kind = if tree.llama_root == tree.root {
        "llama.cpp tree"
    } else {
        "bitnet.cpp tree"
    };
    format!(
        "{kind}, llama.cpp {} (ggml {})",
        or_unknown(llama),
        or_unknown(ggml)
    )
}

pub(super) fn build_identity(
    shim: &Shim,
    tree: &tree::Tree,
    api: &Api,
    compiled: &shim::Compiled,
    has_detokenize: bool,
    system_info: String,
) -> BuildIdentity {
    let cmake = |k: &str| tree.cmake.get(k).cloned();
    let mut flags: BTreeMap<String, String> = tree::build_flags(&tree.cmake);
    flags.insert("xval.api".into(), api.variant().into());
    flags.insert(
        "xval.threadpool".into(),
        if api.threadpool {
            "one for the context (llama_attach_threadpool)"
        } else {
            "ggml's own, one per graph (this tree has no pool that is safe to keep)"
        }
        .into(),
    );
    if let Some(n) = api.batch_get_one_args {
        flags.insert("xval.llama_batch_get_one_args".into(), n.to_string());
    }
    flags.insert(
        "xval.libraries".into(),
        if tree.libs.shared { "shared" } else { "static" }.into(),
    );
    flags.insert("xval.shim_compiler".into(), compiled.compiler.clone());
    flags.insert(
        "xval.detokenize".into(),
        if has_detokenize {
            "llama_detokenize"
        } else {
            "built from llama_token_to_piece (the tree has no llama_detokenize)"
        }
        .into(),
    );
    let llama_commit = tree::git_commit(&tree.llama_root);
    let llama_build_number = llama_commit
        .as_ref()
        .and_then(|_| tree::git_build_number(&tree.llama_root));
    // A bitnet.cpp tree: its own commit beside its llama.cpp submodule's.
    let source_vcs = (tree.llama_root != tree.root)
        .then(|| tree::git_commit(&tree.root))
        .flatten()
        .map(|c| format!("bitnet.cpp@{c}"));
    // SAFETY: static strings.
    let (ggml_version, ggml_commit) =
        unsafe { (c_str((shim.ggml_version)()), c_str((shim.ggml_commit)())) };
    BuildIdentity {
        source: format!(
            "external tree {} (build {})",
            tree.root.display(),
            tree.build_dir.display()
        ),
        source_vcs,
        llama_build_number,
        llama_commit,
        ggml_version,
        ggml_commit,
        source_sha256: libraries_sha256(&tree.libs.paths),
        build_type: cmake("CMAKE_BUILD_TYPE").unwrap_or_default(),
        compiler: cmake("CMAKE_CXX_COMPILER")
            .or_else(|| cmake("CMAKE_C_COMPILER"))
            .unwrap_or_else(|| "unknown".into()),
        flags,
        cpu_features: cpu_features(&system_info),
        system_info,
    }
}

/// sha256 over the linked libraries (name, NUL, length, bytes each): identifies exactly the
/// code that ran, with or without git metadata.
fn libraries_sha256(paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    for p in paths {
        let bytes = std::fs::read(p).unwrap_or_default();
        h.update(p.file_name().unwrap_or_default().as_encoded_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The features `llama_print_system_info` reports as on (`AVX2 = 1 | ...`).
fn cpu_features(system_info: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in system_info.split('|') {
        // "CPU : SSE3 = 1" -> take what follows the last ':'.
        let part = part.rsplit(':').next().unwrap_or(part);
        if let Some((name, value)) = part.split_once('=') {
            let name = name.trim();
            if value.trim() == "1" && !name.is_empty() && !out.iter().any(|n| n == name) {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cpu_features;

    #[test]
    fn cpu_features_from_system_info() {
        let s = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX512 = 0 | LLAMAFILE = 1 | ";
        assert_eq!(cpu_features(s), ["SSE3", "SSSE3", "AVX", "LLAMAFILE"]);
        let old = "AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | NEON = 0 | ";
        assert_eq!(cpu_features(old), ["AVX", "AVX2"]);
    }
}
