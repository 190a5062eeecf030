// The trainer-metric panels (templates/run.html #metrics): one chart per metric the trainer sent with its
// steps (agent.end_step(metrics=...): loss, KL, grad norm, reward mean...). Pick a metric and add its
// panel, remove one, switch one to a log scale; the EMA smoothing and the x axis are the page's. The
// panels and their scales are in the URL (view.js); without `panels=` the page opens on the first
// DEFAULT_PANELS metrics. Data: GET /api/runs/{run}/metrics (names, and series downsampled with min and
// max per bucket), extended live from the `metrics` of the stream's steps, refined when zoomed.
import {hover, markerShapes, onZoom, xaxis, xOf} from "./charts.js";
import {API, flash, getJSON, page, whenNear} from "./page.js";
import {
  addPanel, appendMetric, removePanel, setMetricNames, setMetricSeries, setPanelLog, setPanels, spliceMetric,
  state,
} from "./state.js";
import {saveView} from "./view.js";

const DEFAULT_PANELS = 4;
const $ = (id) => document.getElementById(id);
const seriesURL = (names, range) => {
  const q = names.map((n) => `name=${encodeURIComponent(n)}`).join("&");
  const r = range ? `&start=${range[0]}&end=${range[1]}` : "";
  return `${API}/metrics?${q}${r}&max_points=${page.points.per_arm}`;
};
const plotId = (i) => `metric-plot-${i}`;

// Names first (and the panels the URL asks for, or the default ones), then their series, in one request.
// `view`: the panels and log scales the URL asks for (view.js initialView).
export async function loadMetrics(view) {
  const doc = await getJSON(`${API}/metrics`);
  setMetricNames(doc.names);
  if (state.panels === null) {
    const wanted = view.panels === null ? doc.names.slice(0, DEFAULT_PANELS) : view.panels;
    setPanels(wanted.filter((n) => doc.names.includes(n)).map((name) => ({name, log: view.log.has(name)})));
  }
  await reloadPanels();
}

// Every panel's series afresh (the first load, and the page's periodic reload of a live run).
export async function reloadPanels() {
  const names = state.panels.map((p) => p.name);
  if (names.length) setMetricSeries((await getJSON(seriesURL(names))).series);
  buildPanels();
  drawPanels();
  for (const p of state.panels) {
    const el = $(plotId(state.panels.indexOf(p)));
    const r = el && el.layout && el.layout.xaxis;
    if (r && r.autorange === false && r.range) refinePanel(p.name, r.range[0], r.range[1]).catch(flash);
  }
}

// The panel figures, in state.panels order, and the "add a panel" picker with the metrics not shown.
function buildPanels() {
  const box = $("metric-panels");
  const shown = state.panels.map((p) => p.name);
  const have = [...box.querySelectorAll("figure.metric-panel")].map((f) => f.dataset.metric);
  if (String(have) !== String(shown)) {
    box.querySelectorAll(".js-plotly-plot").forEach((el) => Plotly.purge(el));
    box.replaceChildren(...state.panels.map((p, i) => panelFigure(p, i)));
  }
  const pick = $("metric-pick");
  const free = state.metricNames.filter((n) => !shown.includes(n));
  pick.replaceChildren(...free.map((n) => new Option(n, n)));
  $("metric-add-form").hidden = !free.length;
  $("metrics-empty").hidden = state.metricNames.length > 0;
}

function panelFigure(p, i) {
  const fig = document.createElement("figure");
  fig.className = "chart metric-panel";
  fig.dataset.metric = p.name;
  const cap = document.createElement("figcaption");
  const title = document.createElement("span");
  title.className = "metric-name";
  title.textContent = p.name;
  const log = document.createElement("label");
  log.className = "metric-option";
  const box = Object.assign(document.createElement("input"), {type: "checkbox", className: "metric-log", checked: p.log});
  box.dataset.metric = p.name;
  log.append(box, " log scale");
  const remove = Object.assign(document.createElement("button"), {type: "button", className: "small metric-remove",
    textContent: "remove"});
  remove.dataset.metric = p.name;
  remove.setAttribute("aria-label", `remove the ${p.name} panel`);
  cap.append(title, log, remove);
  const plot = Object.assign(document.createElement("div"), {id: plotId(i), className: "plot"});
  fig.append(cap, plot);
  return fig;
}

