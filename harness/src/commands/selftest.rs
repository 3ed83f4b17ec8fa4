//! `harness selftest`: inject each fault of the catalogue into the engine, compare with the
//! oracle, and report what the comparison caught ([`crate::selftest`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use xval_engine::model::FaultKind;

use crate::engine_args::EngineArgs;
use crate::exit::Exit;
use crate::output::emit;
use crate::selftest::{
    describe, expected_signature, run_model, ModelPlan, SelftestReport, SELFTEST_PROMPT,
    SELFTEST_STEPS,
};
use crate::session::{Session, SessionRequest};

/// Seeded-fault self-test of the comparison.
#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// Models to test [default: every committed fixture, random and trained].
    pub models: Vec<PathBuf>,
    /// The oracle (as for compare): auto, builtin, golden, ggml-graph or dir:PATH.
    #[arg(long, default_value = "auto")]
    pub oracle: String,
    /// Only these faults (repeatable; `--list` names them) [default: all].
    #[arg(long, value_name = "NAME", value_parser = parse_kind)]
    pub fault: Vec<FaultKind>,
    /// The layer per-layer faults go to [default: the middle layer, n_layer / 2].
    #[arg(long)]
    pub layer: Option<usize>,
    /// The prompt compared.
    #[arg(long, short = 'p', default_value = SELFTEST_PROMPT)]
    pub prompt: String,
    /// Greedy decode steps after the prompt (the KV faults act there).
    #[arg(long, default_value_t = SELFTEST_STEPS)]
    pub steps: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Threshold file [default: ci/thresholds.toml as built in].
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// Seconds the oracle may take to load or to answer one request.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Where golden recordings and the default models live [default: the repository's
    /// fixtures/].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    /// Print the report as JSON (faults, detected_rate, localized_rate, diagnosis_rate,
    /// false_alarms, models, goals, passes).
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// List the faults and their expected diagnoses, then exit.
    #[arg(long)]
    pub list: bool,
}

fn parse_kind(s: &str) -> Result<FaultKind, String> {
    FaultKind::from_name(s).ok_or_else(|| {
        format!(
            "unknown fault '{s}' (one of {})",
            FaultKind::ALL.map(FaultKind::name).join(", ")
        )
    })
}

/// The committed fixtures: fixtures/models/*.gguf, then fixtures/trained/*.gguf.
fn default_models(fixtures: &std::path::Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in ["models", crate::fixtures::trained::TRAINED_DIR] {
        let d = fixtures.join(dir);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut v: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        v.sort();
        out.extend(v);
    }
    if out.is_empty() {
        anyhow::bail!(
            "no models given and none found under {}",
            fixtures.display()
        );
    }
    Ok(out)
}

