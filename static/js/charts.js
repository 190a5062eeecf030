// Shared chart helpers of the run and compare pages (Plotly.js draws; data comes as JSON).
(function () {
  "use strict";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];

  // Exponential moving average; nulls stay null and do not reset the average.
  function ema(values, weight) {
    if (!weight) return values.slice();
    const out = new Array(values.length);
    let s = null;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v === null || v === undefined) { out[i] = null; continue; }
      s = s === null ? v : weight * s + (1 - weight) * v;
      out[i] = s;
    }
    return out;
  }

  function layout(extra) {
    return Object.assign({
      margin: {l: 56, r: 12, t: 8, b: 40},
      height: 280,
      hovermode: "x unified",
      hoverlabel: {namelength: -1},
      legend: {orientation: "h", y: -0.22, font: {size: 11}},
      font: {family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: "#1f2933"},
      paper_bgcolor: "#fff",
      plot_bgcolor: "#fff",
      xaxis: {gridcolor: "#e5e9f0", zeroline: false},
      yaxis: {gridcolor: "#e5e9f0", zeroline: false},
    }, extra || {});
  }

  const CONFIG = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"]};

  window.SB = {palette: PALETTE, color: (i) => PALETTE[i % PALETTE.length], ema, layout, config: CONFIG};
})();
