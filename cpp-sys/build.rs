//! Records how the pinned llama.cpp was built, for the oracle's identity.
//!
//! llama-cpp-sys-2 (a `links = "llama"` crate) exports its cmake output directory as
//! `DEP_LLAMA_ROOT`. From there this script reads the CMakeCache (build type, the ggml options
//! that decide kernels, the source directory) and the compiler identification, hashes the
//! compiled source files (the crates.io tarball has no git metadata, so the hash is what
//! identifies the tree), and reads the package's `.cargo_vcs_info.json`. Nothing is fetched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// CMake options recorded in the identity: the ones that change which kernels run.
const FLAGS: [&str; 27] = [
    "CMAKE_BUILD_TYPE",
    "BUILD_SHARED_LIBS",
    "GGML_NATIVE",
    "GGML_CPU",
    "GGML_SSE42",
    "GGML_AVX",
    "GGML_AVX2",
    "GGML_AVX_VNNI",
    "GGML_AVX512",
    "GGML_AVX512_VBMI",
    "GGML_AVX512_VNNI",
    "GGML_AVX512_BF16",
    "GGML_AMX_TILE",
    "GGML_AMX_INT8",
    "GGML_AMX_BF16",
    "GGML_BMI2",
    "GGML_FMA",
    "GGML_F16C",
    "GGML_CPU_ARM_ARCH",
    "GGML_LLAMAFILE",
    "GGML_OPENMP",
    "GGML_CPU_REPACK",
    "GGML_CPU_KLEIDIAI",
    "GGML_BLAS",
    "GGML_CUDA",
    "GGML_VULKAN",
    "GGML_METAL",
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_LLAMA_ROOT");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let code = match std::env::var_os("DEP_LLAMA_ROOT") {
        Some(root) if std::env::var_os("CARGO_FEATURE_LLAMA_CPP").is_some() => {
            build_info(Path::new(&root))
        }
        _ => String::from("// built without the llama-cpp feature\n"),
    };
    fs::write(out.join("build_info.rs"), code).expect("write build_info.rs");
}

fn build_info(root: &Path) -> String {
    let cache_path = root.join("build").join("CMakeCache.txt");
    println!("cargo:rerun-if-changed={}", cache_path.display());
    let cache = fs::read_to_string(&cache_path).unwrap_or_default();
    let entries: BTreeMap<&str, &str> = cache
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("//"))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let (name, _ty) = key.split_once(':')?;
            Some((name, value))
        })
        .collect();
    let flags: Vec<(String, String)> = FLAGS
        .iter()
        .filter_map(|k| entries.get(k).map(|v| (k.to_string(), v.to_string())))
        .collect();
    let source = entries
        .get("CMAKE_HOME_DIRECTORY")
        .map(PathBuf::from)
        .unwrap_or_default();
    let package_dir = source.parent().map(Path::to_path_buf).unwrap_or_default();
    let vcs = fs::read_to_string(package_dir.join(".cargo_vcs_info.json"))
        .ok()
        .and_then(|s| json_string_after(&s, "\"sha1\""));
    let version = fs::read_to_string(package_dir.join("Cargo.toml"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("version = \""))
                .map(|v| v.trim_end_matches('"').to_string())
        })
        .unwrap_or_default();

    let mut code = String::new();
    writeln!(code, "pub const FLAGS: &[(&str, &str)] = &{flags:?};").unwrap();
    writeln!(code, "pub const PACKAGE_VERSION: &str = {version:?};").unwrap();
    // Where the pinned tree's sources and cmake output are: tests point the external oracle
    // at them (a user-style tree assembled from the built-in build).
    writeln!(
        code,
        "pub const LLAMA_ROOT: &str = {:?};",
        root.display().to_string()
    )
    .unwrap();
    writeln!(
        code,
        "pub const LLAMA_SOURCE: &str = {:?};",
        source.display().to_string()
    )
    .unwrap();
    println!("cargo:rustc-env=XVAL_BUILTIN_LLAMA_ROOT={}", root.display());
    println!(
        "cargo:rustc-env=XVAL_BUILTIN_LLAMA_SOURCE={}",
        source.display()
    );
    writeln!(code, "pub const SOURCE_VCS: Option<&str> = {vcs:?};").unwrap();
    writeln!(
        code,
        "pub const SOURCE_SHA256: &str = {:?};",
        source_hash(&source)
    )
    .unwrap();
    writeln!(
        code,
        "pub const COMPILER: &str = {:?};",
        compiler(&root.join("build"))
    )
    .unwrap();
    code
}

/// The value of the first JSON string after `key` (enough for `.cargo_vcs_info.json`).
fn json_string_after(json: &str, key: &str) -> Option<String> {
    let rest = &json[json.find(key)? + key.len()..];
    let rest = &rest[rest.find('"')? + 1..];
    Some(rest[..rest.find('"')?].to_string())
}

/// sha256 over the files that make up the CPU build (llama.cpp's `include/` and `src/`,
/// ggml's `include/`, `src/` top level and `src/ggml-cpu/`), each as path, NUL, length, bytes,
/// in sorted path order.
fn source_hash(source: &Path) -> String {
    if !source.is_dir() {
        return "unknown".into();
    }
    let mut files = Vec::new();
    for (dir, recurse) in [
        ("include", true),
        ("src", true),
        ("ggml/include", true),
        ("ggml/src", false),
        ("ggml/src/ggml-cpu", true),
    ] {
        collect(&source.join(dir), recurse, &mut files);
    }
    files.sort();
    files.dedup();
    let mut h = Sha256::new();
    for f in &files {
        let rel = f.strip_prefix(source).unwrap_or(f);
        let bytes = fs::read(f).unwrap_or_default();
        h.update(rel.to_string_lossy().as_bytes());
        h.update([0u8]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            write!(s, "{b:02x}").unwrap();
            s
        })
}

fn collect(dir: &Path, recurse: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if recurse {
                collect(&p, true, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// "GNU 12.2.0", from cmake's compiler identification (`CMakeFiles/<ver>/CMakeCXXCompiler.cmake`).
fn compiler(build: &Path) -> String {
    let Ok(entries) = fs::read_dir(build.join("CMakeFiles")) else {
        return "unknown".into();
    };
    for e in entries.flatten() {
        let Ok(text) = fs::read_to_string(e.path().join("CMakeCXXCompiler.cmake")) else {
            continue;
        };
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(&format!("set({key} \"")))
                .map(|v| v.trim_end_matches("\")").to_string())
        };
        if let (Some(id), Some(ver)) = (
            get("CMAKE_CXX_COMPILER_ID"),
            get("CMAKE_CXX_COMPILER_VERSION"),
        ) {
            return format!("{id} {ver}");
        }
    }
    "unknown".into()
}
