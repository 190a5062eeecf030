// The compare page: the chosen metric of every run overlaid with the run's override markers and the
// target, and per-arm small multiples, all smoothed by one control with the run page's EMA (SB.ema of
// charts.js). The page data is server/compare.py Comparison.chart_json. htmx swaps #compare-view when
// the form changes; each new view is drawn once.
const SB = window.SB;
const YRANGE = [0, 1.05];
const MARKER_Y = 1.02;

function colorOf(doc) {
  const index = new Map(doc.runs.map((r, i) => [r, i]));
  return (run) => SB.color(index.get(run));
}

function hover(run, weight) {
  return weight ? `${run}: %{y:.4f} (raw %{customdata:.4f})<extra></extra>` : `${run}: %{y:.4f}<extra></extra>`;
}

function lines(list, weight, color, width) {
  return list.map((t) => ({
    type: "scatter", mode: t.steps.length <= 60 ? "lines+markers" : "lines", name: t.run, legendgroup: t.run,
    x: t.steps, y: SB.ema(t.values, weight), customdata: t.values, marker: {size: 5},
    line: {color: color(t.run), width}, connectgaps: true, hovertemplate: hover(t.run, weight),
  }));
}

// Each applied command: a dotted line in its run's colour, and a triangle on top carrying its label.
function markerShapes(markers, color) {
  return markers.map((m) => ({type: "line", xref: "x", yref: "paper", x0: m.step, x1: m.step, y0: 0, y1: 1,
    line: {color: color(m.run), width: 1, dash: "dot"}}));
}

function markerTraces(markers, color, runs) {
  return runs.map((run) => {
    const own = markers.filter((m) => m.run === run);
    return {
      type: "scatter", mode: "markers", name: `${run} overrides`, legendgroup: run, showlegend: false,
      x: own.map((m) => m.step), y: own.map(() => MARKER_Y), text: own.map((m) => m.label),
      marker: {symbol: "triangle-down", size: 10, color: color(run)},
      hovertemplate: `${run}: %{text} (step %{x})<extra></extra>`,
    };
  }).filter((t) => t.x.length);
}

function targetLine(target) {
  return {type: "line", xref: "paper", yref: "y", x0: 0, x1: 1, y0: target, y1: target,
    line: {color: "#52606d", width: 1, dash: "dash"}};
}

function draw(view) {
  const el = view.querySelector("#compare-data");
  if (!el || el.dataset.drawn) return;
  el.dataset.drawn = "1";
  const doc = JSON.parse(el.textContent);
  const color = colorOf(doc);
  view.querySelectorAll("[data-run-index]").forEach((s) => { s.style.background = SB.color(Number(s.dataset.runIndex)); });

  const overlay = view.querySelector("#chart-overlay");
  const small = [...view.querySelectorAll(".small-plot")];
  const markers = markerTraces(doc.markers, color, doc.runs);
  let weight = doc.smoothing;
  const overlayData = () => [...lines(doc.overlay, weight, color, 1.8), ...markers];
  Plotly.newPlot(overlay, overlayData(), SB.layout({
    height: 360, uirevision: "compare", showlegend: true, xaxis: {title: {text: "step"}},
    yaxis: {range: YRANGE}, shapes: [targetLine(doc.target), ...markerShapes(doc.markers, color)],
  }), SB.config);
  for (const div of small) {
    const arm = div.dataset.arm;
    const own = doc.markers.filter((m) => m.arm === arm);
    Plotly.newPlot(div, lines(doc.arms[arm] || [], weight, color, 1.4), SB.layout({
      height: 200, uirevision: "compare", showlegend: false, margin: {l: 40, r: 8, t: 6, b: 30},
      xaxis: {}, yaxis: {range: YRANGE}, shapes: markerShapes(own, color),
    }), Object.assign({}, SB.config, {displayModeBar: false}));
  }

  // Dragging the slider re-smooths here at once; letting go submits the form (the table of steps to the
  // target is computed on the server, on the same points with the same EMA) and puts it in the URL.
  const slider = view.querySelector("input[name=smoothing]");
  const shown = view.querySelector("#smoothing-value");
  if (!slider) return;
  slider.addEventListener("input", () => {
    weight = Number(slider.value);
    if (shown) shown.textContent = weight.toFixed(2);
    const update = (list) => ({y: list.map((t) => SB.ema(t.values, weight)), hovertemplate: list.map((t) => hover(t.run, weight))});
    Plotly.restyle(overlay, update(doc.overlay), doc.overlay.map((_, i) => i));
    for (const div of small) {
      const list = doc.arms[div.dataset.arm] || [];
      if (list.length) Plotly.restyle(div, update(list), list.map((_, i) => i));
    }
  });
}

draw(document);
document.body.addEventListener("htmx:load", (e) => {
  const view = e.detail.elt.closest ? e.detail.elt.closest("#compare-view") || e.detail.elt : e.detail.elt;
  draw(view);
});
