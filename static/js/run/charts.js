// The run page's Plotly charts, drawn from the page state: traces per arm (or per arm and score part),
// the command markers, live points appended, zooms refined at full resolution. The palette, layout and
// EMA are SB's (static/js/charts.js, shared with the compare page).
import {diagnosisMarks, diagnosisShapes} from "./diagmarks.js";
import {CHARTS, flash, page, whenNear} from "./page.js";
import {loadRange} from "./series.js";
import {armIndex, setDrawn, setZoom, state} from "./state.js";
import {saveView} from "./view.js";

// The parts view tells parts apart by line style, in the order the parts first arrive; there is no
// Plotly legend on this page, so its caption (#parts-names) says which style is which part.
const DASHES = [["solid", "solid"], ["dot", "dotted"], ["dash", "dashed"], ["dashdot", "dash-dot"]];

const viewOf = (chart) => state.views.get(chart.id);
// Every chart against the run's steps: the arm charts and the metric panels (one zoom, the markers).
const STEP_CHARTS = ".charts .js-plotly-plot, .metric-grid .js-plotly-plot";

export function xOf(step) {
  if (state.opts.xmode === "time") {
    const ts = state.stepTs.get(step);
    return ts === undefined ? null : new Date(ts * 1000);
  }
  return step;
}

// [{arm, name, x (steps), y (raw values), dash}]
function traceList(chart) {
  const view = viewOf(chart);
  if (view.metric === "parts") {
    return Array.from(state.parts.values()).map((p) => ({
      arm: p.arm, name: `${p.arm} ${p.part}`, x: p.x, y: p.y,
      dash: DASHES[state.partNames.indexOf(p.part) % DASHES.length][0],
    }));
  }
  const byArm = state.series[view.metric] || {};
  return state.arms.map((arm) => ({arm, name: arm, x: (byArm[arm] || {x: []}).x, y: (byArm[arm] || {y: []}).y}));
}

// One hover line per trace: its name, the value to three significant digits (and the raw value beside
// a smoothed one), and what customdata[1] adds (the step's completions of the arm, where counted).
// customdata: [raw value, suffix] per point.
export function hover(name, smoothed) {
  const raw = smoothed ? " (raw %{customdata[0]:.3g})" : "";
  return `${name}: %{y:.3g}${raw}%{customdata[1]}<extra></extra>`;
}

const smoothed = (chart) => chart.smooth && state.opts.ema > 0;
const countText = (n) => (n === undefined || n === null ? "" : ` · n=${n}`);

// An arm's completions per step (the loaded n_step series), for the hover of statistics of them.
function countsOf(arm) {
  const d = (state.series.n_step || {})[arm];
  const m = new Map();
  if (d) d.x.forEach((x, i) => m.set(x, d.y[i]));
  return m;
}

function buildTraces(chart) {
  const smooth = smoothed(chart);
  const counted = viewOf(chart).counted;
  return traceList(chart).map((t) => {
    const n = counted ? countsOf(t.arm) : null;
    return {
      type: "scatter", mode: "lines", name: t.name, legendgroup: t.arm,
      // Copies: extendTraces appends to a trace's arrays in place.
      x: state.opts.xmode === "step" ? t.x.slice() : t.x.map(xOf),
      y: smooth ? SB.ema(t.y, state.opts.ema) : t.y.slice(),
      customdata: t.y.map((v, i) => [v, n ? countText(n.get(t.x[i])) : ""]),
      line: {color: SB.color(armIndex(t.arm)), width: chart.stacked ? 0.5 : 1.6, dash: t.dash || "solid"},
      hovertemplate: hover(t.name, smooth),
      visible: state.opts.hidden.has(t.arm) ? "legendonly" : true,
      ...(chart.stacked ? {stackgroup: "one"} : {}),
    };
  });
}

// What an empty chart says instead of showing empty axes.
function emptyNote(chart) {
  const view = viewOf(chart);
  if (traceList(chart).some((t) => t.x.length)) return null;
  if (view.metric === "score" || view.metric === "parts") {
    return `${page.scheduler} reports no ${view.metric === "score" ? "score" : "score parts"}`;
  }
  return state.drawn || state.reload.running ? "no data yet" : "";
}

