//! `compare_core` end to end: the engine against itself under different numerics profiles on
//! the committed fixtures, fault injection, the receipt schema and snapshots.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use xval_engine::gguf::GgufFile;
use xval_engine::model::{Engine, Model};
use xval_engine::numerics::{Numerics, Profile};
use xval_engine::quant::i2_s::I2sLayout;
use xval_engine::sampling::argmax;
use xval_engine::taps::TapFilter;
use xval_engine::tokenizer::Tokenizer;
use xval_harness::compare::receipt::{
    schema, EngineIdentity, InputRecord, Mode, Provenance, SCHEMA_PATH,
};
use xval_harness::compare::thresholds::ThresholdKey;
use xval_harness::compare::verdict::Pairing;
use xval_harness::compare::{
    compare_core, CompareSettings, Receipt, Side, SideEval, Thresholds, Verdict,
};
use xval_harness::sides::{replay_all, run_twin};

const PROMPT: &str = "the cat sat";

fn model_path(name: &str) -> PathBuf {
    common::fixtures_dir().join("models").join(name)
}

fn engine(name: &str, profile: Profile) -> Engine {
    let file = Arc::new(GgufFile::open(model_path(name)).unwrap());
    let model = Model::load(file, I2sLayout::Block128).unwrap();
    Engine::new(model, Numerics::new(profile), 1).unwrap()
}

/// Evaluate `ids`, then feed `inputs` one token at a time through the KV cache.
fn run_side(e: &Engine, ids: &[u32], inputs: &[u32], taps: &TapFilter) -> Side {
    let tokenizer = Tokenizer::from_gguf(e.model().file()).unwrap();
    let mut cache = e.new_cache();
    let f = e.forward(&mut cache, ids, taps).unwrap();
    let prefill = SideEval {
        tokens: ids.to_vec(),
        n_vocab: f.n_vocab,
        logits: f.logits,
        taps: f.taps,
    };
    let decode = inputs
        .iter()
        .map(|&t| {
            let f = e.forward(&mut cache, &[t], taps).unwrap();
            SideEval {
                tokens: vec![t],
                n_vocab: f.n_vocab,
                logits: f.logits,
                taps: f.taps,
            }
        })
        .collect();
    Side {
        tokenized: tokenizer.encode(PROMPT, true, true).unwrap(),
        prefill,
        decode,
        ..Side::default()
    }
}

/// The oracle's greedy continuation of `ids` for `steps` tokens (the inputs of decode parity).
fn greedy(e: &Engine, ids: &[u32], steps: usize) -> Vec<u32> {
    let mut cache = e.new_cache();
    let none = TapFilter::none();
    let mut next = argmax(e.forward(&mut cache, ids, &none).unwrap().last_logits());
    let mut out = Vec::new();
    for _ in 0..steps {
        out.push(next);
        next = argmax(e.forward(&mut cache, &[next], &none).unwrap().last_logits());
    }
    out
}

struct Case {
    model: &'static str,
    engine: Profile,
    oracle: Profile,
    taps: &'static str,
    steps: usize,
}

fn sides(c: &Case) -> (Engine, Side, Side) {
    let (eng, orc) = (engine(c.model, c.engine), engine(c.model, c.oracle));
    let tokenizer = Tokenizer::from_gguf(orc.model().file()).unwrap();
    let ids = tokenizer.encode(PROMPT, true, true).unwrap();
    let inputs = greedy(&orc, &ids, c.steps);
    let filter = TapFilter::parse(c.taps);
    let mut e = run_side(&eng, &ids, &inputs, &filter);
    let o = run_side(&orc, &ids, &inputs, &filter);
    // Op-level replay: the engine's ops on the "oracle" engine's inputs, prompt and steps.
    let r = replay_all(&eng, (&e.prefill, &o.prefill), &e.decode, &o.decode);
    (e.replay, e.step_replays, e.replay_errors) = (r.prompt, r.steps, r.errors);
    // The noise twin the chained limits follow.
    e.twin = Some(run_twin(&eng, &ids, &inputs, &filter).unwrap());
    (eng, e, o)
}

