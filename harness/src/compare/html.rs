//! One comparison receipt as a self-contained HTML page (`harness compare --report FILE`):
//! the verdict and both sides' identities, the first divergence with its diagnosis, heatmaps of
//! every tap's metric-to-limit ratio (tap x layer and position x layer, chained and replayed),
//! the logit metrics per position and per decode step, and the violations.
//!
//! The page fetches nothing: Chart.js and its matrix plugin (vendored under
//! `harness/assets/report/vendor/`, see the README there), the page's own script and style are
//! inlined, and a Content-Security-Policy forbids every fetch. The text is HTML written here
//! ([`sections`]); the charts' numbers travel as one JSON blob ([`view::View`]) that the page's
//! script draws. When drawing finished `body` carries `data-rendered="ok"`, after any error
//! `"error"` with the message shown at the top, so a headless browser can check a page.

mod sections;
pub mod view;

use super::judge::judge;
use super::receipt::Receipt;

const TEMPLATE: &str = include_str!("../../assets/report/report.html");
const STYLE: &str = include_str!("../../assets/report/report.css");
const SCRIPT: &str = include_str!("../../assets/report/report.js");
const CHART_JS: &str = include_str!("../../assets/report/vendor/chart.umd.min.js");
const CHART_MATRIX: &str = include_str!("../../assets/report/vendor/chartjs-chart-matrix.min.js");

/// The page for `receipt`, judged by its own thresholds (as `harness gate` would).
pub fn render_html(receipt: &Receipt) -> String {
    let j = judge(receipt, &receipt.thresholds);
    let view = view::build(receipt, &j);
    let data = serde_json::to_string(&view).expect("the report's view serialises");
    let title = format!(
        "xval {} - {}",
        receipt.summary.verdict, receipt.provenance.model_path
    );
    fill(TEMPLATE, |key| match key {
        "title" => Some(sections::esc(&title)),
        "style" => Some(STYLE.to_string()),
        "header" => Some(sections::header(receipt)),
        "divergence" => Some(sections::divergence(receipt)),
        "violations" => Some(sections::violations(&j)),
        "decode_table" => Some(sections::decode_table(receipt, &view.steps)),
        "positions_table" => Some(sections::positions_table(&view.positions)),
        "data" => Some(script_json(&data)),
        "chart_js" => Some(inline_script(CHART_JS)),
        "chart_matrix" => Some(inline_script(CHART_MATRIX)),
        "script" => Some(inline_script(SCRIPT)),
        _ => None,
    })
}

/// Replace every `{{key}}` of `template` by `value(key)` in one pass: inserted text is never
/// scanned again, so a model path that happens to contain `{{data}}` stays as it is.
/// An unknown key is a bug in the template and panics (a test renders every template).
fn fill(template: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(template.len() + CHART_JS.len() + (1 << 16));
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .map(|e| start + e)
            .expect("the report template closes every {{");
        let key = &rest[start + 2..end];
        out.push_str(
            &value(key)
                .unwrap_or_else(|| panic!("the report template names unknown {{{{{key}}}}}")),
        );
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    out
}

/// JSON safe inside `<script type="application/json">`: a `<` only ever occurs inside a JSON
/// string, where `\u003c` means the same, so no `</script>` or `<!--` can end or bend the
/// element, and `JSON.parse` reads the receipt's text back unchanged.
fn script_json(json: &str) -> String {
    json.replace('<', "\\u003c")
}

/// Library code as it goes into a `<script>` element, without its `sourceMappingURL` comment:
/// a browser's developer tools would fetch that map relative to the report's own address, and
/// the page fetches nothing.
fn inline_script(js: &str) -> String {
    let body = match js.rfind("//# sourceMappingURL=") {
        Some(i) if !js[i..].trim_end().contains('\n') => &js[..i],
        _ => js,
    };
    assert!(
        !body.to_ascii_lowercase().contains("</script"),
        "inlined script contains </script"
    );
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_one_pass() {
        let out = fill("a {{x}} b {{y}}", |k| match k {
            "x" => Some("{{y}}".into()),
            "y" => Some("Y".into()),
            _ => None,
        });
        assert_eq!(out, "a {{y}} b Y");
    }

    #[test]
    #[should_panic(expected = "unknown")]
    fn fill_refuses_unknown_keys() {
        fill("{{nope}}", |_| None);
    }

    #[test]
    fn json_cannot_close_its_element() {
        let json = serde_json::to_string("</script><!-- <b>").unwrap();
        let safe = script_json(&json);
        assert!(!safe.contains('<'));
        let back: String = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, "</script><!-- <b>");
    }

    #[test]
    fn vendored_scripts_lose_their_source_maps_only() {
        for js in [CHART_JS, CHART_MATRIX] {
            let inlined = inline_script(js);
            assert!(!inlined.contains("sourceMappingURL"));
            assert!(inlined.len() + 64 > js.trim_end().len());
        }
        assert_eq!(inline_script("let a = 1;\n"), "let a = 1;\n");
    }

    #[test]
    fn the_template_names_only_known_keys() {
        let keys = [
            "title",
            "style",
            "header",
            "divergence",
            "violations",
            "decode_table",
            "positions_table",
            "data",
            "chart_js",
            "chart_matrix",
            "script",
        ];
        let out = fill(TEMPLATE, |k| {
            keys.contains(&k).then(|| format!("<!--{k}-->"))
        });
        for k in keys {
            assert!(out.contains(&format!("<!--{k}-->")), "{k} unused");
        }
        assert!(!STYLE.to_ascii_lowercase().contains("</style"));
    }
}