// Commands applied within GROUP_SPAN of the run's steps of each other share one marker: a line at the
// first, labelled with the command or "N commands", the full list on hover (labels of commands on
// nearby steps were drawn over each other).
const GROUP_SPAN = 1 / 80;

// (Diagnosis changes are grouped the same way, apart: diagmarks.js.)
function markerGroups(all) {
  const markers = all.filter((m) => xOf(m.step) !== null).sort((a, b) => a.step - b.step);
  const last = Math.max(1, ...Object.values(state.series).flatMap((byArm) => Object.values(byArm))
    .map((d) => (d.x.length ? d.x[d.x.length - 1] : 0)), ...markers.map((m) => m.step));
  const zoom = state.opts.xmode === "step" && state.opts.zoom;
  const gap = Math.max(1, (zoom ? zoom[1] - zoom[0] : last) * GROUP_SPAN);
  const groups = [];
  for (const m of markers) {
    const g = groups[groups.length - 1];
    if (g && m.step - g[0].step <= gap) g.push(m); else groups.push([m]);
  }
  return groups;
}

export function markerShapes() {
  const shapes = [];
  const annotations = [];
  for (const g of markerGroups([...state.markers.values()])) {
    const x = xOf(g[0].step);
    shapes.push({type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
      line: {color: "#b42318", width: 1, dash: "dot"}});
    const list = g.map((m) => `step ${m.step}: ${m.label}`).join("<br>");
    annotations.push({x, y: 1, xref: "x", yref: "paper", text: g.length === 1 ? g[0].label : `${g.length} commands`,
      hovertext: list, showarrow: false, xanchor: "left", yanchor: "top", textangle: -90,
      font: {size: 10, color: "#b42318"}, captureevents: true});
  }
  const d = diagnosisShapes(markerGroups(diagnosisMarks()), xOf);
  return {shapes: shapes.concat(d.shapes), annotations: annotations.concat(d.annotations)};
}

// The x axis of every chart of steps: step or wall time, and the shared zoom (step axis only).
export function xaxis() {
  const time = state.opts.xmode === "time";
  const zoom = !time && state.opts.zoom;
  // Dates label themselves; a title under them would collide with the two-line tick labels.
  return Object.assign({title: {text: time ? "" : "step"}, type: time ? "date" : "linear",
    unifiedhovertitle: {text: time ? "%{x|%Y-%m-%d %H:%M:%S}" : "step %{x}"}},
    zoom ? {range: zoom.slice(), autorange: false} : {autorange: true});
}

function chartLayout(chart) {
  const m = markerShapes();
  return SB.layout({
    uirevision: state.uirevision,
    xaxis: xaxis(),
    yaxis: Object.assign({title: {text: viewOf(chart).axis, font: {size: 11}}}, chart.yrange ? {range: chart.yrange} : {}),
    shapes: m.shapes, annotations: [...m.annotations, ...emptyAnnotation(chart)],
    // One legend for all the charts: the "Arms shown" checkboxes with their colour swatches.
    // Plotly legends of 64 entries on every chart took a quarter of the drawing time (seven charts then).
    showlegend: false,
  });
}

function emptyAnnotation(chart) {
  const note = emptyNote(chart);
  return note ? [{text: note, xref: "paper", yref: "paper", x: 0.5, y: 0.5, showarrow: false,
    font: {size: 13, color: SB.colours().fg}}] : [];
}

// The parts' line styles, or nothing when the scheduler reports no parts (no DUMP hint for uniform).
function labelParts() {
  const label = document.getElementById("parts-names");
  if (!label) return;
  label.textContent = state.partNames.map((p, i) => `${p}: ${DASHES[i % DASHES.length][1]} line`).join(", ");
  label.parentElement.hidden = !state.partNames.length;
}

const folded = (el) => el.closest("figure.folded") !== null;