fn settings(c: &Case, eng: &Engine) -> CompareSettings {
    let tokenizer = Tokenizer::from_gguf(eng.model().file()).unwrap();
    let format = eng.model().projection_type().name().to_string();
    let key = ThresholdKey {
        format,
        profile: c.engine,
        kv: eng.numerics().kv,
        backend: eng.backend(),
    };
    CompareSettings {
        mode: Mode::self_check(),
        provenance: Provenance::of_model(
            &model_path(c.model),
            eng.model(),
            &tokenizer,
            Provenance::model_sha256(eng.model().file()),
        ),
        engine: EngineIdentity::of_engine(eng, None),
        oracle: serde_json::json!({
            "kind": "engine",
            "version": env!("CARGO_PKG_VERSION"),
            "settings": { "profile": c.oracle.name() }
        }),
        pairing: Pairing::new(Numerics::new(c.engine), "engine", Numerics::new(c.oracle)),
        thresholds: Thresholds::default().resolve(&key),
        input: InputRecord {
            prompt: Some(PROMPT.into()),
            prompt_index: 0,
            prompts_total: 1,
            prompts_sha256: "0".repeat(64),
            shard: None,
        },
        top_k: 5,
        steps_requested: c.steps,
        created: "2025-01-01T00:00:00Z".into(),
        timings: BTreeMap::from([("engine_prefill".to_string(), 0.001)]),
    }
}

fn compare(c: &Case) -> Receipt {
    let (eng, e, o) = sides(c);
    compare_core(&e, &o, &settings(c, &eng)).unwrap()
}

#[test]
fn identical_settings_match_everywhere() {
    for model in [
        "bitnet-tq2_0.gguf",
        "bitnet-tq1_0.gguf",
        "bitnet-f32.gguf",
        "bitnet-b1.58-i2_s.gguf",
    ] {
        let profile = if model.contains("i2_s") {
            Profile::BitnetCpp
        } else {
            Profile::Ggml
        };
        let r = compare(&Case {
            model,
            engine: profile,
            oracle: profile,
            taps: "all",
            steps: 3,
        });
        assert!(r.pairing.matched);
        assert_eq!(r.summary.verdict, Verdict::Match, "{model}");
        assert!(r.summary.passes, "{model}");
        assert!(r.first_divergence.is_none(), "{model}");
        assert_eq!(r.decode.steps.len(), 3);
        assert_eq!(r.decode.first_divergent_step, None);
        assert!(r.tokenizer.matched);
        assert!(r.alignment.engine_only.is_empty() && r.alignment.oracle_only.is_empty());
        assert!(r.taps.len() >= 2 * 15 + 2, "{model}: {} taps", r.taps.len());
        for t in &r.taps {
            assert_eq!(t.worst.nmse, 0.0, "{model} {}", t.name);
            // Every op replayed on the other side's inputs, bit for bit.
            let replay = t
                .replay
                .as_ref()
                .unwrap_or_else(|| panic!("{} not replayed", t.name));
            assert!(replay.iter().all(|m| m.nmse == 0.0), "{model} {}", t.name);
        }
        // Every format's limits are measured (I2_S against the ggml-graph oracle).
        assert!(!r.thresholds.provisional, "{model}");
    }
}

