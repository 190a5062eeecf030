// Arms x steps heatmaps (templates/_heatmaps.html): probability, mean |A|, accuracy, the zero-variance
// share and the pass-rate profile (pass_partial: the share of the arm's window prompts solved in some
// attempts but not all), one Plotly chart each (the grid an image on its axes, see image()), readable at
// 64 and 256 arms. Built from the series the charts already hold (state.series: the server's min/max
// buckets, two points per bucket, or every step when short) plus the series fetched here (OWN): the run's
// step range is cut into at most COLUMNS columns, and a cell is the mean of an arm's points in its column,
// with their min and max on hover. Live steps extend the same series (live.js appends the charts'; OWN's
// here, from each step's arm records); redrawn at most every REDRAW_MS. The pass-rate profile exists only
// when the trainer gives prompt ids: without it its chart stays hidden.
import {flash, getJSON, viewURL, whenNear} from "./page.js";
import {state} from "./state.js";

const box = document.getElementById("heatmaps");
const COLUMNS = 240;
const REDRAW_MS = 3000;
// Colour scales as stops (Plotly's Viridis and Cividis, and red-amber-green for accuracy).
const VIRIDIS = [[0, "#440154"], [0.25, "#3b528b"], [0.5, "#21908d"], [0.75, "#5dc963"], [1, "#fde725"]];
const CIVIDIS = [[0, "#00224e"], [0.25, "#434e6c"], [0.5, "#7d7c78"], [0.75, "#bcaf6f"], [1, "#fee838"]];
const RAG = [[0, "#b42318"], [0.5, "#f2cc60"], [1, "#1a7f37"]];
const PLASMA = [[0, "#0d0887"], [0.25, "#7e03a8"], [0.5, "#cc4778"], [0.75, "#f89540"], [1, "#f0f921"]];
// [metric, colour scale, fixed range or null, how values read]
const MAPS = [
  ["probability", VIRIDIS, null, ".3f"],
  ["mean_abs_adv", VIRIDIS, null, ".3f"],
  ["accuracy", RAG, [0, 1], ".2f"],
  ["zero_var", CIVIDIS, [0, 1], ".0%"],
  ["pass_partial", PLASMA, [0, 1], ".0%"],
];
// The series this module fetches itself (no line chart shows them), and each one's value in a live arm
// record (docs/sse.md): pass_partial from the record's pass_hist (bins never, low, mid, high, always).
const OWN = {
  zero_var: (rec) => rec.zero_var,
  pass_partial: (rec) => {
    const h = rec.pass_hist;
    if (!h) return null;
    const seen = h[0] + h[1] + h[2] + h[3] + h[4];
    return seen ? (seen - h[0] - h[4]) / seen : null;
  },
};
// Drawn as text where there is no data; null: the chart is hidden instead.
const EMPTY = {zero_var: "no zero-variance share: the trainer sent no group ids", pass_partial: null};
const own = Object.fromEntries(Object.keys(OWN).map((m) => [m, {}]));  // metric -> arm -> {x, y}
const ownDownsampled = {};
let ownLoaded = false;

// {arms, x (column centres), z, custom ([first step, last step, min, max] per cell)}
// `pairs`: the series are min/max buckets (two points a bucket), so a column needs two points at least.
function grid(byArm, arms, pairs) {
  let lo = Infinity, hi = -Infinity, most = 0;
  for (const arm of arms) {
    const d = byArm[arm];
    if (d && d.x.length) { lo = Math.min(lo, d.x[0]); hi = Math.max(hi, d.x[d.x.length - 1]); most = Math.max(most, d.x.length); }
  }
  if (lo === Infinity) return null;
  const cols = Math.max(1, Math.min(COLUMNS, hi - lo + 1, pairs ? Math.floor(most / 2) : most));
  const width = (hi - lo + 1) / cols;
  const x = Array.from({length: cols}, (_, c) => Math.round(lo + (c + 0.5) * width - 0.5));
  const z = [], custom = [];
  for (const arm of arms) {
    const d = byArm[arm] || {x: [], y: []};
    const sum = new Float64Array(cols), cnt = new Uint32Array(cols);
    const mn = new Array(cols).fill(Infinity), mx = new Array(cols).fill(-Infinity);
    for (let i = 0; i < d.x.length; i++) {
      const v = d.y[i];
      if (v === null || v === undefined) continue;
      const c = Math.min(cols - 1, Math.floor((d.x[i] - lo) / width));
      sum[c] += v; cnt[c] += 1;
      if (v < mn[c]) mn[c] = v;
      if (v > mx[c]) mx[c] = v;
    }
    const row = new Array(cols), crow = new Array(cols);
    for (let c = 0; c < cols; c++) {
      row[c] = cnt[c] ? sum[c] / cnt[c] : null;
      crow[c] = [Math.ceil(lo + c * width), Math.ceil(lo + (c + 1) * width) - 1, cnt[c] ? mn[c] : null, cnt[c] ? mx[c] : null];
    }
    z.push(row);
    custom.push(crow);
  }
  return {x, z, custom};
}

