//! `harness compare` end to end against the built-in llama.cpp oracle: exit codes, the receipt
//! it writes and the gate on that receipt (the text a person reads, errors included, is
//! snapshotted in cli_text.rs).
#![cfg(feature = "llama-cpp")]

use std::path::PathBuf;
use std::process::{Command, Output};

use xval_harness::compare::{Receipt, Verdict};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn matching_profile_passes_and_the_gate_agrees() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "bitnet-tq2_0.gguf",
        "bitnet-tq1_0.gguf",
        "bitnet-f32.gguf",
        "bitnet-b1.58-i2_s.gguf",
    ] {
        let out_path = dir.path().join(format!("{name}.json"));
        let plot = dir.path().join(format!("{name}.svg"));
        let o = harness(&[
            "compare",
            &fixture(name),
            "--steps",
            "4",
            "--out",
            out_path.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ]);
        let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(0), "{name}\n{stdout}\n{stderr}");
        assert!(stdout.contains("(passes)"), "{stdout}");
        assert!(stdout.contains("first divergence: none"), "{stdout}");
        assert!(stdout.contains("op NMSE"), "{stdout}");
        let r = Receipt::read(&out_path).unwrap();
        assert!(r.summary.passes);
        assert!(r.pairing.matched);
        // auto: llama.cpp itself for `bitnet`, the ggml-graph oracle for `bitnet-b1.58`.
        let kind = if name.contains("b1.58") {
            "ggml-graph"
        } else {
            "builtin"
        };
        assert_eq!(r.oracle["kind"], kind);
        assert_eq!(r.decode.steps.len(), 4);
        // Every op replayed on the oracle's inputs sits at summation-order noise.
        for t in &r.taps {
            let replay = t.replay.as_ref().expect("replayed");
            assert!(replay.iter().all(|m| m.nmse <= 1e-10), "{name} {}", t.name);
        }
        assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
        let g = harness(&["gate", out_path.to_str().unwrap()]);
        assert_eq!(g.status.code(), Some(0), "{}", text(&g.stdout));
    }
}

#[test]
fn mismatched_profile_is_drift_with_an_explanation_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("r.json");
    let o = harness(&[
        "compare",
        &fixture("bitnet-tq2_0.gguf"),
        "--profile",
        "f32",
        "--steps",
        "2",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("numerics differ by design"), "{stdout}");
    assert!(
        stdout.contains("first divergence: Qcur-0 (layer 0) at position 0: replay_nmse"),
        "{stdout}"
    );
    let r = Receipt::read(&out_path).unwrap();
    assert!(r.positions.iter().all(|p| p.verdict != Verdict::Match));
    let g = harness(&["gate", out_path.to_str().unwrap()]);
    assert_eq!(g.status.code(), Some(1));
    // Markdown for a PR comment.
    let o = harness(&[
        "compare",
        &fixture("bitnet-tq2_0.gguf"),
        "--profile",
        "f32",
        "--steps",
        "1",
        "--format",
        "markdown",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).starts_with("### xval comparison"));
}

/// Round every float to 3 significant digits (receipt snapshots check structure, verdicts and
/// the first divergence exactly, numbers only to that precision; `harness gate` enforces bounds).
fn bucket(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            *v = serde_json::json!(format!("{x:.2e}").parse::<f64>().unwrap());
        }
        Value::Array(a) => a.iter_mut().for_each(bucket),
        Value::Object(o) => o.values_mut().for_each(bucket),
        _ => {}
    }
}

/// The parts of a receipt a reviewer reads: verdicts, first divergence, decode parity, and
/// per tap the worst chained and replayed metrics (not every position's numbers).
fn compact(r: &serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    let taps: Vec<_> = r["taps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let worst_replay = t["replay"]
                .as_array()
                .map(|v| v.iter().map(|m| m["nmse"].as_f64().unwrap()).fold(0.0, f64::max));
            json!({"name": t["name"], "worst_nmse": t["worst"]["nmse"], "worst_position": t["worst_position"], "worst_replay_nmse": worst_replay})
        })
        .collect();
    let positions: Vec<_> = r["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!([p["token"], p["verdict"], p["logits"]["kl"]]))
        .collect();
    let steps: Vec<_> = r["decode"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            json!([
                s["input_token"],
                s["engine_token"],
                s["oracle_token"],
                s["verdict"]
            ])
        })
        .collect();
    let mut v = json!({
        "summary": r["summary"],
        "pairing_matched": r["pairing"]["matched"],
        "thresholds_provisional": r["thresholds"]["provisional"],
        "tokenizer_matched": r["tokenizer"]["matched"],
        "first_divergence": r["first_divergence"],
        "positions": positions,
        "decode": steps,
        "taps": taps,
    });
    bucket(&mut v);
    v
}

