// The run's live stream (/api/runs/{run}/events, docs/sse.md): new steps appended to the charts and the
// arms table, the run's status, command acks (acks.js). Also the loads of the charts' data: the first,
// a reload after a chart's worth of live steps (downsampled again, so a page left open on a fast run
// stays as light as a fresh one), and one after a `reset`.
import {applyAcks, resync} from "./acks.js";
import {drawAll, extend, refineZoomed} from "./charts.js";
import {syncLegend} from "./controls.js";
import {addEvals, loadEvals} from "./evals.js";
import {appendMetrics, reloadPanels} from "./metrics.js";
import {API, CHARTS, flash} from "./page.js";
import {loadViews} from "./series.js";
import {followArms, followRun} from "./steer.js";
import {
  addArm, appendPart, appendValue, armIndex, countLive, endReload, holdSteps, setStepTime, startReload, state,
} from "./state.js";

export function setLive(text) {
  const el = document.getElementById("live-state");
  if (el) el.textContent = text;
}

// Every chart's view loaded afresh and drawn (the user's zoom kept, and refined). Live steps that
// arrive meanwhile are held, and appended after (those the new series has already are skipped).
export async function reload() {
  startReload();
  try {
    await loadViews();
    syncLegend();
    drawAll();
    refineZoomed();
    // The cockpit's sparklines and the heatmaps (cockpit.js, heatmaps.js) draw from the series just loaded.
    document.dispatchEvent(new Event("sb:series"));
    if (state.panels !== null) await reloadPanels();
  } finally {
    const held = endReload();
    if (held.length) appendSteps(held);
  }
}

function fmt(v, digits) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }

function showStep(step) {
  const stepEl = document.getElementById("run-step");
  if (stepEl) stepEl.textContent = step.step;
  for (const rec of step.arms) {
    const row = document.querySelector(`tr[data-arm="${CSS.escape(rec.arm)}"]`);
    if (!row) continue;
    row.querySelector(".arm-state").textContent = rec.state;
    row.querySelector(".arm-p").textContent = fmt(rec.p, 3);
    row.querySelector(".arm-pin").textContent = fmt(rec.pin, 3);
    row.querySelector(".arm-boost").textContent = fmt(rec.boost, 2);
  }
  followArms(step.arms);
}

function appendSteps(steps) {
  if (state.reload.running) { holdSteps(steps); return; }
  const arms = state.arms.length;
  const traces = state.parts.size;
  const points = new Map();  // chart id -> Map(trace index -> {steps, raw})
  const add = (chart, i, step, value, n) => {
    if (!points.has(chart.id)) points.set(chart.id, new Map());
    const m = points.get(chart.id);
    if (!m.has(i)) m.set(i, {steps: [], raw: [], n: []});
    m.get(i).steps.push(step);
    m.get(i).raw.push(value);
    m.get(i).n.push(n);
  };
  for (const s of steps) {
    setStepTime(s.step, s.ts);
    for (const rec of s.arms) {
      addArm(rec.arm);
      for (const chart of CHARTS) {
        const view = state.views.get(chart.id);
        if (view.metric === "parts") {
          for (const [part, value] of Object.entries(rec[view.field] || {})) {
            if (typeof value !== "number") continue;
            const i = appendPart(rec.arm, part, s.step, value);
            if (i >= 0) add(chart, i, s.step, value, rec.n_step);
          }
          continue;
        }
        const value = rec[view.field];
        if (value === null || value === undefined) continue;
        if (appendValue(view.metric, rec.arm, s.step, value)) add(chart, armIndex(rec.arm), s.step, value, rec.n_step);
      }
    }
  }
  if (steps.length) showStep(steps[steps.length - 1]);
  appendMetrics(steps);
  if (state.arms.length !== arms) syncLegend();
  if (!state.drawn) return;
  if (countLive(steps.length)) {
    performance.mark("sb:reload");
    reload().catch(flash);
  }
  // A new trace (an arm, or an arm's part): the charts are drawn anew.
  if (state.arms.length !== arms || state.parts.size !== traces) { drawAll(); return; }
  for (const chart of CHARTS) if (points.has(chart.id)) extend(chart, points.get(chart.id));
}

// Steps are drawn in batches: redrawing every chart for every step of a fast run would keep a slow
// machine's browser busy forever.
const FLUSH_MS = 400;
const queue = {steps: [], timer: null};

function queueSteps(steps) {
  queue.steps.push(...steps);
  if (queue.timer === null) {
    queue.timer = setTimeout(() => {
      const batch = queue.steps;
      Object.assign(queue, {steps: [], timer: null});
      appendSteps(batch);
    }, FLUSH_MS);
  }
}

// `after`: the event seq of the data the page was rendered with; reconnects send Last-Event-ID.
export function connect(after) {
  const es = new EventSource(`${API}/events?after=${after}`);
  es.addEventListener("ready", () => setLive("live"));
  es.addEventListener("update", (e) => {
    const d = JSON.parse(e.data);
    // The modules that keep their own view of the run (cockpit.js, heatmaps.js) take the event as it is.
    document.dispatchEvent(new CustomEvent("sb:update", {detail: d}));
    if (d.steps) queueSteps(d.steps);
    if (d.acks) applyAcks(d.acks);
    if (d.evals) addEvals(d.evals);
    if (d.status) {
      const badge = document.getElementById("run-status");
      if (badge) { badge.textContent = d.status.status; badge.className = `badge status-${d.status.status}`; }
      followRun(d.status.status);
    }
    setLive("live");  // the step is the header's (one counter, updated as the steps are drawn)
  });
  es.addEventListener("reset", () => {
    setLive("reloading…");
    resync();
    document.dispatchEvent(new Event("sb:reset"));
    reload().catch(flash);
    loadEvals().catch(flash);
  });
  es.onerror = () => setLive("reconnecting…");
}
