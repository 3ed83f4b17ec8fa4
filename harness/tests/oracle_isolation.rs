//! Oracle isolation: the built-in oracle in its worker process gives the same bits as in-process,
//! and a crashing or hanging worker becomes a structured error (exit code 3 in the CLI), never a
//! dead or hung harness.
#![cfg(feature = "llama-cpp")]

mod oracle_common;

use std::process::Command;
use std::time::{Duration, Instant};

use oracle_common::{n_vocab, write_model, Weights};
use xval_cpp_sys::llama_cpp::LlamaCppOracle;
use xval_cpp_sys::{Error, IsolatedOracle, Limits, Oracle, OracleSettings};
use xval_engine::taps::TapFilter;
use xval_harness::commands::worker::FAULT_ENV;

const PROMPT: [u32; 5] = [1, 100, 200, 270, 5];

fn worker(fault: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.arg("__oracle-worker");
    match fault {
        Some(f) => cmd.env(FAULT_ENV, f),
        None => cmd.env_remove(FAULT_ENV),
    };
    cmd
}

fn limits(secs: u64) -> Limits {
    Limits {
        load: Duration::from_secs(120),
        request: Duration::from_secs(secs),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The test model in a temporary directory (kept while the oracles run), opened by the built-in
/// oracle in a worker process and in this one.
fn both_sides() -> (tempfile::TempDir, IsolatedOracle, LlamaCppOracle) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), Weights::Tq2Scaled, 21);
    let settings = OracleSettings::default();
    let iso = IsolatedOracle::spawn(worker(None), &path, &settings, limits(120)).unwrap();
    let local = LlamaCppOracle::load(&path, &settings).unwrap();
    (dir, iso, local)
}

/// A prompt with the last position the only output (`evaluate_last`, what `harness bench` times):
/// the worker gives the in-process bits; the logits are those of a full evaluation's last row
/// (this model's output is not F16, so one row computes as a batch does) and the KV cache left
/// behind is the same.
#[test]
fn evaluate_last_is_the_last_row_in_and_out_of_process() {
    let (_dir, mut iso, mut local) = both_sides();
    let a = iso.evaluate_last(&PROMPT).unwrap();
    let b = local.evaluate_last(&PROMPT).unwrap();
    assert_eq!(bits(&a.logits), bits(&b.logits));
    assert_eq!((a.start_pos, a.tokens.as_slice()), (4, &PROMPT[4..]));
    assert!(a.taps.is_empty());
    let step_after_last = local.decode_step(7, &TapFilter::none()).unwrap();
    let full = local.evaluate(&PROMPT, &TapFilter::none()).unwrap();
    assert_eq!(bits(&b.logits), bits(full.logits_row(4)));
    let step_after_full = local.decode_step(7, &TapFilter::none()).unwrap();
    assert_eq!(bits(&step_after_last.logits), bits(&step_after_full.logits));
    assert_eq!(
        bits(&iso.decode_step(7, &TapFilter::none()).unwrap().logits),
        bits(&step_after_full.logits)
    );
    // Checked like `evaluate`.
    assert!(iso.evaluate_last(&[]).unwrap_err().is_bad_input());
    assert!(local
        .evaluate_last(&[n_vocab() as u32])
        .unwrap_err()
        .is_bad_input());
}

#[test]
fn isolated_oracle_gives_the_in_process_bits() {
    let (_dir, mut iso, mut local) = both_sides();
    assert_eq!(iso.identity(), local.identity());
    assert_eq!(iso.model(), local.model());

    let a = iso.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    let b = local.evaluate(&PROMPT, &TapFilter::all()).unwrap();
    assert_eq!(bits(&a.logits), bits(&b.logits));
    assert_eq!(a.tap_sources, b.tap_sources);
    assert_eq!(a.graph, b.graph);
    for (x, y) in a.taps.iter().zip(&b.taps) {
        assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
        assert_eq!(bits(&x.data), bits(&y.data), "{}", x.name);
    }
    let s = iso.decode_step(7, &TapFilter::parse("l_out-*")).unwrap();
    let t = local.decode_step(7, &TapFilter::parse("l_out-*")).unwrap();
    assert_eq!(bits(&s.logits), bits(&t.logits));
    assert_eq!(s.taps.len(), 2);

    let ids = iso.tokenize("hello world", true, false).unwrap();
    assert_eq!(ids, local.tokenize("hello world", true, false).unwrap());
    assert_eq!(
        iso.detokenize(&ids, false, false).unwrap(),
        local.detokenize(&ids, false, false).unwrap()
    );
    assert_eq!(iso.token_piece(2, true).unwrap(), b"</s>");

    // Errors raised inside the worker come back as themselves, and the worker lives on.
    match iso.evaluate(&[n_vocab() as u32], &TapFilter::none()) {
        Err(e @ Error::InvalidRequest(_)) => assert!(e.is_bad_input()),
        other => panic!("expected an invalid request, got {other:?}"),
    }
    iso.evaluate(&PROMPT, &TapFilter::none()).unwrap();
}