#[test]
fn receipt_snapshots_of_every_fixture_and_profile() {
    for name in [
        "bitnet-tq2_0",
        "bitnet-tq1_0",
        "bitnet-f32",
        "bitnet-b1.58-i2_s",
    ] {
        for profile in ["ggml", "f32", "bitnet-cpp"] {
            let o = harness(&[
                "compare",
                &fixture(&format!("{name}.gguf")),
                "--profile",
                profile,
                "--steps",
                "4",
                "--format",
                "json",
            ]);
            // The profile that mirrors the oracle (ggml, for llama.cpp and the ggml-graph
            // oracle) passes; the others differ by design and exit 1.
            let want = if profile == "ggml" { 0 } else { 1 };
            assert_eq!(
                o.status.code(),
                Some(want),
                "{name} {profile}: {}",
                text(&o.stderr)
            );
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(r["summary"]["passes"], want == 0, "{name} {profile}");
            insta::assert_json_snapshot!(format!("{name}.{profile}.scalar"), compact(&r));
        }
    }
}

#[test]
fn shards_cover_the_prompt_list_and_the_gate_judges_them_together() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("p.txt");
    std::fs::write(&prompts, "the cat sat on\nHi, World! 42\nA short one.\n").unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for k in ["1/2", "2/2"] {
        let o = harness(&[
            "compare",
            &fixture("bitnet-tq2_0.gguf"),
            "--prompts",
            &p("p.txt"),
            "--shard",
            k,
            "--steps",
            "2",
            "--out",
            &p("r.json"),
        ]);
        assert_eq!(o.status.code(), Some(0), "{k}: {}", text(&o.stderr));
    }
    // Shard 1/2 ran prompts 0 and 2, shard 2/2 prompt 1: receipts named by the list index.
    let r0 = Receipt::read(&dir.path().join("r.0.json")).unwrap();
    assert_eq!(r0.input.prompts_total, 3);
    assert_eq!(r0.input.shard.map(|s| (s.index, s.of)), Some((1, 2)));
    assert_eq!(
        Receipt::read(&dir.path().join("r.1.json"))
            .unwrap()
            .input
            .prompt_index,
        1
    );
    let all = [p("r.0.json"), p("r.1.json"), p("r.2.json")];
    let g = harness(&["gate", &all[0], &all[1], &all[2]]);
    assert_eq!(g.status.code(), Some(0), "{}", text(&g.stdout));
    // One shard's receipts alone: the list is incomplete.
    let g = harness(&["gate", &all[0], &all[2]]);
    assert_eq!(g.status.code(), Some(1), "{}", text(&g.stdout));
    let out = text(&g.stdout);
    assert!(
        out.contains("INCOMPLETE") && out.contains("1 of 3 prompts"),
        "{out}"
    );
    // A receipt given twice.
    let g = harness(&["gate", &all[0], &all[1], &all[2], &all[1]]);
    assert_eq!(g.status.code(), Some(1));
    assert!(text(&g.stdout).contains("DUPLICATE"));
    // --shard without --prompts is refused by the command line (exit 2).
    let o = harness(&["compare", &fixture("bitnet-tq2_0.gguf"), "--shard", "1/2"]);
    assert_eq!(o.status.code(), Some(2));
}