function height(n) {
  return Math.round(Math.min(900, Math.max(200, 70 + n * (n > 64 ? 3.2 : n > 16 ? 10.5 : 18))));
}

const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

function colourOf(scale, t) {
  for (let k = 1; k < scale.length; k++) {
    if (t <= scale[k][0] || k === scale.length - 1) {
      const [t0, c0] = scale[k - 1], [t1, c1] = scale[k];
      const f = Math.min(1, Math.max(0, (t - t0) / (t1 - t0)));
      const a = rgb(c0), b = rgb(c1);
      return a.map((v, i) => Math.round(v + (b[i] - v) * f));
    }
  }
  return rgb(scale[0][1]);
}

// The grid as an image, a pixel a cell (the plot stretches it; CSS keeps the cells sharp): Plotly.js's
// basic bundle, which the page loads for its speed, has no heatmap trace, and an image draws 15,000
// cells faster than one would.
// A scale as 256 RGB entries, computed once: a cell's colour is a lookup (15,000 cells at 64 arms).
const LEVELS = 256;
const luts = new Map();
function lut(scale) {
  if (!luts.has(scale)) {
    const t = new Uint8ClampedArray(3 * LEVELS);
    for (let k = 0; k < LEVELS; k++) t.set(colourOf(scale, k / (LEVELS - 1)), 3 * k);
    luts.set(scale, t);
  }
  return luts.get(scale);
}

