// The compare page: the chosen metric of every run overlaid, and per-arm small multiples.
(function () {
  "use strict";
  const el = document.getElementById("compare-data");
  if (!el) return;
  const doc = JSON.parse(el.textContent);
  const runs = doc.overlay.map((t) => t.run);
  const color = (run) => SB.color(runs.indexOf(run));
  const yrange = [0, 1.02];

  function traces(list) {
    return list.map((t) => ({
      type: "scatter", mode: "lines", name: t.run, legendgroup: t.run, x: t.steps, y: t.values,
      line: {color: color(t.run), width: 1.6}, connectgaps: true, hovertemplate: `${t.run}: %{y:.6g}<extra></extra>`,
    }));
  }

  Plotly.newPlot("chart-overlay", traces(doc.overlay), SB.layout({
    height: 340, uirevision: "compare", xaxis: {title: {text: "step"}, gridcolor: "#e5e9f0"},
    yaxis: {range: yrange, gridcolor: "#e5e9f0"},
  }), SB.config);

  document.querySelectorAll(".small-plot").forEach((div) => {
    const list = doc.arms[div.dataset.arm] || [];
    Plotly.newPlot(div, traces(list), SB.layout({
      height: 220, showlegend: false, margin: {l: 40, r: 8, t: 6, b: 30},
      xaxis: {gridcolor: "#e5e9f0"}, yaxis: {range: yrange, gridcolor: "#e5e9f0"},
    }), SB.config);
  });
})();
