// The evaluation chart (templates/run.html #eval): the outcome a curriculum is judged by. For one
// evaluation set (agent.log_eval's `name`; a selector when the run has several), one line per arm and
// a bold mean over arms, accuracy against step, and an optional dashed target line (a page setting,
// kept per run in localStorage). Loaded from GET /api/runs/{run}/evals, then kept live from the
// `evals` of the run's `update` events (docs/sse.md): evaluations are rare, so each is drawn at once.
import {API, getJSON, page} from "./page.js";
import {state} from "./state.js";

const MEAN = "mean over arms";
const TARGET_KEY = `sb:eval-target:${page.run}`;

// This chart's state: the points by set, arm and step, which set is shown, the target.
const evals = {
  sets: new Map(),  // name -> Map(arm -> Map(step -> accuracy)), arms in the order first seen
  foreign: [],  // arms evaluated that are not training arms: coloured after the run's arms
  chosen: null,  // the set the user picked; until then, the one evaluated last
  newest: {name: null, step: -1},
  target: null,  // in [0, 1], or null: no target line
  loaded: false,  // until the first load, nothing is drawn (not even "no evaluation yet")
};

const $ = (id) => document.getElementById(id);

function record(points) {
  for (const p of points) {
    if (!evals.sets.has(p.name)) evals.sets.set(p.name, new Map());
    const arms = evals.sets.get(p.name);
    if (!arms.has(p.arm)) arms.set(p.arm, new Map());
    arms.get(p.arm).set(p.step, p.accuracy);
    if (!state.arms.includes(p.arm) && !evals.foreign.includes(p.arm)) evals.foreign.push(p.arm);
    if (p.step > evals.newest.step) evals.newest = {name: p.name, step: p.step};
  }
}

function shownName() {
  if (evals.chosen !== null && evals.sets.has(evals.chosen)) return evals.chosen;
  if (evals.newest.name !== null) return evals.newest.name;
  return evals.sets.keys().next().value ?? null;
}


const sortedSteps = (byStep) => [...byStep.keys()].sort((a, b) => a - b);

// At each step, the mean over the arms evaluated at that step.
function meanOverArms(arms) {
  const sums = new Map();  // step -> [sum, n]
  for (const byStep of arms.values()) {
    for (const [step, acc] of byStep) {
      const s = sums.get(step) || [0, 0];
      s[0] += acc;
      s[1] += 1;
      sums.set(step, s);
    }
  }
  const x = sortedSteps(sums);
  return {x, y: x.map((step) => sums.get(step)[0] / sums.get(step)[1])};
}

// An arm's colour and place: the page's (the "Arms shown" swatches); an arm only evaluated comes after.
function colourIndex(arm) {
  const i = state.arms.indexOf(arm);
  return i >= 0 ? i : state.arms.length + evals.foreign.indexOf(arm);
}

function traces(arms, mean) {
  const ordered = [...arms].sort(([a], [b]) => colourIndex(a) - colourIndex(b));
  const out = ordered.map(([arm, byStep]) => {
    const x = sortedSteps(byStep);
    return {
      type: "scatter", mode: "lines+markers", name: arm, legendgroup: arm, x, y: x.map((s) => byStep.get(s)),
      line: {color: SB.color(colourIndex(arm)), width: 1.5}, marker: {size: 5},
      hovertemplate: `${arm}: %{y:.3f}<extra></extra>`,
      visible: state.opts.hidden.has(arm) ? "legendonly" : true,
      // The run's arms are named by the page's legend ("Arms shown"); only the others get an entry here.
      showlegend: !state.arms.includes(arm),
    };
  });
  out.push({
    type: "scatter", mode: "lines+markers", name: MEAN, legendgroup: MEAN, x: mean.x, y: mean.y,
    line: {color: SB.colours().fg, width: 3.5}, marker: {size: 7},
    hovertemplate: `<b>${MEAN}: %{y:.3f}</b><extra></extra>`,
    // Over every arm evaluated, hidden ones included: hiding a line does not change the outcome.
    visible: true,
  });
  return out;
}

