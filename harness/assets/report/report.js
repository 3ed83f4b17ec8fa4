// Draws the report's charts from the JSON in #report-data (built by harness/src/compare/html/
// view.rs): four heatmaps of metric/limit ratios and two line charts of logit metrics. The
// ratios are computed by the harness with the judge's own limits; nothing here re-judges.
(function () {
  "use strict";

  // Receipts write non-finite metrics as "inf", "-inf", "nan" (JSON has no such numbers).
  function num(v) {
    if (v === null || v === undefined) return null;
    if (typeof v === "number") return v;
    if (v === "inf") return Infinity;
    if (v === "-inf") return -Infinity;
    return NaN;
  }

  function fmt(v) {
    v = num(v);
    if (v === null) return "-";
    if (Number.isNaN(v)) return "nan";
    if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
    if (v === 0) return "0";
    return v.toExponential(3);
  }

  // A short label for a ratio inside a cell.
  function shortRatio(r) {
    if (r === null) return "n/j";
    if (!Number.isFinite(r)) return "inf";
    if (r === 0) return "0";
    if (r >= 0.01 && r < 100) return r.toPrecision(2);
    return r.toExponential(0).replace("e+", "e");
  }

  // The colour scale, in log10(ratio): blues up to the limit (darker: nearer to it), reds past
  // it (darker: further). Stops chosen to span op replays (1e-4 of their limit is typical) and
  // chained metrics (1e-2 .. 1) alike.
  var BELOW = [[-8, [247, 251, 255]], [-6, [222, 235, 247]], [-4, [158, 202, 225]],
    [-2, [66, 146, 198]], [0, [8, 48, 107]]];
  var ABOVE = [[0, [252, 187, 161]], [2, [251, 106, 74]], [4, [203, 24, 29]], [6, [103, 0, 13]]];
  var UNJUDGED = "rgb(208, 208, 208)";

  function interpolate(stops, t) {
    if (t <= stops[0][0]) return stops[0][1];
    for (var i = 1; i < stops.length; i++) {
      if (t <= stops[i][0]) {
        var a = stops[i - 1], b = stops[i], f = (t - a[0]) / (b[0] - a[0]);
        return a[1].map(function (x, k) { return Math.round(x + f * (b[1][k] - x)); });
      }
    }
    return stops[stops.length - 1][1];
  }

  function rgbOf(r) {
    if (r === null) return [208, 208, 208];
    if (!Number.isFinite(r)) return ABOVE[ABOVE.length - 1][1];
    if (r <= 0) return BELOW[0][1];
    var t = Math.log10(r);
    return t <= 0 ? interpolate(BELOW, t) : interpolate(ABOVE, t);
  }

  function colour(r) {
    if (r === null) return UNJUDGED;
    return "rgb(" + rgbOf(r).join(", ") + ")";
  }

  function dark(r) {
    var c = rgbOf(r);
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 140;
  }

  function where(c) {
    return c.step === null || c.step === undefined
      ? "position " + c.position
      : "decode step " + c.step + " (position " + c.position + ")";
  }

  function legend(el) {
    var stops = [];
    for (var t = -8; t <= 6; t++) stops.push(t);
    stops.forEach(function (t) {
      var stop = document.createElement("div");
      stop.className = "stop";
      var sw = document.createElement("div");
      sw.className = "swatch";
      sw.style.background = colour(Math.pow(10, t));
      var label = document.createElement("span");
      label.textContent = t === 0 ? "1" : "1e" + t;
      stop.appendChild(sw);
      stop.appendChild(label);
      el.appendChild(stop);
    });
    var gap = document.createElement("div");
    gap.className = "gap";
    el.appendChild(gap);
    var nj = document.createElement("div");
    nj.className = "stop";
    var sw = document.createElement("div");
    sw.className = "swatch";
    sw.style.background = UNJUDGED;
    var label = document.createElement("span");
    label.textContent = "not judged";
    nj.appendChild(sw);
    nj.appendChild(label);
    el.appendChild(nj);
  }

  // Writes each cell's ratio into it where the cell is wide enough to read.
  var cellLabels = {
    id: "xvalCellLabels",
    afterDatasetsDraw: function (chart) {
      var meta = chart.getDatasetMeta(0);
      var ctx = chart.ctx;
      ctx.save();
      ctx.font = "11px system-ui, sans-serif";
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      meta.data.forEach(function (el, i) {
        if (el.width < 30 || el.height < 12) return;
        var cell = chart.data.datasets[0].data[i].cell;
        var r = num(cell.ratio);
        ctx.fillStyle = r !== null && dark(r) ? "#fff" : "#1b1f23";
        ctx.fillText(shortRatio(r), el.x + el.width / 2, el.y + el.height / 2);
      });
      ctx.restore();
    }
  };

  function heatmap(id, map, which, axes, rowHeight) {
    var canvas = document.getElementById(id);
    var cells = map[which];
    var nx = map.columns.length, ny = map.rows.length;
    // Deep models get shorter rows so a map stays about a screen high.
    var height = ny > 12 ? Math.min(rowHeight, 22) : rowHeight;
    canvas.parentElement.style.height = Math.max(120, ny * height + 70) + "px";
    if (cells.length === 0) {
      var p = document.createElement("p");
      p.className = "note";
      p.textContent = which === "replay" ? "No op was replayed." : "No taps were compared.";
      canvas.parentElement.replaceWith(p);
      return null;
    }
    return new Chart(canvas, {
      type: "matrix",
      data: {
        datasets: [{
          label: which,
          data: cells.map(function (c) {
            return { x: map.columns[c.x], y: map.rows[c.y], cell: c };
          }),
          backgroundColor: function (ctx) {
            return ctx.raw ? colour(num(ctx.raw.cell.ratio)) : UNJUDGED;
          },
          borderColor: function (ctx) {
            var r = ctx.raw ? num(ctx.raw.cell.ratio) : null;
            return r !== null && r > 1 ? "#000" : "rgba(255, 255, 255, 0.9)";
          },
          borderWidth: function (ctx) {
            var r = ctx.raw ? num(ctx.raw.cell.ratio) : null;
            return r !== null && r > 1 ? 2 : 1;
          },
          width: function (ctx) {
            var a = ctx.chart.chartArea;
            return a ? Math.max(1, a.width / nx - 1) : 0;
          },
          height: function (ctx) {
            var a = ctx.chart.chartArea;
            return a ? Math.max(1, a.height / ny - 1) : 0;
          }
        }]
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              title: function (items) {
                var c = items[0].raw.cell;
                return c.tap + " at " + where(c);
              },
              label: function (item) {
                var c = item.raw.cell;
                var r = num(c.ratio);
                if (r === null) return c.metric + " " + fmt(c.value) + ": not judged here";
                return "ratio " + fmt(r) + " = " + c.metric + " " + fmt(c.value) +
                  " / limit " + fmt(c.limit) + (r > 1 ? "  (crossed)" : "");
              }
            }
          }
        },
        scales: {
          x: {
            type: "category", labels: map.columns, offset: true,
            grid: { display: false }, title: { display: true, text: axes[0] },
            // Long prompts: Chart.js leaves out labels that would overlap.
            ticks: { autoSkip: true, maxRotation: 0 }
          },
          y: {
            type: "category", labels: map.rows, offset: true, reverse: false,
            grid: { display: false }, title: { display: true, text: axes[1] },
            ticks: { autoSkip: false }
          }
        }
      },
      plugins: [cellLabels]
    });
  }

  // Log-axis tick labels at powers of ten only (`1e-6`), the default prints every digit.
  function decade(v) {
    var l = Math.log10(v), n = Math.round(l);
    if (Math.abs(l - n) > 1e-9) return "";
    return n === 0 ? "1" : "1e" + n;
  }

  var VERDICT_COLOUR = { "MATCH": "#1a7f37", "DRIFT": "#9a6700", "TIE-FLIP": "#0969da", "WRONG": "#cf222e" };

  // Log axes cannot show zeros or non-finite values: they are left out (the tables list them).
  function positive(v) {
    v = num(v);
    return v !== null && Number.isFinite(v) && v > 0 ? v : null;
  }

  function logitChart(id, places, limit, xTitle) {
    var canvas = document.getElementById(id);
    if (places.length === 0) {
      var p = document.createElement("p");
      p.className = "note";
      p.textContent = "Nothing to draw.";
      canvas.parentElement.replaceWith(p);
      return null;
    }
    var labels = places.map(function (p) { return p.label; });
    var verdictColours = places.map(function (p) { return VERDICT_COLOUR[p.verdict] || "#57606a"; });
    var datasets = [
      {
        label: "KL(oracle || engine)", data: places.map(function (p) { return positive(p.kl); }),
        borderColor: "#cf222e", backgroundColor: "#cf222e", pointBackgroundColor: verdictColours,
        pointBorderColor: verdictColours, pointRadius: 4, borderWidth: 2
      },
      {
        label: "logit NMSE", data: places.map(function (p) { return positive(p.nmse); }),
        borderColor: "#8250df", backgroundColor: "#8250df", pointRadius: 2, borderWidth: 1.5
      },
      {
        label: "max |logit diff|", data: places.map(function (p) { return positive(p.max_abs_diff); }),
        borderColor: "#1a7f37", backgroundColor: "#1a7f37", pointRadius: 2, borderWidth: 1.5
      }
    ];
    if (places.some(function (p) { return p.twin_kl !== null; })) {
      datasets.push({
        label: "noise twin KL", data: places.map(function (p) { return positive(p.twin_kl); }),
        borderColor: "#8c959f", backgroundColor: "#8c959f", borderDash: [4, 3], pointRadius: 0,
        borderWidth: 1.5
      });
    }
    if (limit.informative) {
      datasets.push({
        label: "KL limit", data: places.map(function () { return num(limit.max_kl); }),
        borderColor: "#1b1f23", backgroundColor: "#1b1f23", borderDash: [8, 4], pointRadius: 0,
        borderWidth: 1.5
      });
    }
    return new Chart(canvas, {
      type: "line",
      data: { labels: labels, datasets: datasets },
      options: {
        animation: false,
        maintainAspectRatio: false,
        spanGaps: true,
        interaction: { mode: "index", intersect: false },
        plugins: {
          tooltip: {
            callbacks: {
              label: function (item) {
                return item.dataset.label + ": " + fmt(item.raw);
              },
              footer: function (items) {
                var p = places[items[0].dataIndex];
                return p.verdict + "; top-1 engine " + p.top1_engine + ", oracle " + p.top1_oracle +
                  " (" + (p.top1_agree ? "agree" : "differ") + ")";
              }
            }
          }
        },
        scales: {
          x: { title: { display: true, text: xTitle } },
          y: {
            type: "logarithmic", title: { display: true, text: "value (log)" },
            ticks: { callback: decade }
          }
        }
      }
    });
  }

  function draw() {
    if (typeof Chart === "undefined") throw new Error("Chart.js did not load");
    var data = JSON.parse(document.getElementById("report-data").textContent);
    document.querySelectorAll("[data-legend]").forEach(legend);
    var charts = [
      heatmap("heat-tap-layer-chained", data.tap_layer, "chained", ["layer", "tap"], 22),
      heatmap("heat-tap-layer-replay", data.tap_layer, "replay", ["layer", "tap"], 22),
      heatmap("heat-position-layer-chained", data.position_layer, "chained",
        ["prompt position, then decode step", "layer"], 34),
      heatmap("heat-position-layer-replay", data.position_layer, "replay",
        ["prompt position, then decode step", "layer"], 34),
      logitChart("chart-logits", data.positions, data.kl_limit, "prompt position"),
      logitChart("chart-decode", data.steps, data.kl_limit, "decode step")
    ];
    document.body.dataset.charts = String(charts.filter(function (c) { return c !== null; }).length);
  }

  try {
    draw();
    if (document.body.dataset.rendered !== "error") document.body.dataset.rendered = "ok";
  } catch (e) {
    window.onerror(String(e), "report.js", 0, 0, e);
  }
})();
