//! What a person sees: the CLI's text output (exit code, stdout and stderr together) snapshotted
//! with insta-cmd for the help texts, the comparison table and markdown, the gate's table and
//! the error messages, with machine paths filtered out. The README's example table is checked
//! against what the command prints today.
#![cfg(feature = "llama-cpp")]

mod common;

use std::process::Command;

use insta_cmd::assert_cmd_snapshot;

fn harness() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
    c.current_dir(common::repo_root());
    // No progress bars or colours: the output is not a terminal anyway; keep it so.
    c.env_remove("BITNET_CPP_DIR");
    c
}

/// Filters for machine-specific text: the repository path and temporary directories.
fn filters() -> Vec<(String, String)> {
    let root = common::repo_root().display().to_string();
    vec![
        (regex_escape(&root), "[REPO]".into()),
        (r"/tmp/\.tmp[A-Za-z0-9]+".into(), "[TMP]".into()),
    ]
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

macro_rules! snap {
    ($name:expr, $cmd:expr) => {{
        let f = filters();
        let refs: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        insta::with_settings!({ filters => refs, prepend_module_to_snapshot => false }, {
            assert_cmd_snapshot!($name, $cmd);
        });
    }};
}

#[test]
fn help_texts() {
    snap!("help", harness().arg("--help"));
    for cmd in ["compare", "gate", "run", "oracle", "inspect", "fixtures"] {
        snap!(format!("help-{cmd}"), harness().args([cmd, "--help"]));
    }
}

/// `harness compare` on the TQ2_0 fixture with `extra` arguments.
fn compare_tq2(extra: &[&str]) -> Command {
    let mut c = harness();
    c.args(["compare", "fixtures/models/bitnet-tq2_0.gguf"])
        .args(extra);
    c
}

#[test]
fn compare_table_matching_profile() {
    snap!("compare-table-tq2_0", compare_tq2(&[]));
}

#[test]
fn compare_table_and_markdown_mismatched_profile() {
    snap!(
        "compare-table-tq2_0-f32",
        compare_tq2(&["--profile", "f32", "--steps", "2"])
    );
    snap!(
        "compare-markdown-tq2_0-f32",
        compare_tq2(&["--profile", "f32", "--steps", "1", "--format", "markdown"])
    );
}

#[test]
fn gate_violation_table() {
    let dir = tempfile::tempdir().unwrap();
    let receipt = dir.path().join("drift.json");
    let o = compare_tq2(&[
        "--profile",
        "f32",
        "--steps",
        "1",
        "--prompt",
        "the cat",
        "--out",
        common::path_str(&receipt),
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    // Run from the receipt's directory: the table shows the name only.
    snap!(
        "gate-violations",
        harness()
            .current_dir(dir.path())
            .args(["gate", "drift.json"])
    );
}

#[test]
fn error_messages_and_exit_codes() {
    snap!(
        "error-missing-model",
        harness().args(["compare", "no/such/model.gguf"])
    );
    snap!(
        "error-bad-oracle",
        harness().args([
            "compare",
            "fixtures/models/bitnet-tq2_0.gguf",
            "--oracle",
            "nonsense"
        ])
    );
    snap!(
        "error-backend-cuda",
        harness().args([
            "compare",
            "fixtures/models/bitnet-tq2_0.gguf",
            "--backend",
            "cuda"
        ])
    );
    snap!(
        "error-backend-contradicts-kernel",
        harness().args([
            "compare",
            "fixtures/models/bitnet-tq2_0.gguf",
            "--backend",
            "scalar",
            "--kernel",
            "avx2"
        ])
    );
    snap!(
        "error-missing-tree",
        compare_tq2(&["--oracle", "dir:/no/such/tree"])
    );
    snap!(
        "error-builtin-relu2",
        harness().args([
            "compare",
            "fixtures/models/bitnet-b1.58-i2_s.gguf",
            "--oracle",
            "builtin"
        ])
    );
    snap!(
        "error-inspect-not-gguf",
        harness().args(["inspect", "README.md"])
    );
    snap!("error-gate-not-json", harness().args(["gate", "README.md"]));
}

/// The README's example table is the text `harness compare` prints on the bundled fixture.
#[test]
fn readme_example_table_is_what_compare_prints() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let start = readme
        .find("```\nverdict ")
        .expect("README has the example table block")
        + 4;
    let block = &readme[start..start + readme[start..].find("```").unwrap()];
    let o = compare_tq2(&[]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(
        common::stdout(&o),
        block,
        "the README's example table is stale: paste the command's output into it"
    );
}
