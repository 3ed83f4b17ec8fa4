//! Finding what the external oracle needs in a user's tree: headers, built libraries, the build
//! configuration (CMakeCache.txt) and the git commit. Every miss names what is missing and where
//! it was looked for.
//!
//! Layouts understood:
//! - a llama.cpp checkout: `DIR/include/llama.h`, `DIR/ggml/include/ggml.h`, a build directory
//!   `DIR/build*/` (libraries anywhere below it: `bin/`, `src/`, `ggml/src/`, ...);
//! - a bitnet.cpp checkout: the same under `DIR/3rdparty/llama.cpp/`, built from the root, so
//!   the build directory is `DIR/build*/` (libraries under `3rdparty/llama.cpp/...`).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tree's parts, as found.
#[derive(Clone, Debug)]
pub struct Tree {
    pub root: PathBuf,
    /// The llama.cpp source root (`root` or `root/3rdparty/llama.cpp`).
    pub llama_root: PathBuf,
    pub llama_h: PathBuf,
    pub ggml_h: PathBuf,
    /// Directories to pass as `-I` (llama.h's and ggml.h's).
    pub include_dirs: Vec<PathBuf>,
    pub build_dir: PathBuf,
    pub libs: Libs,
    /// `CMakeCache.txt` entries (`NAME` -> value) of the build directory, empty without one.
    pub cmake: BTreeMap<String, String>,
}

/// The libraries to link, `libllama` first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Libs {
    pub shared: bool,
    pub paths: Vec<PathBuf>,
}

const BUILD_HINT: &str = "build the tree first (cmake -B build && cmake --build build --config \
                          Release)";

/// Find headers, build directory and libraries of the tree at `root`.
pub fn discover(root: &Path) -> Result<Tree, String> {
    if !root.is_dir() {
        return Err(format!("{} is not a directory", root.display()));
    }
    let candidates = [root.to_path_buf(), root.join("3rdparty").join("llama.cpp")];
    let Some(llama_root) = candidates
        .iter()
        .find(|r| r.join("include").join("llama.h").is_file())
        .cloned()
    else {
        return Err(format!(
            "no llama.h: looked for {} (a llama.cpp tree) and {} (a bitnet.cpp tree)",
            root.join("include/llama.h").display(),
            root.join("3rdparty/llama.cpp/include/llama.h").display()
        ));
    };
    let llama_h = llama_root.join("include").join("llama.h");
    let ggml_inc = llama_root.join("ggml").join("include");
    let ggml_h = ggml_inc.join("ggml.h");
    for h in ["ggml.h", "ggml-backend.h"] {
        if !ggml_inc.join(h).is_file() {
            return Err(format!(
                "no {h} in {} (llama.h includes it)",
                ggml_inc.display()
            ));
        }
    }
    let build_dirs = build_dirs(root);
    if build_dirs.is_empty() {
        return Err(format!(
            "no build directory: looked for {}/build* with a CMakeCache.txt or libraries: \
             {BUILD_HINT}",
            root.display()
        ));
    }
    // The first build directory that holds a libllama.
    let mut found = None;
    for b in &build_dirs {
        if let Some(libs) = find_libs(b) {
            found = Some((b.clone(), libs));
            break;
        }
    }
    let Some((build_dir, libs)) = found else {
        return Err(format!(
            "no libllama.so, libllama.dylib or libllama.a under {}: {BUILD_HINT}",
            build_dirs
                .iter()
                .map(|b| b.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let cmake = read_cmake_cache(&build_dir.join("CMakeCache.txt"));
    // Resolved paths for compiling, linking and the shim cache key: the same files reached
    // through another path (a symlinked tree) reuse one compiled shim.
    let real = |p: PathBuf| fs::canonicalize(&p).unwrap_or(p);
    let libs = Libs {
        shared: libs.shared,
        paths: libs.paths.into_iter().map(real).collect(),
    };
    Ok(Tree {
        root: root.to_path_buf(),
        include_dirs: vec![real(llama_root.join("include")), real(ggml_inc)],
        llama_root,
        llama_h,
        ggml_h,
        build_dir,
        libs,
        cmake,
    })
}

/// `root/build*` directories (sorted, `build` first), or `root` itself when it is a build
/// directory (holds a CMakeCache.txt).
fn build_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("build"))
                })
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|p| (p.file_name().is_some_and(|n| n != "build"), p.clone()));
    if root.join("CMakeCache.txt").is_file() {
        dirs.push(root.to_path_buf());
    }
    dirs
}

