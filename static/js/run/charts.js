// The run page's Plotly charts, drawn from the page state: traces per arm (or per arm and score part),
// the command markers, live points appended, zooms refined at full resolution. The palette, layout and
// EMA are SB's (static/js/charts.js, shared with the compare page).
import {CHARTS, flash} from "./page.js";
import {loadRange} from "./series.js";
import {armIndex, setDrawn, setZoom, state} from "./state.js";
import {saveView} from "./view.js";

// The parts view tells parts apart by line style, in the order the parts first arrive; there is no
// Plotly legend on this page, so its caption (#parts-names) says which style is which part.
const DASHES = [["solid", "solid"], ["dot", "dotted"], ["dash", "dashed"], ["dashdot", "dash-dot"]];

const viewOf = (chart) => state.views.get(chart.id);

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

export function hover(name, smoothed) {
  return smoothed ? `${name}: %{y:.6g} (raw %{customdata:.6g})<extra></extra>` : `${name}: %{y:.6g}<extra></extra>`;
}

const smoothed = (chart) => chart.smooth && state.opts.ema > 0;

function buildTraces(chart) {
  const smooth = smoothed(chart);
  return traceList(chart).map((t) => {
    const trace = {
      type: "scatter", mode: "lines", name: t.name, legendgroup: t.arm,
      // Copies (extendTraces appends to a trace's arrays in place); customdata (the raw value) only
      // where hover shows it, next to the smoothed one.
      x: state.opts.xmode === "step" ? t.x.slice() : t.x.map(xOf),
      y: smooth ? SB.ema(t.y, state.opts.ema) : t.y.slice(),
      line: {color: SB.color(armIndex(t.arm)), width: 1.6, dash: t.dash || "solid"},
      hovertemplate: hover(t.name, smooth),
      visible: state.opts.hidden.has(t.arm) ? "legendonly" : true,
    };
    if (smooth) trace.customdata = t.y.slice();
    if (chart.stacked) { trace.stackgroup = "one"; trace.line.width = 0.5; }
    return trace;
  });
}

export function markerShapes() {
  const shapes = [];
  const annotations = [];
  for (const m of state.markers.values()) {
    const x = xOf(m.step);
    if (x === null) continue;
    shapes.push({type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
      line: {color: "#b42318", width: 1, dash: "dot"}});
    annotations.push({x, y: 1, xref: "x", yref: "paper", text: m.label, showarrow: false, xanchor: "left",
      yanchor: "top", textangle: -90, font: {size: 10, color: "#b42318"}});
  }
  return {shapes, annotations};
}

// The x axis of every chart of steps: step or wall time, and the shared zoom (step axis only).
export function xaxis() {
  const time = state.opts.xmode === "time";
  const zoom = !time && state.opts.zoom;
  // Dates label themselves; a title under them would collide with the two-line tick labels.
  return Object.assign({title: {text: time ? "" : "step"}, gridcolor: "#e5e9f0", type: time ? "date" : "linear"},
    zoom ? {range: zoom.slice(), autorange: false} : {autorange: true});
}

function chartLayout(chart) {
  const m = markerShapes();
  return SB.layout({
    uirevision: state.uirevision,
    xaxis: xaxis(),
    yaxis: Object.assign({gridcolor: "#e5e9f0"}, chart.yrange ? {range: chart.yrange} : {}),
    shapes: m.shapes, annotations: m.annotations,
    // One legend for all the charts: the "Arms shown" checkboxes with their colour swatches.
    // Plotly legends of 64 entries on every chart took a quarter of the drawing time (seven charts then).
    showlegend: false,
  });
}

function labelParts() {
  const label = document.getElementById("parts-names");
  if (label && state.partNames.length) {
    label.textContent = state.partNames.map((p, i) => `${p}: ${DASHES[i % DASHES.length][1]} line`).join(", ");
  }
}

export function draw(chart) {
  const el = document.getElementById(chart.id);
  if (!el) return;
  if (viewOf(chart).metric === "parts") labelParts();
  // uirevision stays the same across redraws: the user's zoom is kept.
  Plotly.react(el, buildTraces(chart), chartLayout(chart), SB.config);
  onZoom(el, (a, b) => refine(chart, a, b));
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
        for (const other of document.querySelectorAll(".charts .js-plotly-plot")) {
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
  for (const el of document.querySelectorAll(".charts .js-plotly-plot")) {
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
  const idx = [], xs = [], ys = [], raws = [];
  for (const [i, e] of points) {
    const trace = el.data[i];
    if (!trace) continue;
    let prev = null;
    if (smooth) for (let k = trace.y.length - 1; k >= 0; k--) if (trace.y[k] !== null) { prev = trace.y[k]; break; }
    const y = e.raw.map((v) => (prev = prev === null ? v : ema * prev + (1 - ema) * v));
    idx.push(i); xs.push(e.steps.map(xOf)); ys.push(smooth ? y : e.raw); raws.push(e.raw);
  }
  if (idx.length) Plotly.extendTraces(el, smooth ? {x: xs, y: ys, customdata: raws} : {x: xs, y: ys}, idx);
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