function targetLine() {
  if (evals.target === null) return {shapes: [], annotations: []};
  const y = evals.target;
  return {
    shapes: [{type: "line", xref: "paper", x0: 0, x1: 1, yref: "y", y0: y, y1: y,
      line: {color: "#b42318", width: 1.5, dash: "dash"}}],
    annotations: [{xref: "paper", x: 0, xanchor: "left", yref: "y", y, yanchor: "bottom", showarrow: false,
      text: `target ${y}`, font: {size: 11, color: "#b42318"}}],
  };
}

// The line under the title: the latest mean, the best so far, when the target was first reached.
function summary(name, mean) {
  const n = mean.x.length;
  if (!n) return "";
  const best = mean.y.indexOf(Math.max(...mean.y));
  const parts = [`${name} at step ${mean.x[n - 1]}: mean ${mean.y[n - 1].toFixed(3)}`];
  if (best !== n - 1) parts.push(`best ${mean.y[best].toFixed(3)} at step ${mean.x[best]}`);
  if (evals.target !== null) {
    const hit = mean.y.findIndex((v) => v >= evals.target);
    parts.push(hit < 0 ? `target ${evals.target} not reached` : `target ${evals.target} reached at step ${mean.x[hit]}`);
  }
  return parts.join(" · ");
}

function syncPicker() {
  const select = $("eval-name");
  if (!select) return;
  const names = [...evals.sets.keys()].sort();
  if ([...select.options].map((o) => o.value).join("\u0000") !== names.join("\u0000")) {
    select.replaceChildren(...names.map((n) => new Option(n, n)));
  }
  select.value = shownName() ?? "";
  $("eval-picker").hidden = names.length < 2;
}

export function drawEvals() {
  const el = $("chart-eval");
  if (!el || !evals.loaded) return;
  const name = shownName();
  syncPicker();
  $("eval-empty").hidden = name !== null;
  el.hidden = name === null;
  if (name === null) return;
  const arms = evals.sets.get(name);
  const mean = meanOverArms(arms);
  $("eval-summary").textContent = summary(name, mean);
  Plotly.react(el, traces(arms, mean), SB.layout({
    uirevision: name,  // the zoom is kept while the same set is shown
    xaxis: {title: {text: "step"}, zeroline: false, rangemode: "tozero", unifiedhovertitle: {text: "step %{x}"}},
    yaxis: {title: {text: "accuracy"}, range: [0, 1.02], zeroline: false},
    ...targetLine(),
    // Above the plot, where it takes no height from it (few entries: the mean, arms only evaluated).
    showlegend: true,
    legend: {orientation: "h", x: 0, xanchor: "left", y: 1, yanchor: "bottom", font: {size: 11}},
    margin: {l: 56, r: 12, t: 26, b: 40},
  }), SB.config);
}

export async function loadEvals() {
  record((await getJSON(`${API}/evals`)).evals);
  evals.loaded = true;
  drawEvals();
}

// Live points (an update event's `evals`). A point the load already had is only set again.
export function addEvals(points) {
  record(points);
  drawEvals();
}

function parseTarget(text) {
  if (text === "") return null;
  const v = Number(text);
  return Number.isFinite(v) && v >= 0 && v <= 1 ? v : undefined;
}

export function bindEvals() {
  const select = $("eval-name");
  const input = $("eval-target");
  if (!select || !input) return;
  select.addEventListener("change", () => {
    evals.chosen = select.value;
    drawEvals();
  });
  const saved = parseTarget(localStorage.getItem(TARGET_KEY) ?? "");
  if (saved !== undefined && saved !== null) {
    evals.target = saved;
    input.value = String(saved);
  }
  input.addEventListener("input", () => {
    const v = parseTarget(input.value.trim());
    input.setCustomValidity(v === undefined ? "a number from 0 to 1" : "");
    if (v === undefined) return;  // the line stays where it was until the number is a valid one
    evals.target = v;
    if (v === null) localStorage.removeItem(TARGET_KEY); else localStorage.setItem(TARGET_KEY, String(v));
    drawEvals();
  });
}
