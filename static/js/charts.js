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

  // The page's colours (static/css/app.css variables: light or dark, static/js/theme.js).
  function colours() {
    const css = getComputedStyle(document.documentElement);
    const v = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    return {fg: v("--fg", "#1f2933"), card: v("--card", "#fff"), grid: v("--grid", "#e5e9f0"),
      line: v("--line", "#d9dee5"), hover: v("--hover-bg", "rgba(255,255,255,.85)"),
      heatNone: v("--heat-none", "#dfe3e8")};
  }

  function layout(extra) {
    const c = colours();
    const out = Object.assign({
      margin: {l: 56, r: 12, t: 8, b: 40},
      height: 280,
      hovermode: "x unified",
      // A smaller, see-through hover box: on a small chart the default covered half of it.
      hoverlabel: {namelength: -1, font: {size: 11}, bgcolor: c.hover},
      legend: {orientation: "h", y: -0.22, font: {size: 11}},
      font: {family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: c.fg},
      paper_bgcolor: c.card,
      plot_bgcolor: c.card,
      xaxis: {zeroline: false},
      yaxis: {zeroline: false},
    }, extra || {});
    // Every axis gets the theme's grid, whatever the caller's axis settings.
    for (const key of Object.keys(out)) {
      if (/^[xy]axis\d*$/.test(key)) out[key] = Object.assign({zeroline: false}, out[key], {gridcolor: c.grid});
    }
    return out;
  }

  // The theme changed: every chart on the page takes its colours, nothing else redrawn.
  document.addEventListener("sb:theme", () => {
    if (!window.Plotly) return;
    const c = colours();
    for (const el of document.querySelectorAll(".js-plotly-plot")) {
      if (!el.layout) continue;
      const update = {"paper_bgcolor": c.card, "plot_bgcolor": c.card, "font.color": c.fg, "hoverlabel.bgcolor": c.hover};
      for (const key of Object.keys(el.layout)) if (/^[xy]axis\d*$/.test(key)) update[`${key}.gridcolor`] = c.grid;
      Plotly.relayout(el, update);
    }
  });

  const CONFIG = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ["lasso2d", "select2d"]};

  window.SB = {palette: PALETTE, color: (i) => PALETTE[i % PALETTE.length], ema, layout, colours, config: CONFIG};
})();