/// libllama and every libggml* below `build`, shared libraries preferred (what the tree's own
/// programs use); `None` without a libllama.
fn find_libs(build: &Path) -> Option<Libs> {
    let mut files = Vec::new();
    walk(build, 0, &mut files);
    files.sort();
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string()
    };
    let pick = |shared: bool| -> Option<Libs> {
        let ok = |n: &str, stem: &str| {
            if shared {
                n == format!("{stem}.so") || n == format!("{stem}.dylib")
            } else {
                n == format!("{stem}.a")
            }
        };
        let llama = files.iter().find(|p| ok(&name(p), "libllama"))?;
        let mut paths = vec![llama.clone()];
        // One of each ggml library (libggml, libggml-base, libggml-cpu, ...), first found.
        let mut seen = Vec::new();
        for p in &files {
            let n = name(p);
            let stem = n.split('.').next().unwrap_or("").to_string();
            if stem.starts_with("libggml") && ok(&n, &stem) && !seen.contains(&stem) {
                seen.push(stem);
                paths.push(p.clone());
            }
        }
        Some(Libs { shared, paths })
    };
    pick(true).or_else(|| pick(false))
}

/// Files below `dir`, skipping CMake's own scratch directories, at most 6 levels deep.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 6 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let skip = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n == "CMakeFiles" || n.starts_with('.'));
        if skip {
            continue;
        }
        if p.is_dir() {
            walk(&p, depth + 1, out);
        } else {
            out.push(p);
        }
    }
}

