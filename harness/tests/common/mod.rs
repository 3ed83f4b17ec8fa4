//! Helpers shared by the CLI tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xval_engine::gguf::{GgufFile, GgufWriter, Value};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ sits in the repository root")
        .to_path_buf()
}

pub fn fixtures_dir() -> PathBuf {
    repo_root().join("fixtures")
}

/// Run the harness binary from the repository root.
pub fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("the harness binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Rewrite a GGUF file: `meta` may change or drop metadata, `add` adds a key, `keep` drops
/// tensors.
pub fn rewrite_gguf(
    src: &Path,
    dst: &Path,
    meta: impl Fn(&str, &Value) -> Option<Value>,
    add: Option<(String, Value)>,
    keep: impl Fn(&str) -> bool,
) {
    let f = GgufFile::open(src).unwrap();
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if let Some(v) = meta(k, v) {
            w.set(k.clone(), v).unwrap();
        }
    }
    if let Some((k, v)) = add {
        w.set(k, v).unwrap();
    }
    for t in f.tensors() {
        if keep(&t.info.name) {
            w.add_tensor(
                t.info.name.clone(),
                t.info.ty,
                &t.info.shape,
                t.data.to_vec(),
            )
            .unwrap();
        }
    }
    w.write_file(dst).unwrap();
}
