// The run page's state in one object. The other modules read it; only the functions here change it.
import {page} from "./page.js";

export const state = {
  arms: page.arms.slice(),  // in the order first seen: an arm's index picks its colour and trace
  series: {},  // metric -> arm -> {x: [steps], y: [values]}
  parts: new Map(),  // "arm\u0000part" -> {arm, part, x, y}: one trace each, in this order
  partNames: [],  // in the order parts first arrive: a part's index picks its line style
  downsampled: {},  // metric ("parts" for the parts view) -> whether the server downsampled it
  stepTs: new Map(),  // step -> unix seconds, for the wall-time axis
  markers: new Map(page.markers.map((m) => [m.id, m])),  // command id -> {id, step, label}
  acks: new Map(),  // command id -> ack, re-applied to fragments htmx swaps in later
  // The view each chart shows: the only one loaded and kept live (another is fetched when chosen).
  views: new Map(page.charts.map((c) => [c.id, c.views[0]])),
  opts: {xmode: "step", ema: 0, hidden: new Set(), zoom: null},  // zoom: [first, last] step shown, or null
  // The trainer-metric panels (metrics.js), in the order shown: [{name, log}]; null until the run's
  // metric names have loaded. Their data: name -> {x: [steps], y: [values], downsampled}.
  panels: null,
  metricNames: [],
  metricSeries: new Map(),
  uirevision: 1,  // Plotly keeps the user's zoom while this stays the same
  drawn: false,
  // Live steps appended since the series were last loaded; a reload in progress holds new ones.
  reload: {live: 0, running: false, held: []},
};

const partKey = (arm, part) => `${arm}\u0000${part}`;
const last = (a) => (a.length ? a[a.length - 1] : -Infinity);

export function armIndex(arm) {
  const i = state.arms.indexOf(arm);
  return i < 0 ? 0 : i;
}

export function addArm(arm) {
  if (!state.arms.includes(arm)) state.arms.push(arm);
}

// --- series ----------------------------------------------------------------------------------------
export function setSeries(metric, series) {
  state.series[metric] = {};
  state.downsampled[metric] = false;
  for (const s of series) {
    state.series[metric][s.arm] = {x: s.steps, y: s.values};
    addArm(s.arm);
    state.downsampled[metric] = state.downsampled[metric] || s.downsampled;
  }
}

export function setParts(series) {
  state.parts.clear();
  state.downsampled.parts = false;
  for (const s of series) {
    state.parts.set(partKey(s.arm, s.part), {arm: s.arm, part: s.part, x: s.steps, y: s.values});
    if (!state.partNames.includes(s.part)) state.partNames.push(s.part);
    state.downsampled.parts = state.downsampled.parts || s.downsampled;
  }
}

// {x, y} with the points of `cur` between start and end replaced by (steps, values).
function splice(cur, start, end, steps, values) {
  const keepL = [], keepR = [];
  cur.x.forEach((x, i) => { if (x < start) keepL.push(i); else if (x > end) keepR.push(i); });
  return {x: [...keepL.map((i) => cur.x[i]), ...steps, ...keepR.map((i) => cur.x[i])],
    y: [...keepL.map((i) => cur.y[i]), ...values, ...keepR.map((i) => cur.y[i])]};
}

// A zoomed range at full resolution replaces the downsampled points between start and end.
export function spliceRange(metric, start, end, series) {
  for (const s of series) {
    if (metric === "parts") {
      const key = partKey(s.arm, s.part);
      const cur = state.parts.get(key) || {arm: s.arm, part: s.part, x: [], y: []};
      state.parts.set(key, Object.assign(cur, splice(cur, start, end, s.steps, s.values)));
    } else {
      const byArm = state.series[metric] || (state.series[metric] = {});
      byArm[s.arm] = splice(byArm[s.arm] || {x: [], y: []}, start, end, s.steps, s.values);
    }
  }
}