pub fn run(args: &SelftestArgs) -> Result<Exit> {
    args.engine.single_kernel("selftest")?;
    if args.list {
        emit(|out| {
            writeln!(out, "{:<20} {:<13} what", "fault", "diagnosis")?;
            for k in FaultKind::ALL {
                writeln!(
                    out,
                    "{:<20} {:<13} {}{}",
                    k.name(),
                    expected_signature(k),
                    describe(k),
                    if k.layered() { " (per layer)" } else { "" }
                )?;
            }
            Ok(())
        })?;
        return Ok(Exit::Success);
    }
    // The repository's fixtures: the default models, and the golden recordings for
    // `--oracle golden`. A user's own models need no repository around them.
    let root = || -> Result<PathBuf> {
        let cwd = std::env::current_dir()?;
        Ok(crate::fixtures::find_repo_root(&cwd)?.join(crate::fixtures::FIXTURES_DIR))
    };
    let (fixtures, models) = match (&args.fixtures, args.models.is_empty()) {
        (Some(d), true) => (Some(d.clone()), default_models(d)?),
        (Some(d), false) => (Some(d.clone()), args.models.clone()),
        (None, true) => {
            let d = root()?;
            let models = default_models(&d)?;
            (Some(d), models)
        }
        (None, false) => (root().ok(), args.models.clone()),
    };
    let kinds: Vec<FaultKind> = if args.fault.is_empty() {
        FaultKind::ALL.to_vec()
    } else {
        args.fault.clone()
    };
    let (mut summaries, mut faults) = (Vec::new(), Vec::new());
    for model in &models {
        let mut session = Session::open(
            &SessionRequest {
                model,
                engine: &args.engine,
                oracle: &args.oracle,
                thresholds: args.thresholds.as_deref(),
                oracle_threads: 1,
                oracle_kv_type: None,
                timeout: args.timeout,
                oracle_reference_kernels: false,
                faults: Vec::new(),
                fixtures: fixtures.as_deref(),
                steps: args.steps,
            },
            |t| Ok(t.encode_complete(&args.prompt, true, true)?.len()),
        )?;
        let label = model.display().to_string();
        eprintln!("selftest: {label}");
        let (summary, results) = run_model(
            &mut session,
            &ModelPlan {
                label,
                prompt: &args.prompt,
                steps: args.steps,
                kinds: &kinds,
                layer: args.layer,
            },
        )?;
        summaries.push(summary);
        faults.extend(results);
    }
    let report = SelftestReport::new(summaries, faults);
    if let Some(p) = &args.out {
        crate::output::write_atomic(p, &serde_json::to_vec_pretty(&report)?)?;
    }
    emit(|out| {
        if args.json {
            serde_json::to_writer_pretty(&mut *out, &report)?;
            return writeln!(out);
        }
        render(&report, out)
    })?;
    Ok(if report.passes {
        Exit::Success
    } else {
        Exit::Divergence
    })
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

fn render(r: &SelftestReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut model = "";
    for f in &r.faults {
        if f.model != model {
            model = &f.model;
            writeln!(out, "\n{model}")?;
            writeln!(
                out,
                "  {:<22} {:<8} {:<34} {:<34} {:<6} diagnosis",
                "fault", "detected", "first divergence", "where the fault is", "local."
            )?;
        }
        let loc = |l: &Option<crate::selftest::Location>| {
            l.as_ref().map_or("-".to_string(), ToString::to_string)
        };
        if f.inert {
            writeln!(
                out,
                "  {:<22} inert: the fault changes nothing on this model",
                f.name
            )?;
            continue;
        }
        if f.below_noise {
            writeln!(
                out,
                "  {:<22} below noise: against the unmodified engine too it stays within the \
                 limits (worst metric/limit {:.3})",
                f.name,
                f.effect_ratio.unwrap_or(0.0)
            )?;
            continue;
        }
        writeln!(
            out,
            "  {:<22} {:<8} {:<34} {:<34} {:<6} {} ({})",
            f.name,
            yes(f.detected),
            loc(&f.first_divergence),
            loc(&f.expected_location),
            yes(f.localized),
            f.diagnosis.as_ref().map_or("-", |d| d.signature.as_str()),
            if f.diagnosis_correct {
                "right".to_string()
            } else {
                format!("expected {}", f.expected_diagnosis)
            }
        )?;
    }
    writeln!(out)?;
    let w = r
        .models
        .iter()
        .map(|m| m.model.len())
        .max()
        .unwrap_or(0)
        .max(5);
    writeln!(
        out,
        "{:<w$} {:<10} {:>6} {:>9} {:>10} {:>10} {:>12}",
        "model", "oracle", "faults", "detected", "localized", "diagnosis", "false alarm"
    )?;
    for m in &r.models {
        writeln!(
            out,
            "{:<w$} {:<10} {:>6} {:>8.0}% {:>9.0}% {:>9.0}% {:>12}",
            m.model,
            m.oracle,
            m.faults - m.inert - m.below_noise,
            m.detected_rate * 100.0,
            m.localized_rate * 100.0,
            m.diagnosis_rate * 100.0,
            if m.false_alarm {
                format!("YES ({})", m.clean_verdict)
            } else {
                "no".into()
            }
        )?;
    }
    writeln!(
        out,
        "\ntotal: detected {:.1}% (goal {:.0}%), localized {:.1}% (goal {:.0}%), diagnosis {:.1}% \
         (goal {:.0}%), false alarms {} (goal 0): {}",
        r.detected_rate * 100.0,
        r.goals.detected_rate * 100.0,
        r.localized_rate * 100.0,
        r.goals.localized_rate * 100.0,
        r.diagnosis_rate * 100.0,
        r.goals.diagnosis_rate * 100.0,
        r.false_alarms,
        if r.passes { "PASS" } else { "FAIL" }
    )
}
