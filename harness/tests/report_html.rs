//! `harness compare --report FILE.html`: the page is one self-contained file (nothing fetched),
//! carries the receipt's verdict in its embedded data, escapes the receipt's text, and, opt-in
//! (`XVAL_TEST_CHROMIUM=1`), draws every chart in headless Chromium without an error.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use xval_harness::compare::html::render_html;
use xval_harness::compare::receipt::Diagnosis;
use xval_harness::compare::{apply_judgement, Receipt, Verdict};

/// The elements the page's script and a reader rely on.
const IDS: [&str; 13] = [
    "summary",
    "verdict",
    "render-errors",
    "divergence",
    "heat-tap-layer-chained",
    "heat-tap-layer-replay",
    "heat-position-layer-chained",
    "heat-position-layer-replay",
    "chart-logits",
    "chart-decode",
    "decode-table",
    "violations",
    "report-data",
];

/// The committed baseline receipt of the TQ2_0 fixture (a passing comparison).
fn baseline() -> Receipt {
    Receipt::read(&common::repo_root().join("receipts/bitnet-tq2_0.ggml.json")).unwrap()
}

/// `r` with the op `Qcur-1` made wrong by 1e-4 NMSE at every prompt position, as a 1% weight
/// scale error does, and judged again: a diverging receipt without running an oracle.
fn diverged(mut r: Receipt) -> Receipt {
    let t = r.taps.iter_mut().find(|t| t.name == "Qcur-1").unwrap();
    for m in t.positions.iter_mut().chain(t.replay.iter_mut().flatten()) {
        m.nmse = 1e-4;
    }
    apply_judgement(&mut r);
    r
}

/// Everything a browser could fetch: external sources, links, script loads, CSS imports.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for needle in [
        "src=\"http",
        "src='http",
        "src=\"//",
        "href=\"http",
        "href='http",
        "href=\"//",
        "fetch(",
        "import(",
        "xmlhttprequest",
        "@import",
        "url(http",
        "url(//",
        "url(\"http",
        "url('http",
        "url(\"//",
        "url('//",
        "sourcemappingurl",
        "<link",
    ] {
        assert!(!lower.contains(needle), "the page contains {needle}");
    }
    assert!(!lower.contains("<script src"), "every script is inlined");
    assert!(html.contains("Content-Security-Policy"));
    assert!(html.contains("default-src 'none'"));
}

/// The JSON the page's script reads.
fn embedded_data(html: &str) -> Value {
    let open = r#"<script type="application/json" id="report-data">"#;
    let start = html.find(open).expect("the data element") + open.len();
    let end = start
        + html[start..]
            .find("</script>")
            .expect("the data element closes");
    serde_json::from_str(&html[start..end]).expect("the embedded data is JSON")
}

fn verdict_json(v: Verdict) -> Value {
    serde_json::to_value(v).unwrap()
}

/// Every check that needs no browser.
fn check_page(html: &str, r: &Receipt) -> Value {
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_self_contained(html);
    for id in IDS {
        assert!(html.contains(&format!("id=\"{id}\"")), "no element #{id}");
    }
    assert!(html.contains("data-rendered=\"pending\""));
    assert!(html.contains("window.onerror"));
    let data = embedded_data(html);
    assert_eq!(data["verdict"], verdict_json(r.summary.verdict));
    assert_eq!(data["passes"], Value::Bool(r.summary.passes));
    assert_eq!(
        data["positions"].as_array().unwrap().len(),
        r.positions.len()
    );
    assert_eq!(
        data["steps"].as_array().unwrap().len(),
        r.decode.steps.len()
    );
    let columns = data["position_layer"]["columns"].as_array().unwrap().len();
    assert_eq!(columns, r.positions.len() + r.decode.steps.len());
    assert!(html.contains(&format!(
        r#"<span id="verdict" class="verdict v-{0}">{0}</span>"#,
        r.summary.verdict.name()
    )));
    data
}

/// The largest ratio of `tap`'s cells in the tap x layer map (`chained` or `replay`).
fn tap_ratio(data: &Value, which: &str, tap: &str) -> f64 {
    data["tap_layer"][which]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tap"] == tap)
        .map(|c| match &c["ratio"] {
            Value::Number(n) => n.as_f64().unwrap(),
            Value::String(s) if s == "inf" => f64::INFINITY,
            v => panic!("unexpected ratio {v}"),
        })
        .fold(0.0, f64::max)
}

#[test]
fn every_committed_receipt_renders_a_self_contained_page() {
    let dir = common::repo_root().join("receipts");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let r = Receipt::read(&path).unwrap();
        let html = render_html(&r);
        let data = check_page(&html, &r);
        // A passing receipt: no cell past its limit, nothing to list.
        if r.summary.passes {
            assert!(html.contains("id=\"no-violations\""), "{}", path.display());
            for which in ["chained", "replay"] {
                for c in data["tap_layer"][which].as_array().unwrap() {
                    let ratio = c["ratio"].as_f64().unwrap_or(0.0);
                    assert!(ratio <= 1.0, "{} {which} {c}", path.display());
                }
            }
        }
        n += 1;
    }
    assert!(n >= 5, "only {n} receipts in {}", dir.display());
}