#[test]
fn f32_against_ggml_is_drift_with_an_explanation() {
    let r = compare(&Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::F32,
        oracle: Profile::Ggml,
        taps: "all",
        steps: 4,
    });
    assert!(!r.pairing.matched);
    assert!(!r.summary.passes);
    // Q8_K activation noise: every position drifts, none is allowed to pass.
    for p in &r.positions {
        assert_eq!(
            p.verdict,
            Verdict::Drift,
            "position {}: {}",
            p.position,
            p.explanation
        );
        assert!(
            p.explanation.contains("numerics differ by design"),
            "{}",
            p.explanation
        );
        assert!(p.explanation.contains("Q8_K"), "{}", p.explanation);
        assert!(p.logits.top1_agree);
    }
    // The first divergence is the first quantized matmul output of layer 0 (the norm before it
    // is computed identically by both profiles).
    let fd = r.first_divergence.as_ref().unwrap();
    assert_eq!(fd.layer, Some(0));
    assert_eq!(fd.before.as_ref().unwrap().tap, "attn_norm-0");
    assert!(!fd.before.as_ref().unwrap().crossed);
    assert_eq!(fd.tap, "Qcur-0");
    // Measured noise of that size: NMSE of activation quantization (~8 bits).
    assert!(
        fd.metrics.nmse > 1e-7 && fd.metrics.nmse < 1e-2,
        "{:?}",
        fd.metrics
    );
    assert_eq!(r.decode.first_divergent_step, Some(0));
}

#[test]
fn fault_injection_names_the_tap_layer_and_position() {
    let c = Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::Ggml,
        oracle: Profile::Ggml,
        taps: "all",
        steps: 2,
    };
    let (eng, mut e, o) = sides(&c);
    // A faulty ffn_down in layer 1 at position 2 (scaled by 1.01: NMSE 1e-4): a real fault
    // shows in the forward pass and in the op's replay alike, so inject it into both.
    for taps in [&mut e.prefill.taps, &mut e.replay] {
        let tap = taps.iter_mut().find(|t| t.name == "ffn_down-1").unwrap();
        let n = tap.row_len();
        tap.data[2 * n..3 * n].iter_mut().for_each(|v| *v *= 1.01);
    }
    let r = compare_core(&e, &o, &settings(&c, &eng)).unwrap();
    let fd = r.first_divergence.as_ref().unwrap();
    assert_eq!(
        (fd.tap.as_str(), fd.layer, fd.position),
        ("ffn_down-1", Some(1), 2)
    );
    // Caught by the op-level replay: the chained limit (1e-3, set by rounding-flip cascades)
    // alone would let a 1% error through.
    assert_eq!(fd.crossing.metric, "replay_nmse");
    assert!(
        (fd.crossing.value - 1e-4).abs() < 1e-6,
        "{}",
        fd.crossing.value
    );
    assert!((fd.metrics.nmse - 1e-4).abs() < 1e-6, "{}", fd.metrics.nmse);
    assert_eq!(fd.before.as_ref().unwrap().tap, "ffn_sub_norm-1");
    assert_eq!(fd.after.as_ref().unwrap().tap, "l_out-1");
    // Only that position drifts (the logits are the untouched ones).
    let verdicts: Vec<Verdict> = r.positions.iter().map(|p| p.verdict).collect();
    let mut expect = vec![Verdict::Match; verdicts.len()];
    expect[2] = Verdict::Drift;
    assert_eq!(verdicts, expect);
    assert!(r.positions[2].explanation.contains("ffn_down-1"));
    assert!(!r.summary.passes);

    // NaN on one side fails at once: WRONG.
    let mut e2 = e.clone();
    let tap = e2
        .prefill
        .taps
        .iter_mut()
        .find(|t| t.name == "Kcur-0")
        .unwrap();
    tap.data[0] = f32::NAN;
    let r = compare_core(&e2, &o, &settings(&c, &eng)).unwrap();
    assert_eq!(r.positions[0].verdict, Verdict::Wrong);
    let fd = r.first_divergence.unwrap();
    assert_eq!((fd.tap.as_str(), fd.position), ("Kcur-0", 0));
    assert_eq!(fd.crossing.metric, "nonfinite_mismatch");
}

#[test]
fn mismatched_inputs_are_errors_not_panics() {
    let c = Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::Ggml,
        oracle: Profile::Ggml,
        taps: "l_out-*",
        steps: 1,
    };
    let (eng, e, o) = sides(&c);
    let s = settings(&c, &eng);
    let mut bad = e.clone();
    bad.prefill.logits.pop();
    let err = compare_core(&bad, &o, &s).unwrap_err().to_string();
    assert!(
        err.contains("engine prefill") && err.contains("logits"),
        "{err}"
    );
    let mut bad = e.clone();
    bad.prefill.tokens[1] += 1;
    let err = compare_core(&bad, &o, &s).unwrap_err().to_string();
    assert!(err.contains("different ids"), "{err}");
    let mut bad = e.clone();
    bad.decode[0].tokens = vec![0, 1];
    assert!(compare_core(&bad, &o, &s).is_err());
}