#[test]
fn crashing_oracle_is_a_structured_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), Weights::Tq2, 22);
    let settings = OracleSettings::default();
    let mut o = IsolatedOracle::spawn(worker(Some("abort:evaluate")), &path, &settings, limits(60))
        .unwrap();
    // Tokenizing is fine; evaluating aborts the worker like a failed GGML_ASSERT would.
    o.tokenize("hello", true, false).unwrap();
    let e = o.evaluate(&PROMPT, &TapFilter::none()).unwrap_err();
    match &e {
        Error::WorkerCrashed {
            during,
            status,
            stderr_tail,
        } => {
            assert_eq!(during, "evaluate");
            assert!(status.contains("SIGABRT"), "{status}");
            // The worker echoes llama.cpp's log: the tail shows what it said last.
            assert!(stderr_tail.contains("llama"), "{stderr_tail}");
        }
        other => panic!("expected a crash report, got {other:?}"),
    }
    assert!(!e.is_bad_input());
    // Every later call reports the same failure instead of talking to a dead process.
    assert_eq!(o.tokenize("hello", true, false).unwrap_err(), e);

    // Dying during load, with an exit status.
    match IsolatedOracle::spawn(worker(Some("exit=7:load")), &path, &settings, limits(60)) {
        Err(Error::WorkerCrashed { during, status, .. }) => {
            assert_eq!(
                (during.as_str(), status.as_str()),
                ("load", "exited with status 7")
            )
        }
        Err(e) => panic!("expected a crash report, got {e}"),
        Ok(_) => panic!("the worker was told to die"),
    }
}

#[test]
fn hanging_oracle_is_killed_after_its_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), Weights::Tq2, 23);
    let mut o = IsolatedOracle::spawn(
        worker(Some("hang:evaluate")),
        &path,
        &OracleSettings::default(),
        limits(2),
    )
    .unwrap();
    let started = Instant::now();
    let e = o.evaluate(&PROMPT, &TapFilter::none()).unwrap_err();
    let took = started.elapsed();
    match &e {
        Error::WorkerTimedOut {
            during, after_s, ..
        } => {
            assert_eq!(during, "evaluate");
            assert!(*after_s >= 2.0, "{after_s}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(matches!(
        o.decode_step(1, &TapFilter::none()),
        Err(Error::WorkerTimedOut { .. })
    ));
}

#[test]
fn a_worker_that_is_not_one_is_a_protocol_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_model(dir.path(), Weights::Tq2, 24);
    // A program that prints text and exits successfully without speaking the protocol.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.arg("--version");
    match IsolatedOracle::spawn(cmd, &path, &OracleSettings::default(), limits(60)) {
        Err(Error::Protocol(m)) => assert!(m.contains("magic") || m.contains("load"), "{m}"),
        Err(e) => panic!("expected a protocol error, got {e}"),
        Ok(_) => panic!("`harness --version` is not an oracle"),
    }
    let missing = Command::new(dir.path().join("no-such-worker"));
    match IsolatedOracle::spawn(missing, &path, &OracleSettings::default(), limits(60)) {
        Err(Error::Protocol(m)) => assert!(m.contains("cannot start"), "{m}"),
        Err(e) => panic!("expected a start failure, got {e}"),
        Ok(_) => panic!("a missing program started"),
    }
}