function traceOf(p) {
  const d = state.metricSeries.get(p.name) || {x: [], y: []};
  const smooth = state.opts.ema > 0;
  const trace = {
    type: "scatter", mode: d.x.length > 1 ? "lines" : "lines+markers", name: p.name,
    x: state.opts.xmode === "step" ? d.x.slice() : d.x.map(xOf),
    y: smooth ? SB.ema(d.y, state.opts.ema) : d.y.slice(),
    customdata: d.y.map((v) => [v, ""]),
    line: {color: SB.colours().fg, width: 1.6}, hovertemplate: hover(p.name, smooth),
  };
  return trace;
}

function panelLayout(p) {
  const m = markerShapes();
  return SB.layout({
    uirevision: `${state.uirevision}:${p.log}`,
    xaxis: xaxis(),
    yaxis: {type: p.log ? "log" : "linear", title: {text: p.name, font: {size: 11}}},
    shapes: m.shapes, annotations: m.annotations, showlegend: false,
  });
}

export function drawPanels() {
  if (state.panels === null) return;
  state.panels.forEach((p, i) => {
    const el = $(plotId(i));
    if (!el) return;
    whenNear(el, () => {
      Plotly.react(el, [traceOf(p)], panelLayout(p), SB.config);
      onZoom(el, (a, b) => refinePanel(p.name, a, b));
    });
  });
}

// Zoomed in on a downsampled panel: the visible range at full resolution, spliced in.
async function refinePanel(name, a, b) {
  const d = state.metricSeries.get(name);
  if (state.opts.xmode !== "step" || !d || !d.downsampled) return;
  const range = [Math.max(0, Math.floor(a)), Math.ceil(b)];
  const doc = await getJSON(seriesURL([name], range));
  spliceMetric(name, range[0], range[1], doc.series[0]);
  const i = state.panels.findIndex((p) => p.name === name);
  if (i >= 0) Plotly.react($(plotId(i)), [traceOf(state.panels[i])], panelLayout(state.panels[i]), SB.config);
}

// Live steps: each panel's metric appended (smoothed on from its last smoothed value when EMA is on);
// a metric never seen before is offered in the picker.
export function appendMetrics(steps) {
  if (state.panels === null) return;
  const fresh = [];
  const points = new Map();  // panel index -> {x, raw}
  for (const s of steps) {
    for (const [name, value] of Object.entries(s.metrics || {})) {
      if (typeof value !== "number") continue;
      if (!state.metricNames.includes(name) && !fresh.includes(name)) fresh.push(name);
      const i = state.panels.findIndex((p) => p.name === name);
      if (i < 0 || !appendMetric(name, s.step, value)) continue;
      if (!points.has(i)) points.set(i, {x: [], raw: []});
      points.get(i).x.push(xOf(s.step));
      points.get(i).raw.push(value);
    }
  }
  if (fresh.length) { setMetricNames([...state.metricNames, ...fresh].sort()); buildPanels(); }
  for (const [i, e] of points) {
    const el = $(plotId(i));
    if (!el || !el.data) continue;
    const custom = [e.raw.map((v) => [v, ""])];
    if (state.opts.ema > 0) {
      const t = el.data[0];
      let prev = t.y.length ? t.y[t.y.length - 1] : null;
      const y = e.raw.map((v) => (prev = prev === null ? v : state.opts.ema * prev + (1 - state.opts.ema) * v));
      Plotly.extendTraces(el, {x: [e.x], y: [y], customdata: custom}, [0]);
    } else {
      Plotly.extendTraces(el, {x: [e.x], y: [e.raw], customdata: custom}, [0]);
    }
  }
}

async function add(name) {
  if (!name || !addPanel(name)) return;
  saveView();
  setMetricSeries((await getJSON(seriesURL([name]))).series);
  buildPanels();
  drawPanels();
}

export function bindMetrics() {
  $("metric-add-form").addEventListener("submit", (e) => {
    e.preventDefault();
    add($("metric-pick").value).catch(flash);
  });
  $("metric-panels").addEventListener("click", (e) => {
    const btn = e.target.closest(".metric-remove");
    if (!btn) return;
    removePanel(btn.dataset.metric);
    saveView();
    buildPanels();
    drawPanels();
  });
  $("metric-panels").addEventListener("change", (e) => {
    if (!e.target.matches(".metric-log")) return;
    setPanelLog(e.target.dataset.metric, e.target.checked);
    saveView();
    drawPanels();
  });
}