// ---- receipts: schema, round trip, snapshots ----

fn repo_file(rel: &str) -> PathBuf {
    common::repo_root().join(rel)
}

/// The committed schema equals the one the types generate (regenerate with
/// `XVAL_BLESS=1 cargo test -p xval-harness --test compare`).
#[test]
fn committed_schema_is_current() {
    let path = repo_file(SCHEMA_PATH);
    let generated = serde_json::to_string_pretty(&schema()).unwrap() + "\n";
    if std::env::var_os("XVAL_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with XVAL_BLESS=1)", path.display()));
    assert_eq!(
        committed,
        generated,
        "{} is stale: run with XVAL_BLESS=1",
        path.display()
    );
}

/// A validator for the subset of JSON Schema draft-07 the generated schema uses: type,
/// properties, required, additionalProperties, items, enum, const, $ref into definitions,
/// anyOf/oneOf/allOf, minimum. Returns the paths of violations.
fn validate(schema: &Value, root: &Value, v: &Value, at: &str, errs: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            errs.push(format!("{at}: not allowed"));
        }
        return;
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/definitions/").expect("local refs only");
        validate(&root["definitions"][name], root, v, at, errs);
    }
    if let Some(t) = obj.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let ok = types.iter().any(|t| match *t {
            "null" => v.is_null(),
            "boolean" => v.is_boolean(),
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "number" => v.is_number(),
            "integer" => v.is_u64() || v.is_i64(),
            _ => false,
        });
        if !ok {
            errs.push(format!("{at}: {v} is not of type {t}"));
            return;
        }
    }
    if let Some(e) = obj.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errs.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(c) = obj.get("const") {
        if c != v {
            errs.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let (Some(min), Some(x)) = (obj.get("minimum").and_then(Value::as_f64), v.as_f64()) {
        if x < min {
            errs.push(format!("{at}: {x} below {min}"));
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = obj.get(key).and_then(Value::as_array) {
            let n_ok = alts
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    validate(s, root, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            if n_ok == 0 || (key == "oneOf" && n_ok > 1) {
                errs.push(format!("{at}: {n_ok} alternatives of {key} match {v}"));
            }
        }
    }
    if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
        for s in all {
            validate(s, root, v, at, errs);
        }
    }
    if let Some(o) = v.as_object() {
        let props = obj.get("properties").and_then(Value::as_object);
        for req in obj
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !o.contains_key(req) {
                errs.push(format!("{at}: missing required {req}"));
            }
        }
        for (k, val) in o {
            let sub = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(s, root, val, &sub, errs),
                None => match obj.get("additionalProperties") {
                    Some(s) => validate(s, root, val, &sub, errs),
                    None if props.is_some() => errs.push(format!("{sub}: not in the schema")),
                    None => {}
                },
            }
        }
    }
    if let (Some(items), Some(a)) = (obj.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            validate(items, root, x, &format!("{at}[{i}]"), errs);
        }
    }
}

fn check_against_schema(receipt: &Value) -> Vec<String> {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_file(SCHEMA_PATH)).unwrap()).unwrap();
    let mut errs = Vec::new();
    validate(&schema, &schema, receipt, "$", &mut errs);
    errs
}