export function draw(chart) {
  const el = document.getElementById(chart.id);
  if (!el || folded(el)) return;
  if (viewOf(chart).metric === "parts") labelParts();
  whenNear(el, () => {
    // uirevision stays the same across redraws: the user's zoom is kept.
    Plotly.react(el, buildTraces(chart), chartLayout(chart), SB.config);
    onZoom(el, (a, b) => refine(chart, a, b));
  });
}

// Charts of steps share one zoom: zooming one (or double-clicking it back) zooms the others, and the
// view's URL keeps the range. `refine(a, b)` then loads what the chart shows at full resolution.
export function onZoom(el, refineRange) {
  if (el.dataset.bound) return;
  el.dataset.bound = "1";
  el.on("plotly_relayout", (ev) => {
    let range;
    if (ev["xaxis.autorange"]) range = null;
    else if (ev["xaxis.range[0]"] !== undefined) range = [ev["xaxis.range[0]"], ev["xaxis.range[1]"]];
    else if (Array.isArray(ev["xaxis.range"])) range = ev["xaxis.range"];
    else return;  // not the x axis (markers, the y axis)
    if (state.opts.xmode === "step") {
      const zoom = range && [Math.max(0, Math.floor(range[0])), Math.ceil(range[1])];
      const cur = state.opts.zoom;
      if (String(zoom) !== String(cur)) {
        setZoom(zoom);
        saveView();
        for (const other of document.querySelectorAll(STEP_CHARTS)) {
          if (other !== el && other.layout) {
            Plotly.relayout(other, zoom ? {"xaxis.range": zoom.slice()} : {"xaxis.autorange": true});
          }
        }
      }
    }
    if (range) refineRange(range[0], range[1]).catch(flash);
  });
}

export function drawAll() {
  CHARTS.forEach(draw);
  setDrawn();
}

// The markers changed: every drawn chart gets them, nothing else redrawn.
export function drawMarkers() {
  for (const el of document.querySelectorAll(STEP_CHARTS)) {
    if (el.data) Plotly.relayout(el, markerShapes());
  }
}

// Live points: Map(trace index -> {steps, raw}) appended to the chart's traces (smoothed on from the
// trace's last smoothed value when EMA is on).
export function extend(chart, points) {
  const el = document.getElementById(chart.id);
  if (!el || !el.data) return;
  const smooth = smoothed(chart);
  const ema = state.opts.ema;
  const counted = viewOf(chart).counted;
  const idx = [], xs = [], ys = [], custom = [];
  for (const [i, e] of points) {
    const trace = el.data[i];
    if (!trace) continue;
    let prev = null;
    if (smooth) for (let k = trace.y.length - 1; k >= 0; k--) if (trace.y[k] !== null) { prev = trace.y[k]; break; }
    const y = e.raw.map((v) => (prev = prev === null ? v : ema * prev + (1 - ema) * v));
    idx.push(i); xs.push(e.steps.map(xOf)); ys.push(smooth ? y : e.raw);
    custom.push(e.raw.map((v, k) => [v, counted ? countText(e.n[k]) : ""]));
  }
  if (idx.length) Plotly.extendTraces(el, {x: xs, y: ys, customdata: custom}, idx);
}

// Zoomed in on a downsampled chart: fetch the visible range at full resolution and splice it in.
async function refine(chart, a, b) {
  const metric = viewOf(chart).metric;
  if (state.opts.xmode !== "step" || !state.downsampled[metric] || a === undefined || b === undefined) return;
  await loadRange(metric, Math.max(0, Math.floor(a)), Math.ceil(b));
  if (viewOf(chart).metric === metric) draw(chart);
}

// After a reload: a chart the user had zoomed into gets its visible range at full resolution again.
export function refineZoomed() {
  for (const chart of CHARTS) {
    const el = document.getElementById(chart.id);
    const xaxis = el && el.layout && el.layout.xaxis;
    if (xaxis && xaxis.autorange === false && xaxis.range) refine(chart, xaxis.range[0], xaxis.range[1]).catch(flash);
  }
}