/// `--kernel avx2` (and `avx512` and `amx` where this CPU has them) computes the same numbers as the
/// scalar reference (its ternary kernels are bit-exact; its float dots sum in another f64
/// order, which changes no f32 on this fixture), and the receipt says which set ran.
#[test]
fn the_avx2_kernels_give_the_scalar_receipt_and_say_so() {
    use xval_engine::quant::kernels::Kernel;
    let dir = tempfile::tempdir().unwrap();
    let mut receipts = Vec::new();
    let mut kernels = vec!["scalar", "avx2"];
    if Kernel::Avx512.available() {
        kernels.push("avx512");
    }
    if Kernel::Amx.available() {
        kernels.push("amx");
    }
    for kernel in kernels {
        let path = dir.path().join(format!("{kernel}.json"));
        // The bitnet-cpp profile: the I2_S x int8 dot that has an AVX2 kernel.
        let out = harness(&[
            "compare",
            &fixture("bitnet-i2_s.gguf"),
            "--profile",
            "bitnet-cpp",
            "--kernel",
            kernel,
            "--oracle",
            "golden",
            "--prompt",
            "the cat sat on",
            "--out",
            path.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let mut r: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(r["engine"]["kernels"], serde_json::json!([kernel]));
        for volatile in ["created", "timings", "engine"] {
            r.as_object_mut().unwrap().remove(volatile);
        }
        receipts.push(r);
    }
    for r in &receipts[1..] {
        assert!(receipts[0] == *r, "the kernel sets disagree");
    }
}

/// `--kernel all`: the scalar comparison plus every other set this CPU runs, each against the
/// oracle and against scalar, in one receipt; a set whose own comparison fails fails the
/// receipt in `gate` (violation `KERNEL`); the commands that run one engine refuse `all`.
#[test]
fn kernel_all_compares_every_set_in_one_receipt() {
    use xval_engine::quant::kernels::Kernel;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.json");
    // The F32 fixture's float dots and the TQ2_0 fixture's ternary ones.
    for model in ["bitnet-f32.gguf", "bitnet-tq2_0.gguf"] {
        let out = harness(&[
            "compare",
            &fixture(model),
            "--kernel",
            "all",
            "--out",
            path.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let r = Receipt::read(&path).unwrap();
        let others: Vec<Kernel> = Kernel::ALL
            .into_iter()
            .filter(|k| *k != Kernel::Scalar && k.available())
            .collect();
        assert!(
            !others.is_empty(),
            "this machine has no SIMD set to compare"
        );
        let mut all = vec![Kernel::Scalar];
        all.extend(&others);
        assert_eq!(r.engine.kernels, all);
        assert_eq!(r.kernel_sets.len(), others.len());
        for k in &r.kernel_sets {
            assert!(k.passes, "{model}: {:?}", k);
            let p = &k.vs_scalar;
            assert!(p.values > 10_000, "{model}: {p:?}");
            // These fixtures give every set the scalar numbers exactly.
            assert_eq!(p.identical, p.values, "{model}: {p:?}");
        }
        assert!(text(&out.stdout).contains("bit-identical"));
        assert!(
            r.timings.keys().any(|k| k.ends_with(']')),
            "{:?}",
            r.timings
        );
    }
    // A set that failed its own comparison fails the receipt.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["kernel_sets"][0]["passes"] = serde_json::json!(false);
    v["kernel_sets"][0]["verdict"] = serde_json::json!("WRONG");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let g = harness(&["gate", bad.to_str().unwrap()]);
    assert_eq!(g.status.code(), Some(1), "{}", text(&g.stdout));
    assert!(text(&g.stdout).contains("KERNEL"), "{}", text(&g.stdout));
    // One engine, one set.
    for cmd in ["run", "stats", "bench", "selftest"] {
        let model = fixture("bitnet-tq2_0.gguf");
        let mut args = vec![cmd, &model, "--kernel", "all"];
        if cmd == "run" {
            args.extend(["--prompt", "the cat"]);
        }
        let o = harness(&args);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("--kernel all"), "{cmd}");
    }
}

/// An I2_S model reaches the built-in llama.cpp through a transcoded copy in the scratch
/// directory (`XVAL_SCRATCH_DIR`, else `/dev/shm` where memory allows, else the temporary
/// directory): the comparison passes, and the copy is gone as soon as the oracle has loaded it,
/// so even a worker that dies after loading (no destructor runs) leaves nothing behind; a
/// scratch directory that does not exist is named in the error.
#[test]
fn the_transcoded_copy_lives_in_the_scratch_directory_only_while_it_loads() {
    let scratch = tempfile::tempdir().unwrap();
    let receipt = scratch.path().join("receipt.json");
    let run = |dir: &std::path::Path, fault: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_harness"));
        if let Some(f) = fault {
            c.env("XVAL_ORACLE_WORKER_FAULT", f);
        }
        c.args([
            "compare",
            &fixture("bitnet-i2_s.gguf"),
            "--oracle",
            "builtin",
            "--steps",
            "2",
            "--out",
            receipt.to_str().unwrap(),
        ])
        .env("XVAL_SCRATCH_DIR", dir)
        .output()
        .unwrap()
    };
    let copies = tempfile::tempdir().unwrap();
    let left = || std::fs::read_dir(copies.path()).unwrap().count();
    let out = run(copies.path(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Receipt = serde_json::from_slice(&std::fs::read(&receipt).unwrap()).unwrap();
    let oracle = serde_json::to_string(&r.oracle).unwrap();
    assert!(oracle.contains("transcoded"), "{oracle}");
    assert_eq!(left(), 0);
    // The worker aborts at its first evaluation, after the load.
    let out = run(copies.path(), Some("abort:evaluate"));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(left(), 0, "a killed worker left its copy behind");
    let missing = scratch.path().join("no-such-dir");
    let out = run(&missing, None);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no-such-dir"),
        "{}",
        text(&out.stderr)
    );
}
