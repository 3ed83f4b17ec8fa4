//! SIGTERM or SIGINT during `harness compare`: no receipt is left behind, and the oracle worker
//! does not outlive the harness.
#![cfg(all(target_os = "linux", feature = "llama-cpp"))]

mod common;
use common::*;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The pids of live (not zombie) processes whose parent is `parent` and whose command line
/// contains `needle`, read from /proc.
fn children(parent: u32, needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok()));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent)
            && state != Some("Z")
            && String::from_utf8_lossy(&cmdline).contains(needle)
        {
            out.push(pid);
        }
    }
    out
}

/// Alive means /proc has it and it is not a zombie (a container's init may not reap).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| !r.starts_with('Z')),
        Err(_) => false,
    }
}

/// Send a signal through the shell's `kill` builtin (no procps needed).
fn kill(signal: &str, pid: u32) -> bool {
    Command::new("sh")
        .args(["-c", &format!("kill {signal} {pid}")])
        .status()
        .is_ok_and(|s| s.success())
}

fn interrupted_compare_leaves_nothing(signal: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixtures_dir().join("models/bitnet-tq2_0.gguf");
    let receipt = tmp.path().join("r.json");
    // The worker hangs in its first evaluation: an oracle busy in a long computation (a 30-layer
    // model), which does not read its pipe and so cannot notice that the harness is gone.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args(["compare", path_str(&model), "--out"])
        .arg(&receipt)
        .env("XVAL_ORACLE_WORKER_FAULT", "hang:evaluate")
        .current_dir(repo_root())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // A test runner started in the background by a shell inherits SIGINT ignored, and so would
    // the harness: give it the default disposition a user's terminal gives it.
    // SAFETY: signal() is async-signal-safe, as a pre_exec hook must be; no memory is touched.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let worker = loop {
        if let Some(&w) = children(child.id(), "__oracle-worker").first() {
            break w;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no oracle worker appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "compare ended early");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the worker load and enter its evaluation, then interrupt the harness.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "compare ended before the signal"
    );
    assert!(kill(signal, child.id()));
    let status = child.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let gone = Instant::now();
    while alive(worker) {
        if gone.elapsed() > Duration::from_secs(3) {
            // Do not leave a hung orphan behind a failing test.
            kill("-KILL", worker);
            panic!("the oracle worker {worker} outlived the harness by 3 s ({signal})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Receipts of prompts that finished before the signal may stand (each complete: written
    // to a temporary file and renamed); nothing else, and nothing half-written.
    for e in std::fs::read_dir(tmp.path()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "m.gguf" {
            continue;
        }
        let n = name
            .strip_prefix("r.")
            .and_then(|n| n.strip_suffix(".json"));
        assert!(
            n.is_some_and(|n| n.parse::<usize>().is_ok()),
            "left behind: {name}"
        );
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap();
        assert_eq!(v["schema_version"], 2, "{name}");
    }
    assert!(!Path::new(&receipt).exists());
}

#[test]
fn sigterm_during_compare_leaves_no_receipt_and_no_worker() {
    interrupted_compare_leaves_nothing("-TERM");
}

#[test]
fn sigint_during_compare_leaves_no_receipt_and_no_worker() {
    interrupted_compare_leaves_nothing("-INT");
}
