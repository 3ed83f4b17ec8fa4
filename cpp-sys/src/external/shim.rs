//! Compiling `shim.c` against a tree and caching the result.
//!
//! The shim is built with the system C compiler (`$CC`, else `cc`) as a shared object, `-I` the
//! tree's header directories, `-D` the API macros, linked to the tree's libraries: shared ones
//! through `-L`/`-rpath`, static archives (PIC in a cmake build with shared objects off, as the
//! built-in tree's are) inside `--start-group`/`--end-group` with their C++ runtime. Archive
//! symbols are made local (`--exclude-libs,ALL`) and references bound inside the shim
//! (`-Bsymbolic`), so that a second copy of llama.cpp in the same process (the built-in
//! oracle's) never gets mixed with the tree's.
//!
//! The compiled shim is cached under `$XDG_CACHE_HOME/xval/shims` (or `~/.cache/xval/shims`,
//! or the temp directory) by a sha256 over everything that decides the result: the shim's
//! source, the compiler, the flags, the headers' bytes, and each library's path, size and
//! modification time. A rebuilt tree gets a new shim; an unchanged one is loaded directly.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::api::Api;
use super::tree::Tree;

/// The shim's source, compiled into this crate so that the binary needs nothing else.
pub const SOURCE: &str = include_str!("shim.c");

/// A compiled shim on disk.
#[derive(Clone, Debug)]
pub struct Compiled {
    pub path: PathBuf,
    /// Whether it came from the cache (else it was compiled now).
    pub cached: bool,
    /// Seconds the compiler took (0 when cached).
    pub compile_s: f64,
    pub compiler: String,
}

/// The compiler to use: `$CC` or `cc`.
pub fn compiler() -> OsString {
    std::env::var_os("CC")
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "cc".into())
}

/// Compile-only flags: headers and API macros.
fn compile_flags(tree: &Tree, api: &Api) -> Vec<OsString> {
    let mut f: Vec<OsString> = ["-std=c11", "-O2", "-fPIC", "-fvisibility=hidden"]
        .iter()
        .map(OsString::from)
        .collect();
    for d in &tree.include_dirs {
        let mut a = OsString::from("-I");
        a.push(d);
        f.push(a);
    }
    f.extend(api.macros().into_iter().map(OsString::from));
    f
}

/// Link flags for the tree's libraries.
fn link_flags(tree: &Tree) -> Vec<OsString> {
    let mut f: Vec<OsString> = vec!["-shared".into(), "-Wl,-Bsymbolic".into()];
    if tree.libs.shared {
        let mut dirs: Vec<&Path> = tree.libs.paths.iter().filter_map(|p| p.parent()).collect();
        dirs.dedup();
        for d in dirs {
            let mut l = OsString::from("-L");
            l.push(d);
            f.push(l);
            let mut r = OsString::from("-Wl,-rpath,");
            r.push(d);
            f.push(r);
        }
        for p in &tree.libs.paths {
            // Link by full path: the tree's copy, never one installed elsewhere.
            f.push(p.into());
        }
    } else {
        f.push("-Wl,--exclude-libs,ALL".into());
        f.push("-Wl,--start-group".into());
        f.extend(tree.libs.paths.iter().map(OsString::from));
        f.push("-Wl,--end-group".into());
        f.extend(["-lstdc++", "-lm", "-lpthread", "-ldl"].map(OsString::from));
        if tree.cmake.get("GGML_OPENMP").is_some_and(|v| is_on(v)) {
            f.push("-fopenmp".into());
        }
    }
    f
}

fn is_on(v: &str) -> bool {
    matches!(
        v.to_ascii_uppercase().as_str(),
        "ON" | "1" | "YES" | "TRUE" | "Y"
    )
}

/// Where compiled shims are kept (the temp directory's `xval` without a user cache).
fn cache_root() -> PathBuf {
    super::user_cache_dir()
        .unwrap_or_else(|| std::env::temp_dir().join("xval"))
        .join("shims")
}

/// The cache key: everything that decides the compiled shim.
fn cache_key(tree: &Tree, cc: &OsString, flags: &[OsString]) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(SOURCE.as_bytes());
    field(cc.to_string_lossy().as_bytes());
    for f in flags {
        field(f.to_string_lossy().as_bytes());
    }
    // Every header the shim can see through the include directories.
    for d in &tree.include_dirs {
        let mut headers: Vec<PathBuf> = fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        headers.sort();
        for p in headers
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "h"))
        {
            field(p.to_string_lossy().as_bytes());
            field(&fs::read(p).unwrap_or_default());
        }
    }
    for p in &tree.libs.paths {
        field(p.to_string_lossy().as_bytes());
        let meta = fs::metadata(p).ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        field(&size.to_le_bytes());
        field(&mtime.to_le_bytes());
    }
    h.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The compiled shim for `tree`, from the cache or compiled now.
pub fn build(tree: &Tree, api: &Api) -> Result<Compiled, String> {
    let cc = compiler();
    let mut flags = compile_flags(tree, api);
    flags.extend(link_flags(tree));
    let key = cache_key(tree, &cc, &flags);
    let dir = cache_root().join(&key[..32]);
    let so = dir.join("libxval_shim.so");
    let compiler = cc.to_string_lossy().into_owned();
    if so.is_file() {
        return Ok(Compiled {
            path: so,
            cached: true,
            compile_s: 0.0,
            compiler,
        });
    }
    fs::create_dir_all(&dir)
        .map_err(|e| format!("cannot create the shim cache {}: {e}", dir.display()))?;
    let src = dir.join("shim.c");
    fs::write(&src, SOURCE).map_err(|e| format!("cannot write {}: {e}", src.display()))?;
    // Compile to a private name, then rename: a concurrent run never loads half a file.
    let tmp = dir.join(format!("libxval_shim.{}.so.tmp", std::process::id()));
    let t0 = Instant::now();
    let out = Command::new(&cc)
        .args(compile_flags(tree, api))
        .arg(&src)
        .arg("-o")
        .arg(&tmp)
        .args(link_flags(tree))
        .output()
        .map_err(|e| {
            format!(
                "cannot run the C compiler '{compiler}' ({}): {e}; install one or set $CC",
                if std::env::var_os("CC").is_some() {
                    "from $CC"
                } else {
                    "the default"
                }
            )
        })?;
    let compile_s = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        let _ = fs::remove_file(&tmp);
        return Err(format!(
            "compiling the shim against {} failed ({}): {}",
            tree.llama_h.display(),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        ));
    }
    fs::rename(&tmp, &so).map_err(|e| format!("cannot store {}: {e}", so.display()))?;
    Ok(Compiled {
        path: so,
        cached: false,
        compile_s,
        compiler,
    })
}

/// Check that the shim compiles against `tree`'s headers with `api`'s macros (no linking).
pub fn syntax_check(tree_includes: &[PathBuf], api: &Api) -> Result<(), String> {
    let mut cmd = Command::new(compiler());
    cmd.args([
        "-std=c11",
        "-fsyntax-only",
        "-Wall",
        "-Werror",
        "-x",
        "c",
        "-",
    ]);
    for d in tree_includes {
        cmd.arg("-I").arg(d);
    }
    cmd.args(api.macros());
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run the compiler: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(SOURCE.as_bytes())
            .map_err(|e| format!("cannot feed the compiler: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("compiler: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(tail(&String::from_utf8_lossy(&out.stderr), 30))
    }
}

/// The last `n` lines of a compiler's output.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