#[test]
fn receipts_validate_against_the_schema_and_round_trip() {
    let r = compare(&Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::F32,
        oracle: Profile::Ggml,
        taps: "all",
        steps: 2,
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("receipt.json");
    r.write_atomic(&path).unwrap();
    let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let errs = check_against_schema(&value);
    assert!(errs.is_empty(), "{errs:#?}");
    let back = Receipt::read(&path).unwrap();
    assert_eq!(back.positions.len(), r.positions.len());
    assert_eq!(
        back.first_divergence.as_ref().map(|f| &f.tap),
        r.first_divergence.as_ref().map(|f| &f.tap)
    );

    // The validator itself rejects what it should.
    let mut broken = value.clone();
    broken["positions"][0]["verdict"] = Value::String("FINE".into());
    broken["summary"].as_object_mut().unwrap().remove("passes");
    broken["taps"][0]["worst"]["nmse"] = Value::String("big".into());
    let errs = check_against_schema(&broken);
    assert_eq!(errs.len(), 3, "{errs:#?}");

    // Unreadable receipts name their file.
    std::fs::write(&path, b"{\"schema_version\": 1}").unwrap();
    let err = Receipt::read(&path).unwrap_err().to_string();
    assert!(
        err.contains("receipt.json") && err.contains("schema_version 1"),
        "{err}"
    );
    std::fs::write(&path, b"not json").unwrap();
    assert!(Receipt::read(&path)
        .unwrap_err()
        .to_string()
        .contains("not JSON"));
}

/// Round every float to 3 significant digits (snapshots hold structure and verdicts; numeric
/// bounds are asserted above and enforced by the gate).
fn bucket(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            let r: f64 = format!("{x:.2e}").parse().unwrap();
            *v = serde_json::json!(r);
        }
        Value::Array(a) => a.iter_mut().for_each(bucket),
        Value::Object(o) => o.values_mut().for_each(bucket),
        _ => {}
    }
}

fn snapshot_value(r: &Receipt) -> Value {
    let mut v = serde_json::to_value(r).unwrap();
    bucket(&mut v);
    v
}

const SNAPSHOT_TAPS: &str = "attn_norm-*,Qcur-*,ffn_down-*,l_out-*,result_output";

#[test]
fn snapshot_matching_profiles() {
    let r = compare(&Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::Ggml,
        oracle: Profile::Ggml,
        taps: SNAPSHOT_TAPS,
        steps: 2,
    });
    insta::assert_json_snapshot!("receipt_match", snapshot_value(&r), {
        ".created" => "[time]",
        ".provenance.model_path" => "[path]",
        ".engine.cpu_features" => "[machine]",
        ".engine.threads" => "[machine]",
        ".timings" => "[timings]",
    });
}

#[test]
fn snapshot_mismatched_profiles() {
    let r = compare(&Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::F32,
        oracle: Profile::Ggml,
        taps: SNAPSHOT_TAPS,
        steps: 2,
    });
    insta::assert_json_snapshot!("receipt_drift", snapshot_value(&r), {
        ".created" => "[time]",
        ".provenance.model_path" => "[path]",
        ".engine.cpu_features" => "[machine]",
        ".engine.threads" => "[machine]",
        ".timings" => "[timings]",
    });
}

// ---- harness gate ----