#[test]
fn a_diverging_receipt_shows_where_and_how() {
    let r = diverged(baseline());
    assert!(!r.summary.passes);
    let html = render_html(&r);
    let data = check_page(&html, &r);
    let first = r.first_divergence.as_ref().unwrap();
    assert_eq!(first.tap, "Qcur-1");
    assert!(html.contains(r#"id="first-divergence-line"><code class="tap">Qcur-1</code>"#));
    assert!(!html.contains("id=\"no-divergence\""));
    assert!(html.contains("<table class=\"violations\">"));
    // The op replay crossed by 1e6 (1e-4 against 1e-10); its neighbours did not.
    assert!(tap_ratio(&data, "replay", "Qcur-1") > 1e5);
    assert!(tap_ratio(&data, "replay", "Kcur-1") < 1.0);
    let layer_1 = data["position_layer"]["replay"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["y"] == 1 && c["step"].is_null())
        .count();
    assert_eq!(layer_1, r.positions.len());
}

#[test]
fn the_receipts_text_is_escaped_and_the_diagnosis_shown() {
    let hostile = r#"</script><script>alert("x")</script><b onclick='y'>&{{data}}"#;
    let mut r = diverged(baseline());
    r.provenance.model_path = hostile.into();
    r.input.prompt = Some(hostile.into());
    r.summary.diagnosis = Some(Diagnosis {
        signature: "scale".into(),
        cause: format!("a weight scale <{hostile}>"),
        evidence: "ratio 1.01 & flat".into(),
    });
    let html = render_html(&r);
    assert_self_contained(&html);
    assert!(!html.contains(hostile));
    assert!(!html.contains("alert(\"x\")</script>"));
    assert!(html.contains("&lt;/script&gt;&lt;script&gt;alert(&quot;x&quot;)"));
    // One-pass template: the path's `{{data}}` stays text, the data element stays whole.
    assert!(html.contains("&amp;{{data}}"));
    assert_eq!(html.matches("id=\"report-data\"").count(), 1);
    assert!(html.contains(r#"<div id="diagnosis"><h3>Diagnosis: <code>scale</code></h3>"#));
    assert!(html.contains("ratio 1.01 &amp; flat"));
    assert_eq!(
        embedded_data(&html)["verdict"],
        verdict_json(r.summary.verdict)
    );
}

#[cfg(feature = "llama-cpp")]
mod cli {
    use super::*;

    fn compare(args: &[&str], report: &Path) -> (i32, Receipt, String) {
        let receipt = report.with_extension("json");
        let mut all = vec![
            "compare",
            "fixtures/models/bitnet-tq2_0.gguf",
            "--steps",
            "4",
        ];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--out",
            common::path_str(&receipt),
            "--report",
            common::path_str(report),
        ]);
        let o = common::harness(&all);
        let code = o.status.code().unwrap();
        let r = Receipt::read(&receipt)
            .unwrap_or_else(|e| panic!("{e}\n{}\n{}", common::stdout(&o), common::stderr(&o)));
        (code, r, std::fs::read_to_string(report).unwrap())
    }

    #[test]
    fn compare_writes_the_report_for_a_match_and_a_fault() {
        let dir = tempfile::tempdir().unwrap();
        let (code, r, html) = compare(&[], &dir.path().join("match.html"));
        assert_eq!(code, 0);
        check_page(&html, &r);
        assert!(html.contains("id=\"no-divergence\""));

        let (code, r, html) = compare(
            &["--fault", "scale:blk.1.attn_q.weight:1.01"],
            &dir.path().join("fault.html"),
        );
        assert_eq!(code, 1);
        let data = check_page(&html, &r);
        assert_ne!(data["verdict"], verdict_json(Verdict::Match));
        assert!(html.contains(r#"<code class="tap">Qcur-1</code>"#));
        assert!(html.contains("faults injected into the engine on purpose"));
        assert!(tap_ratio(&data, "replay", "Qcur-1") > 1.0);
    }
}

/// The Chromium binary: `$XVAL_CHROMIUM`, else `chromium` (Debian's package).
fn chromium() -> String {
    std::env::var("XVAL_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// The page's DOM after its scripts ran, from headless Chromium.
fn rendered_dom(page: &Path, profile: &Path) -> String {
    let url = format!("file://{}", page.display());
    let o = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
            "--dump-dom",
            &url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", chromium()));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn chromium_draws_every_chart_without_an_error() {
    if std::env::var("XVAL_TEST_CHROMIUM").as_deref() != Ok("1") {
        eprintln!("skipped: set XVAL_TEST_CHROMIUM=1 to load the report in headless Chromium");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pages: [(&str, Receipt); 2] = [("match", baseline()), ("diverged", diverged(baseline()))];
    for (name, r) in pages {
        let page: PathBuf = dir.path().join(format!("{name}.html"));
        std::fs::write(&page, render_html(&r)).unwrap();
        let dom = rendered_dom(&page, &dir.path().join(format!("profile-{name}")));
        assert!(
            dom.contains(r#"data-rendered="ok""#),
            "{name}: not rendered:\n{}",
            &dom[..dom.len().min(4000)]
        );
        assert!(
            dom.contains(r#"data-charts="6""#),
            "{name}: not every chart drawn"
        );
        assert!(
            dom.contains(r#"<div id="render-errors" class="errors" hidden="">"#),
            "{name}: the error box is showing"
        );
        assert!(!dom.contains("<pre>"), "{name}: an error was written");
        for id in IDS
            .iter()
            .filter(|i| i.starts_with("heat-") || i.starts_with("chart-"))
        {
            // Chart.js sizes the canvases it draws on.
            let at = dom
                .find(&format!(r#"<canvas id="{id}""#))
                .unwrap_or_else(|| {
                    panic!("{name}: no canvas #{id}");
                });
            let tag = &dom[at..at + dom[at..].find('>').unwrap()];
            assert!(
                tag.contains("width=\"") && tag.contains("height=\""),
                "{name}: {tag}"
            );
        }
    }
}