/// `NAME:TYPE=value` lines of a CMakeCache.txt (internal and advanced markers left out).
pub fn read_cmake_cache(path: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("//"))
        .filter_map(|l| {
            let (key, value) = l.split_once('=')?;
            let (name, ty) = key.split_once(':')?;
            (ty != "INTERNAL" && ty != "STATIC" && !name.ends_with("-ADVANCED"))
                .then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

/// The build options recorded in the identity: the build type, shared or static, and every
/// `GGML_*`, `LLAMA_*` and `BITNET_*` option.
pub fn build_flags(cmake: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    cmake
        .iter()
        .filter(|(k, _)| {
            k.as_str() == "BUILD_SHARED_LIBS"
                || ["GGML_", "LLAMA_", "BITNET_"]
                    .iter()
                    .any(|p| k.starts_with(p))
        })
        // Paths (install dirs and the like) say nothing about kernels or numerics.
        .filter(|(k, _)| !k.ends_with("_DIR") && !k.contains("INSTALL"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The commit checked out at `dir`: `git rev-parse HEAD`, or `.git/HEAD` read by hand where git
/// is not installed (a submodule's `.git` is a file naming its git directory).
pub fn git_commit(dir: &Path) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output();
    if let Ok(o) = out {
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && is_hash(&s) {
            // Only a repository rooted here counts (not one further up, e.g. the harness's).
            let top = Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(["rev-parse", "--show-toplevel"])
                .output()
                .ok()
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
            let here = fs::canonicalize(dir).ok();
            return (top.and_then(|t| fs::canonicalize(t).ok()) == here).then_some(s);
        }
    }
    read_git_head(dir)
}

/// `git rev-list --count HEAD`: llama.cpp's build number.
pub fn git_build_number(dir: &Path) -> Option<u64> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-list", "--count", "HEAD"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stdout).trim().parse().ok()
}

fn is_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_git_head(dir: &Path) -> Option<String> {
    let dot = dir.join(".git");
    let git_dir = if dot.is_file() {
        let text = fs::read_to_string(&dot).ok()?;
        let rel = text.trim().strip_prefix("gitdir:")?.trim();
        dir.join(rel)
    } else {
        dot
    };
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(r) = head.strip_prefix("ref:") else {
        return is_hash(head).then(|| head.to_string());
    };
    let r = r.trim();
    if let Ok(h) = fs::read_to_string(git_dir.join(r)) {
        let h = h.trim();
        return is_hash(h).then(|| h.to_string());
    }
    let packed = fs::read_to_string(git_dir.join("packed-refs")).ok()?;
    packed.lines().find_map(|l| {
        let (h, name) = l.split_once(' ')?;
        (name == r && is_hash(h)).then(|| h.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }

    #[test]
    fn a_bitnet_layout_with_shared_libraries() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let l = r.join("3rdparty/llama.cpp");
        touch(&l.join("include/llama.h"));
        touch(&l.join("ggml/include/ggml.h"));
        touch(&l.join("ggml/include/ggml-backend.h"));
        touch(&r.join("build/3rdparty/llama.cpp/src/libllama.so"));
        touch(&r.join("build/3rdparty/llama.cpp/ggml/src/libggml.so"));
        touch(&r.join("build/3rdparty/llama.cpp/ggml/src/libggml.a"));
        fs::write(
            r.join("build/CMakeCache.txt"),
            "CMAKE_BUILD_TYPE:STRING=Release\nBITNET_X86_TLS:BOOL=OFF\nGGML_NATIVE:BOOL=ON\n\
             GGML_OPENMP_ENABLED:INTERNAL=ON\nLLAMA_LIB_INSTALL_DIR:PATH=lib\n",
        )
        .unwrap();
        let t = discover(r).unwrap();
        assert_eq!(t.llama_root, l);
        assert!(t.libs.shared);
        let names: Vec<_> = t
            .libs
            .paths
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["libllama.so", "libggml.so"]);
        let f = build_flags(&t.cmake);
        assert_eq!(f.get("BITNET_X86_TLS").map(String::as_str), Some("OFF"));
        assert_eq!(f.get("GGML_NATIVE").map(String::as_str), Some("ON"));
        assert!(!f.contains_key("GGML_OPENMP_ENABLED") && !f.contains_key("LLAMA_LIB_INSTALL_DIR"));
        assert_eq!(
            t.cmake.get("CMAKE_BUILD_TYPE").map(String::as_str),
            Some("Release")
        );
    }

    #[test]
    fn every_miss_names_what_and_where() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let e = discover(r).unwrap_err();
        assert!(
            e.contains("no llama.h") && e.contains("3rdparty/llama.cpp/include"),
            "{e}"
        );
        touch(&r.join("include/llama.h"));
        let e = discover(r).unwrap_err();
        assert!(e.contains("no ggml.h"), "{e}");
        touch(&r.join("ggml/include/ggml.h"));
        touch(&r.join("ggml/include/ggml-backend.h"));
        let e = discover(r).unwrap_err();
        assert!(
            e.contains("no build directory") && e.contains("cmake -B build"),
            "{e}"
        );
        fs::create_dir_all(r.join("build/src")).unwrap();
        let e = discover(r).unwrap_err();
        assert!(e.contains("no libllama.so") && e.contains("build"), "{e}");
        touch(&r.join("build/src/libllama.a"));
        assert!(!discover(r).unwrap().libs.shared);
    }

    #[test]
    fn head_read_by_hand() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let h = "40ed0f290320b4bbfb0bce2ea3d6e1f3d9e49f10";
        fs::create_dir_all(r.join("gitdir/refs/heads")).unwrap();
        fs::write(r.join("gitdir/HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(
            r.join("gitdir/packed-refs"),
            format!("{h} refs/heads/main\n"),
        )
        .unwrap();
        fs::write(r.join(".git"), "gitdir: gitdir\n").unwrap();
        assert_eq!(read_git_head(r).as_deref(), Some(h));
    }
}