#[test]
fn gate_exit_codes_and_violation_table() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, r: &Receipt| {
        let p = dir.path().join(name);
        r.write_atomic(&p).unwrap();
        p
    };
    let base = Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::Ggml,
        oracle: Profile::Ggml,
        taps: "attn_norm-*,Qcur-*,l_out-*",
        steps: 2,
    };
    let ok = write("match.json", &compare(&base));
    let drift = write(
        "drift.json",
        &compare(&Case {
            engine: Profile::F32,
            ..base
        }),
    );
    let s = common::path_str;
    let o = common::harness(&["gate", s(&ok)]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert!(
        common::stdout(&o).starts_with("PASS "),
        "{}",
        common::stdout(&o)
    );

    let o = common::harness(&["gate", s(&ok), s(&drift)]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    assert!(out.contains("FAIL ") && out.contains("drift.json"), "{out}");
    assert!(out.contains("position 0") && out.contains("DRIFT"), "{out}");
    // Caught by the op-level replay, in the prompt and in the decode steps.
    assert!(out.contains("replay_nmse"), "{out}");
    assert!(out.contains("decode step 0"), "{out}");

    // Looser thresholds from a file let the drift through.
    let loose = dir.path().join("loose.toml");
    std::fs::write(
        &loose,
        "version = 2\n[chained]\nk = 10\nkl_k = 10\ninformative_max_nmse = 0.05\n\
         [[rule]]\nclass = \"*\"\nmax_replay_nmse = 1e-1\nchained_floor = 1e-1\n\
         [[rule]]\nclass = \"logits\"\nmax_replay_nmse = 1e-1\nchained_floor = 1e-1\n\
         kl_floor = 1e-1\ntop1_must_agree = true\n",
    )
    .unwrap();
    let o = common::harness(&["gate", s(&drift), "--thresholds", s(&loose)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        common::stdout(&o),
        common::stderr(&o)
    );
    assert!(common::stdout(&o).contains("loose.toml"));

    // Unreadable input: exit 2, naming the file.
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"{").unwrap();
    for bad in [garbage, dir.path().join("missing.json")] {
        let o = common::harness(&["gate", s(&ok), s(&bad)]);
        assert_eq!(o.status.code(), Some(2));
        assert!(
            common::stderr(&o).contains(s(&bad)),
            "{}",
            common::stderr(&o)
        );
    }
    let o = common::harness(&["gate", s(&ok), "--thresholds", s(&ok)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::stderr(&o).contains("match.json"),
        "{}",
        common::stderr(&o)
    );
}

// ---- report and plot ----

#[test]
fn table_markdown_and_plot_show_the_first_divergence() {
    let c = Case {
        model: "bitnet-tq2_0.gguf",
        engine: Profile::Ggml,
        oracle: Profile::Ggml,
        taps: "all",
        steps: 1,
    };
    let (eng, mut e, o) = sides(&c);
    // A faulty ffn_down-1 (1% too large) shows in the forward pass and in its replay.
    for taps in [&mut e.prefill.taps, &mut e.replay] {
        let tap = taps.iter_mut().find(|t| t.name == "ffn_down-1").unwrap();
        tap.data.iter_mut().for_each(|v| *v *= 1.01);
    }
    let r = compare_core(&e, &o, &settings(&c, &eng)).unwrap();
    use xval_harness::compare::{plot, report};
    let rows = report::layer_rows(&r);
    let labels: Vec<(Option<usize>, Verdict, bool)> = rows
        .iter()
        .map(|x| (x.layer, x.verdict, x.first_divergence))
        .collect();
    assert_eq!(
        labels,
        [
            (Some(0), Verdict::Match, false),
            (Some(1), Verdict::Drift, true),
            (None, Verdict::Match, false)
        ]
    );
    assert_eq!(rows[1].worst_tap, "ffn_down-1");
    let table = report::render_table(&r, false);
    assert!(!table.contains('\x1b'), "no colour when not asked");
    let marked: Vec<&str> = table.lines().filter(|l| l.starts_with(">>")).collect();
    assert_eq!(marked.len(), 1, "{table}");
    assert!(
        marked[0].contains("ffn_down-1") && marked[0].contains("DRIFT"),
        "{table}"
    );
    assert!(
        table.contains("first divergence: ffn_down-1 (layer 1) at position 0"),
        "{table}"
    );
    assert!(table.contains("WARNING: SELF-CHECK"), "{table}");
    assert!(report::render_table(&r, true).contains("\x1b[1;31m"));
    let md = report::render_markdown(&r);
    assert!(md.contains("| **>>** | 1 | `ffn_down-1` |"), "{md}");
    let svg = plot::render_svg(&r);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 3);
    for label in [
        "NMSE",
        "1 - cosine",
        "max |diff|",
        "layer",
        "first divergence",
        "NMSE limit",
    ] {
        assert!(svg.contains(label), "{label}");
    }
    if let Some(out) = std::env::var_os("XVAL_PLOT_OUT") {
        std::fs::write(out, &svg).unwrap();
        std::fs::write(std::env::var("XVAL_PLOT_OUT").unwrap() + ".txt", table).unwrap();
    }
}