function image(g, scale, lo, hi) {
  const rows = g.z.length, cols = g.x.length;
  const canvas = document.createElement("canvas");
  Object.assign(canvas, {width: cols, height: rows});
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  const colours = lut(scale), span = hi - lo || 1, data = img.data;
  // A cell without a value (the arm got no sample there): grey, unlike any scale's low end in either theme.
  const none = rgb(SB.colours().heatNone);
  for (let r = 0; r < rows; r++) {
    const row = g.z[r];
    for (let c = 0; c < cols; c++) {
      const v = row[c];
      const o = 4 * (r * cols + c);
      if (v === null) { data[o] = none[0]; data[o + 1] = none[1]; data[o + 2] = none[2]; data[o + 3] = 255; continue; }
      const k = 3 * Math.round(Math.min(1, Math.max(0, (v - lo) / span)) * (LEVELS - 1));
      data[o] = colours[k]; data[o + 1] = colours[k + 1]; data[o + 2] = colours[k + 2]; data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  return canvas.toDataURL();
}

function fmtValue(v, format) {
  if (v === null || v === undefined) return "—";
  return format === ".0%" ? `${Math.round(100 * v)} %` : Number(v).toFixed(format === ".2f" ? 2 : 3);
}

// Colour range of an unbounded metric: from min(0, lowest) to the 99th percentile of the cells, so a few
// peaks (DUMP's first exploring steps) do not leave every other cell dark; cells above it take the top
// colour and hover still shows their values.
function autoRange(z) {
  const values = Float64Array.from(z.flat().filter((v) => v !== null)).sort();
  if (!values.length) return [0, 1e-9];
  return [Math.min(0, values[0]), Math.max(1e-9, values[Math.floor(0.99 * (values.length - 1))])];
}

function drawOne([metric, scale, range, format]) {
  const el = document.getElementById(`heat-${metric}`);
  if (!el) return;
  const mine = metric in OWN;
  const byArm = mine ? own[metric] : (state.series[metric] || {});
  const arms = state.arms.filter((a) => !state.opts.hidden.has(a));
  const g = grid(byArm, arms, Boolean((mine ? ownDownsampled : state.downsampled)[metric]));
  const figure = el.closest("figure");
  const empty = mine ? EMPTY[metric] : "no data yet";
  if (!g && empty === null) { figure.hidden = true; return; }
  figure.hidden = false;
  if (!g) {
    // A note instead of the chart: Plotly's state goes with it, so the next data draws anew.
    if (el.data) Plotly.purge(el);
    el.textContent = arms.length ? empty : "no arm shown";
    el.style.minHeight = "0";
    el._heat = null;
    return;
  }
  if (!el.data) el.textContent = "";
  const [lo, hi] = range || autoRange(g.z);
  const x0 = g.custom[0][0][0], x1 = g.custom[0][g.x.length - 1][1];
  // Two invisible points carry the colour bar.
  const bar = {type: "scatter", mode: "markers", x: [x0, x0], y: [0, 0], hoverinfo: "skip",
    marker: {color: [lo, hi], cmin: lo, cmax: hi, colorscale: scale, opacity: 0, size: 1, showscale: true,
      colorbar: {thickness: 10, len: 0.9, tickformat: format, outlinewidth: 0}}};
  const small = arms.length > 64 ? 8 : arms.length > 24 ? 9 : 11;
  // At many arms every label no longer fits: every nth (a tick mark points at its row), the rest on hover.
  const every = Math.ceil(arms.length / 64), thinned = every > 1;
  // The left margin from the longest label (Plotly's automargin lays the chart out twice to find it).
  const left = Math.min(260, (thinned ? 16 : 12) + Math.ceil(0.62 * small * Math.max(...arms.map((a) => a.length))));
  const layout = SB.layout({
    height: height(arms.length), hovermode: false, dragmode: false, margin: {l: left, r: 8, t: 6, b: 36},
    xaxis: {title: {text: "step"}, showgrid: false, range: [x0 - 0.5, x1 + 0.5], fixedrange: true},
    yaxis: {range: [arms.length - 0.5, -0.5], tickmode: "array", tickvals: arms.map((_, i) => i), ticktext: arms,
      showgrid: false, fixedrange: true, tickfont: {size: small},
      ...(thinned ? {tickvals: arms.map((_, i) => i).filter((i) => i % every === 0),
        ticktext: arms.filter((_, i) => i % every === 0), ticks: "outside", ticklen: 4, tickcolor: SB.colours().fg} : {})},
    images: [{source: image(g, scale, lo, hi), xref: "x", yref: "y", x: x0 - 0.5, y: -0.5, sizex: x1 - x0 + 1,
      sizey: arms.length, sizing: "stretch", layer: "below", xanchor: "left", yanchor: "top"}],
  });
  Plotly.react(el, [bar], layout, Object.assign({}, SB.config, {displayModeBar: false}));
  el._heat = {g, arms, format};
  bindHover(el);
}

// Hover: the arm, the column's steps, the mean with its min and max, in a tooltip of the page's own.
function bindHover(el) {
  if (el.dataset.hover) return;
  el.dataset.hover = "1";
  // The tip is found (or made) at each move: a note written in place of the chart removes it.
  const tipOf = () => el.querySelector(":scope > .heat-tip") || el.appendChild(
    Object.assign(document.createElement("div"), {className: "heat-tip", hidden: true, role: "status"}));
  el.addEventListener("mouseleave", () => { tipOf().hidden = true; });
  el.addEventListener("mousemove", (ev) => {
    const fl = el._fullLayout, h = el._heat;
    if (!fl || !h || !el.data) return;
    const tip = tipOf();
    const box = el.getBoundingClientRect();
    const px = ev.clientX - box.left - fl.xaxis._offset, py = ev.clientY - box.top - fl.yaxis._offset;
    const step = fl.xaxis.p2l(px), r = Math.round(fl.yaxis.p2l(py));
    const cols = h.g.x.length;
    const c = h.g.custom[0].findIndex((cell) => step >= cell[0] - 0.5 && step <= cell[1] + 0.5);
    if (px < 0 || py < 0 || px > fl.xaxis._length || py > fl.yaxis._length || r < 0 || r >= h.arms.length || c < 0 || c >= cols) {
      tip.hidden = true;
      return;
    }
    const [a, b, mn, mx] = h.g.custom[r][c];
    tip.replaceChildren(Object.assign(document.createElement("b"), {textContent: h.arms[r]}),
      document.createElement("br"), `steps ${a}–${b}`, document.createElement("br"),
      `mean ${fmtValue(h.g.z[r][c], h.format)} (min ${fmtValue(mn, h.format)}, max ${fmtValue(mx, h.format)})`);
    tip.hidden = false;
    tip.style.left = `${Math.min(ev.clientX - box.left + 12, box.width - 230)}px`;
    tip.style.top = `${ev.clientY - box.top + 12}px`;
  });
}

let last = 0;
let timer = null;

function drawAll() {
  if (!box || !box.open || typeof Plotly === "undefined") return;
  last = performance.now();
  reserve();
  for (const map of MAPS) {
    const el = document.getElementById(`heat-${map[0]}`);
    if (el) whenNear(el, () => drawOne(map));
  }
  performance.mark("sb:heatmaps");
}

function soon() {
  if (timer !== null) return;
  timer = setTimeout(() => { timer = null; drawAll(); }, Math.max(0, REDRAW_MS - (performance.now() - last)));
}

// Requested when the module loads, beside the charts' data; awaited when the heatmaps are drawn.
const request = () => Object.keys(OWN).map((m) => [m, getJSON(viewURL(m))]);
let ownRequests = box && box.open ? request() : null;
if (ownRequests) ownRequests.forEach(([, r]) => r.catch(() => {}));  // surfaces when awaited

async function loadOwn() {
  const requests = ownRequests || request();
  ownRequests = null;
  for (const [metric, r] of requests) {
    const doc = await r, byArm = own[metric];
    for (const key of Object.keys(byArm)) delete byArm[key];
    ownDownsampled[metric] = doc.series.some((s) => s.downsampled);
    for (const s of doc.series) byArm[s.arm] = {x: s.steps, y: s.values};
  }
  ownLoaded = true;
}

async function reload() {
  if (!box || !box.open) return;
  // Requested with the charts' data: drawn with the others, once.
  await loadOwn().catch((err) => { drawAll(); throw err; });
  drawAll();
}

function onUpdate(d) {
  if (!d.steps) return;
  for (const s of d.steps) {
    for (const rec of s.arms) {
      for (const [metric, value] of Object.entries(OWN)) {
        const v = value(rec);
        if (v === null || v === undefined) continue;
        const z = own[metric][rec.arm] || (own[metric][rec.arm] = {x: [], y: []});
        if (z.x.length && s.step <= z.x[z.x.length - 1]) continue;
        z.x.push(s.step);
        z.y.push(v);
      }
    }
  }
  if (box.open && state.drawn) soon();
}

// Each heatmap's height kept before it is drawn (for the arms shown): the charts below stay where they
// will be drawn (those out of sight wait until they come near, see page.whenNear). A note keeps none.
function reserve() {
  const px = `${height(state.arms.filter((a) => !state.opts.hidden.has(a)).length)}px`;
  for (const [metric] of MAPS) {
    const el = document.getElementById(`heat-${metric}`);
    if (el && (el.data || !el.textContent)) el.style.minHeight = px;
  }
}

if (box) {
  reserve();
  // After the line charts have painted (setTimeout): not on their critical path.
  document.addEventListener("sb:series", () => setTimeout(() => reload().catch(flash), 0));
  document.addEventListener("sb:update", (ev) => onUpdate(ev.detail));
  document.addEventListener("sb:theme", () => drawAll());
  // After the arms shown changed (controls.js has updated the state: the checkboxes, all, none).
  document.addEventListener("sb:arms", () => { if (state.drawn) drawAll(); });
  box.addEventListener("toggle", () => {
    if (!box.open || !state.drawn) return;
    if (ownLoaded) drawAll(); else reload().catch(flash);
  });
}