// A live value; false when its step came with the loaded series already.
export function appendValue(metric, arm, step, value) {
  const byArm = state.series[metric] || (state.series[metric] = {});
  const d = byArm[arm] || (byArm[arm] = {x: [], y: []});
  if (step <= last(d.x)) return false;
  d.x.push(step);
  d.y.push(value);
  return true;
}

// A live value of a score part; answers its trace's index, or -1 when the step was loaded already.
export function appendPart(arm, part, step, value) {
  const key = partKey(arm, part);
  if (!state.parts.has(key)) state.parts.set(key, {arm, part, x: [], y: []});
  if (!state.partNames.includes(part)) state.partNames.push(part);
  const p = state.parts.get(key);
  if (step <= last(p.x)) return -1;
  p.x.push(step);
  p.y.push(value);
  return [...state.parts.keys()].indexOf(key);
}

export function setStepTime(step, ts) {
  state.stepTs.set(step, ts);
}

// --- what the charts show --------------------------------------------------------------------------
export function setView(chartId, metric) {
  const chart = page.charts.find((c) => c.id === chartId);
  const view = chart.views.find((v) => v.metric === metric);
  state.views.set(chartId, view);
  return view;
}

export function showArms(arms, show) {
  for (const arm of arms) {
    if (show) state.opts.hidden.delete(arm); else state.opts.hidden.add(arm);
  }
}

export function setEma(weight) {
  state.opts.ema = weight;
}

export function setXmode(mode) {
  state.opts.xmode = mode;
  state.uirevision += 1;  // a new axis: the old zoom means nothing there
}

// A zoom of the step axis shared by every chart; null: the whole run.
export function setZoom(range) {
  state.opts.zoom = range;
}

// --- metric panels ---------------------------------------------------------------------------------
export function setMetricNames(names) {
  state.metricNames = names;
}

export function setPanels(panels) {
  state.panels = panels;
}

export function addPanel(name) {
  if (state.panels.some((p) => p.name === name)) return false;
  state.panels.push({name, log: false});
  return true;
}

export function removePanel(name) {
  state.panels = state.panels.filter((p) => p.name !== name);
  state.metricSeries.delete(name);
}

export function setPanelLog(name, log) {
  const panel = state.panels.find((p) => p.name === name);
  if (panel) panel.log = log;
}

export function setMetricSeries(series) {
  for (const s of series) state.metricSeries.set(s.name, {x: s.steps, y: s.values, downsampled: s.downsampled});
}

// A zoomed range of one metric at full resolution, in place of its points between start and end.
export function spliceMetric(name, start, end, s) {
  const cur = state.metricSeries.get(name);
  if (cur) Object.assign(cur, splice(cur, start, end, s.steps, s.values));
}

// A live metric value; false when its step came with the loaded series already.
export function appendMetric(name, step, value) {
  const d = state.metricSeries.get(name);
  if (!d || step <= last(d.x)) return false;
  d.x.push(step);
  d.y.push(value);
  return true;
}

export function setDrawn() {
  state.drawn = true;
}

// --- commands --------------------------------------------------------------------------------------
// False when the command is marked already.
export function addMarker(marker) {
  if (state.markers.has(marker.id)) return false;
  state.markers.set(marker.id, marker);
  return true;
}

export function recordAck(ack) {
  state.acks.set(ack.id, ack);
}

// --- reloads ---------------------------------------------------------------------------------------
// Counts live steps; true when as many have arrived as a chart holds downsampled points (time to
// reload the series downsampled, so a page left open on a fast run stays as light as a fresh one).
export function countLive(n) {
  state.reload.live += n;
  return !state.reload.running && state.reload.live >= page.points.per_arm;
}

export function startReload() {
  state.reload.running = true;
}

export function holdSteps(steps) {
  state.reload.held.push(...steps);
}

// Answers the steps held during the reload (to append now: those the new series has are skipped).
export function endReload() {
  const held = state.reload.held;
  state.reload = {live: 0, running: false, held: []};
  return held;
}
