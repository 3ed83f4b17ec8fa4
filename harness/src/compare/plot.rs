//! Per-layer agreement as a hand-written SVG: one line per metric (worst NMSE, worst
//! 1-cosine, worst max|diff| of each layer's taps), log-scale y axis, axis labels, legend, and
//! the first divergence's layer marked. No plotting dependency.

use std::fmt::Write;

use super::receipt::Receipt;
use super::report::layer_rows;

/// Values at or below this are drawn at this height (a log axis has no zero); the axis says so.
pub const LOG_FLOOR: f64 = 1e-12;

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 180.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG document.
pub fn render_svg(r: &Receipt) -> String {
    let rows = layer_rows(r);
    let series: [(&str, &str, Vec<f64>); 3] = [
        ("NMSE", "#d62728", rows.iter().map(|x| x.nmse).collect()),
        (
            "1 - cosine",
            "#1f77b4",
            rows.iter().map(|x| 1.0 - x.cosine).collect(),
        ),
        (
            "max |diff|",
            "#2ca02c",
            rows.iter().map(|x| x.max_abs_diff).collect(),
        ),
    ];
    let clamp = |v: f64| {
        if v.is_finite() && v > LOG_FLOOR {
            v
        } else if v.is_finite() {
            LOG_FLOOR
        } else {
            f64::NAN
        }
    };
    // Decade range covering every finite value and the thresholds' NMSE limit.
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for (_, _, v) in &series {
        for &x in v {
            let x = clamp(x);
            if x.is_finite() {
                lo = lo.min(x.log10().floor());
                hi = hi.max(x.log10().ceil());
            }
        }
    }
    let limits: Vec<f64> = r.taps.iter().map(|t| t.limit.max_nmse).collect();
    for &l in &limits {
        if l > 0.0 {
            lo = lo.min(l.log10().floor());
            hi = hi.max(l.log10().ceil());
        }
    }
    if !lo.is_finite() {
        (lo, hi) = (-12.0, 0.0);
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let n = rows.len().max(1);
    let x_of = |i: usize| {
        LEFT + if n == 1 {
            pw / 2.0
        } else {
            pw * i as f64 / (n - 1) as f64
        }
    };
    let y_of = |v: f64| TOP + ph * (hi - v.log10()) / (hi - lo);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let title = format!(
        "Per-layer agreement: engine {} vs {} oracle ({})",
        r.engine.profile, r.pairing.oracle_kind, r.summary.verdict
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        LEFT + pw / 2.0,
        esc(&title)
    );
    // Decade grid and y labels.
    let mut d = lo as i64;
    while d as f64 <= hi {
        let y = y_of(10f64.powi(d as i32));
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##,
            LEFT + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">1e{d}</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
        d += 1;
    }
    // NMSE limits as dashed lines.
    let mut drawn: Vec<f64> = Vec::new();
    for &l in &limits {
        if l > 0.0 && !drawn.contains(&l) {
            drawn.push(l);
            let y = y_of(l);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d62728" stroke-dasharray="5,4" stroke-opacity="0.6"/>"##,
                LEFT + pw
            );
        }
    }
    // First divergence marker.
    if let Some(i) = rows.iter().position(|r| r.first_divergence) {
        let x = x_of(i);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ff7f0e" stroke-width="2" stroke-dasharray="2,3"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#ff7f0e">first divergence</text>"##,
            x + 4.0,
            TOP + 12.0
        );
    }
    // Axes and x labels.
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    for (i, row) in rows.iter().enumerate() {
        let x = x_of(i);
        let label = row.layer.map_or("final".into(), |l| l.to_string());
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="black"/>"#,
            TOP + ph,
            TOP + ph + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            TOP + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">layer</text>"#,
        LEFT + pw / 2.0,
        H - 14.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20 {:.1}) rotate(-90)" text-anchor="middle">worst value over the layer's taps (log; &lt;= {LOG_FLOOR:e} drawn at it)</text>"#,
        TOP + ph / 2.0
    );
    // Series.
    for (k, (name, color, v)) in series.iter().enumerate() {
        let pts: Vec<String> = v
            .iter()
            .enumerate()
            .filter_map(|(i, &x)| {
                let x2 = clamp(x);
                x2.is_finite()
                    .then(|| format!("{:.1},{:.1}", x_of(i), y_of(x2)))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            pts.join(" ")
        );
        for p in &pts {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(s, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let ly = TOP + 10.0 + 20.0 * k as f64;
        let lx = LEFT + pw + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/>"#,
            lx + 24.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            lx + 30.0,
            ly + 4.0,
            esc(name)
        );
    }
    let ly = TOP + 10.0 + 20.0 * series.len() as f64;
    let lx = LEFT + pw + 16.0;
    let _ = writeln!(
        s,
        r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#d62728" stroke-dasharray="5,4" stroke-opacity="0.6"/>"##,
        lx + 24.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}">NMSE limit</text>"#,
        lx + 30.0,
        ly + 4.0
    );
    s.push_str("</svg>\n");
    s
}
