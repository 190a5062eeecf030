// The arms table as a cockpit (templates/run.html #cockpit): per arm the probability now, recent accuracy,
// mean |A| and zero-variance share, samples, the scheduler's score and its parts (the "why"), the diagnosis
// with its since-step and suggested command (accept or dismiss, docs/diagnosis.md), sparklines of p and
// accuracy; sortable by any column; live from the run's stream (live.js dispatches `sb:update` and
// `sb:series`). It opens on GET /api/runs/{run}/diagnoses?latest=1 (one request); the step entries keep
// it current, folding each arm's figures with the diagnosis's own decay (1 - 1/window).
import {drawMarkers} from "./charts.js";
import {setDiagnosisMarkers} from "./diagmarks.js";
import {API, flash, getJSON} from "./page.js";
import {armIndex, state} from "./state.js";

const table = document.getElementById("cockpit");
const canSteer = table && table.dataset.canSteer === "1";
const arms = new Map();  // arm -> its model (below)
const responses = new Map();  // "arm|diagnosis|since" -> "accepted" | "dismissed"
let lambda = 1 - 1 / 20;
const sort = {key: null, dir: 1};
// How bad a diagnosis is, for sorting (worst first when descending).
const SEVERITY = {regressing: 7, starved: 6, too_hard: 5, unstable: 4, saturated: 3, learning: 2, retired: 1};

function model(arm) {
  if (!arms.has(arm)) {
    arms.set(arm, {arm, p: null, acc: null, mab: null, zv: null, n_step: null, n_total: null, score: null,
      parts: {}, state: null, pin: null, boost: null, w: 0, g: 0, diag: null});
  }
  return arms.get(arm);
}

const fmt = (v, d) => (v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toFixed(d));
const pct = (v) => (v === null || v === undefined ? "—" : `${Math.round(100 * v)} %`);
const key = (arm, diagnosis, since) => `${arm}|${diagnosis}|${since}`;

// --- data in -----------------------------------------------------------------------------------------
function openOn(doc) {
  lambda = 1 - 1 / (doc.window || 20);
  const win = document.getElementById("cockpit-window");
  if (win) win.textContent = doc.window;
  for (const r of doc.responses) responses.set(key(r.arm, r.diagnosis, r.since_step), r.response);
  for (const e of doc.arms) {
    const m = model(e.arm);
    const f = e.figures || {};
    m.diag = e;
    m.acc = f.accuracy ?? null;
    m.mab = f.mean_abs_adv ?? null;
    m.zv = f.zero_var ?? null;
    m.w = f.recent_completions || 0;
  }
  for (const r of (doc.latest || {arms: []}).arms) {
    const m = model(r.arm);
    Object.assign(m, {p: r.p, n_step: r.n_step, n_total: r.n_total, score: r.score, parts: r.parts || {}});
    // The zero-variance share is group-weighted; its decayed group count is the completions' times the
    // arm's groups per completion.
    m.g = r.n_step && r.n_groups ? m.w * r.n_groups / r.n_step : m.w / 8;
    if (m.acc === null) m.acc = r.accuracy;
    if (m.mab === null) m.mab = r.mean_abs_adv;
    if (m.zv === null) m.zv = r.zero_var;
  }
  if (setDiagnosisMarkers(doc.changes, false) && state.drawn) drawMarkers();
}

// One step's arm record folded in: what the server's decayed means do (docs/diagnosis.md).
function fold(rec) {
  const m = model(rec.arm);
  Object.assign(m, {p: rec.p, n_step: rec.n_step, n_total: rec.n_total, score: rec.score, parts: rec.parts || {},
    state: rec.state, pin: rec.pin, boost: rec.boost});
  const n = rec.n_step || 0;
  const w = lambda * m.w + n;
  if (n > 0) {
    if (rec.accuracy !== null) m.acc = m.acc === null ? rec.accuracy : (lambda * m.w * m.acc + n * rec.accuracy) / w;
    if (rec.mean_abs_adv !== null) {
      m.mab = m.mab === null ? rec.mean_abs_adv : (lambda * m.w * m.mab + n * rec.mean_abs_adv) / w;
    }
  }
  m.w = w;
  const ng = rec.n_groups || 0;
  const g = lambda * m.g + ng;
  if (ng > 0 && rec.zero_var !== null) m.zv = m.zv === null ? rec.zero_var : (lambda * m.g * m.zv + ng * rec.zero_var) / g;
  m.g = g;
}

// --- drawing -----------------------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";
const SPARK_W = 96, SPARK_H = 13, SPARK_BINS = 48;

// Bin means of a series over its own step range: a sparkline of a few dozen points, whatever its length.
function binned(series) {
  if (!series || !series.x.length) return [];
  const x0 = series.x[0], x1 = series.x[series.x.length - 1];
  const span = Math.max(1, x1 - x0);
  const sum = new Float64Array(SPARK_BINS), cnt = new Uint32Array(SPARK_BINS);
  for (let i = 0; i < series.x.length; i++) {
    const v = series.y[i];
    if (v === null || v === undefined) continue;
    const b = Math.min(SPARK_BINS - 1, Math.floor((series.x[i] - x0) / span * SPARK_BINS));
    sum[b] += v; cnt[b] += 1;
  }
  const out = [];
  for (let b = 0; b < SPARK_BINS; b++) if (cnt[b]) out.push([b, sum[b] / cnt[b]]);
  return out;
}

function sparkline(points, lo, hi, cls, color, title) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${SPARK_W} ${SPARK_H}`);
  svg.setAttribute("width", SPARK_W);
  svg.setAttribute("height", SPARK_H);
  svg.setAttribute("class", `sparkline ${cls}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const t = document.createElementNS(SVG, "title");
  t.textContent = title;
  svg.append(t);
  if (points.length) {
    const line = document.createElementNS(SVG, "polyline");
    const sx = (b) => (b + 0.5) * SPARK_W / SPARK_BINS;
    const sy = (v) => SPARK_H - 1.5 - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo || 1) * (SPARK_H - 3);
    line.setAttribute("points", points.map(([b, v]) => `${sx(b).toFixed(1)},${sy(v).toFixed(1)}`).join(" "));
    if (color) line.setAttribute("stroke", color);
    svg.append(line);
  }
  return svg;
}

function drawSparks(row, m) {
  const cell = row.querySelector(".arm-spark");
  if (!cell) return;
  const p = binned((state.series.probability || {})[m.arm]);
  const acc = binned((state.series.accuracy || {})[m.arm]);
  const pmax = Math.max(1e-3, ...p.map(([, v]) => v));
  const last = (a) => (a.length ? a[a.length - 1][1] : null);
  cell.replaceChildren(
    sparkline(p, 0, pmax, "spark-p", SB.color(armIndex(m.arm)), `p over the run: up to ${fmt(pmax, 3)}, now ${fmt(last(p), 3)}`),
    sparkline(acc, 0, 1, "spark-acc", null, `accuracy over the run (0 to 1): now ${fmt(last(acc), 2)}`),
  );
}

// The parts of the score as a bar (each part's share of their absolute sum) and their values.
function drawWhy(cell, parts) {
  const names = Object.keys(parts).filter((k) => typeof parts[k] === "number");
  if (!names.length) { cell.textContent = "—"; return; }
  const total = names.reduce((s, k) => s + Math.abs(parts[k]), 0) || 1;
  const bar = document.createElement("span");
  bar.className = "why-bar";
  bar.setAttribute("aria-hidden", "true");
  names.forEach((k, i) => {
    const seg = document.createElement("span");
    seg.className = `why-seg why-seg-${i % 3}`;
    seg.style.width = `${(100 * Math.abs(parts[k]) / total).toFixed(1)}%`;
    bar.append(seg);
  });
  const text = document.createElement("span");
  text.className = "why-text";
  text.textContent = names.map((k) => `${k} ${fmt(parts[k], 3)}`).join(" + ");
  cell.replaceChildren(bar, text);
  cell.title = `score = ${names.join(" + ")}; DUMP: mu is the exploit term (mean |A|), bonus the explore term`;
}

function drawDiag(cell, m) {
  const e = m.diag;
  if (!e || !e.diagnosis) { cell.replaceChildren(Object.assign(document.createElement("span"), {className: "diag diag-none", textContent: "not enough data"})); return; }
  const badge = Object.assign(document.createElement("span"), {className: `diag diag-${e.diagnosis}`,
    textContent: e.diagnosis.replace("_", " "), title: e.reason || ""});
  const since = Object.assign(document.createElement("span"), {className: "diag-since", textContent: `since ${e.since_step}`});
  const parts = [badge, " ", since];
  const s = e.suggestion;
  if (s) {
    const box = Object.assign(document.createElement("span"), {className: "suggestion"});
    const done = responses.get(key(m.arm, e.diagnosis, e.since_step));
    if (done) {
      box.append(Object.assign(document.createElement("span"), {className: `suggest-done suggest-${done}`,
        textContent: `${s.label}: ${done}`}));
    } else if (canSteer) {
      const accept = Object.assign(document.createElement("button"), {type: "button",
        className: "small suggest-accept", textContent: `${s.label}…`, title: `suggested: ${s.reason}`});
      accept.dataset.arm = m.arm;
      const dismiss = Object.assign(document.createElement("button"), {type: "button",
        className: "small suggest-dismiss", textContent: "dismiss", title: "dismiss this suggestion (audited)"});
      dismiss.dataset.arm = m.arm;
      box.append(accept, dismiss);
    } else {
      box.append(Object.assign(document.createElement("span"), {className: "suggest-text", textContent: `suggests ${s.label}`}));
    }
    parts.push(box);
  }
  cell.replaceChildren(...parts);
}

function setText(row, sel, text) {
  const el = row.querySelector(sel);
  if (el && el.textContent !== text) el.textContent = text;
}

function drawRow(row, sparks) {
  const m = arms.get(row.dataset.arm);
  if (!m) return;
  const sw = row.querySelector(".arm-name .swatch");
  if (sw && !sw.style.backgroundColor) sw.style.backgroundColor = SB.color(armIndex(m.arm));
  if (m.p !== null) setText(row, ".arm-p", fmt(m.p, 3));
  setText(row, ".arm-acc", fmt(m.acc, 2));
  setText(row, ".arm-mab", fmt(m.mab, 3));
  setText(row, ".arm-zv", pct(m.zv));
  setText(row, ".arm-nstep", m.n_step === null ? "—" : String(m.n_step));
  setText(row, ".arm-ntotal", m.n_total === null ? "—" : m.n_total.toLocaleString("en-US"));
  setText(row, ".arm-score", fmt(m.score, 3));
  drawWhy(row.querySelector(".arm-why"), m.parts);
  drawDiag(row.querySelector(".arm-diag"), m);
  row.dataset.diagnosis = (m.diag && m.diag.diagnosis) || "";
  if (sparks) drawSparks(row, m);
}

function rows() {
  return table ? [...table.tBodies[0].rows] : [];
}

function draw(sparks) {
  for (const row of rows()) drawRow(row, sparks);
  applySort();
}

// --- sorting -----------------------------------------------------------------------------------------
function sortValue(row, k) {
  const m = arms.get(row.dataset.arm) || {arm: row.dataset.arm};
  if (k === "arm") return Number(row.dataset.index);  // the run's arm order
  if (k === "diag") return m.diag && m.diag.diagnosis ? SEVERITY[m.diag.diagnosis] || 0 : -1;
  if (k === "state") return row.querySelector(".arm-state").textContent;
  if (k === "pin" || k === "boost") {
    const v = parseFloat(row.querySelector(`.arm-${k}`).textContent);
    return Number.isNaN(v) ? null : v;
  }
  return m[k] ?? null;
}

function applySort() {
  if (!sort.key || !table) return;
  const body = table.tBodies[0];
  if (body.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;  // not under a typing hand
  const list = rows();
  const vals = new Map(list.map((r) => [r, sortValue(r, sort.key)]));
  const sorted = list.slice().sort((a, b) => {
    const va = vals.get(a), vb = vals.get(b);
    if (va === vb) return Number(a.dataset.index) - Number(b.dataset.index);
    if (va === null) return 1;  // no value: last either way
    if (vb === null) return -1;
    return (va < vb ? -1 : 1) * sort.dir;
  });
  if (sorted.some((r, i) => r !== list[i])) body.append(...sorted);
}

function bindSort() {
  for (const th of table.tHead.querySelectorAll("th[data-sort]")) {
    th.querySelector("button.sort").addEventListener("click", () => {
      const k = th.dataset.sort;
      // Numbers and diagnoses open worst or largest first; text A to Z.
      sort.dir = sort.key === k ? -sort.dir : (th.dataset.type === "text" && k !== "diag" ? 1 : -1);
      sort.key = k;
      for (const other of table.tHead.querySelectorAll("th[aria-sort]")) other.removeAttribute("aria-sort");
      th.setAttribute("aria-sort", sort.dir > 0 ? "ascending" : "descending");
      applySort();
    });
  }
}

// --- suggestions -------------------------------------------------------------------------------------
async function post(path, body) {
  const token = document.querySelector('meta[name="csrf-token"]');
  const r = await fetch(`${API}/suggestions/${path}`, {
    method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": token ? token.content : ""},
  });
  const doc = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${r.status}: ${(doc.error && doc.error.message) || r.statusText}`);
  return doc;
}

function commandText(s) {
  const c = {kind: s.kind, arm: s.arm};
  if (s.value !== null) c.value = s.value;
  if (s.steps !== null) c.steps = s.steps;
  return JSON.stringify(c);
}

async function respond(button, accept) {
  const m = arms.get(button.dataset.arm);
  const e = m && m.diag;
  if (!e || !e.suggestion) return;
  const s = e.suggestion;
  // The confirmation: the exact command, and its reason filled in (edit it, or cancel).
  const reason = accept
    ? window.prompt(`${s.label}?\n\nSends ${commandText(s)} to the trainer, applied at its next step.\n\nReason (in the audit log):`, s.reason)
    : window.prompt(`Dismiss the suggestion "${s.label}" for ${m.arm} (${e.diagnosis} since step ${e.since_step})?\n\nWhy (in the audit log):`, "");
  if (reason === null) return;
  button.disabled = true;
  try {
    const body = {arm: m.arm, diagnosis: e.diagnosis, since_step: e.since_step};
    if (reason.trim()) body.reason = reason.trim();
    const got = await post(accept ? "accept" : "dismiss", body);
    responses.set(key(m.arm, e.diagnosis, e.since_step), got.response);
    drawRow(button.closest("tr"), false);
    htmx.trigger(document.body, "sb-ack");  // the audit log, fetched afresh
  } catch (err) {
    button.disabled = false;
    flash(err);
    if (String(err).startsWith("409")) load().catch(flash);  // the diagnosis moved on
  }
}

// --- live --------------------------------------------------------------------------------------------
let pending = null;  // a redraw waiting (steps arrive in bursts)
let lastSparks = 0;

function schedule() {
  if (pending !== null) return;
  pending = setTimeout(() => {
    pending = null;
    const sparks = performance.now() - lastSparks > 2000;  // sparklines at most every 2 s
    if (sparks) lastSparks = performance.now();
    draw(sparks);
  }, 400);
}

function onUpdate(d) {
  for (const s of d.steps || []) for (const rec of s.arms) fold(rec);
  for (const e of d.diagnoses || []) {
    const m = model(e.arm);
    m.diag = Object.assign({}, e, {previous: null});
  }
  if (d.diagnoses && setDiagnosisMarkers(d.diagnoses, true) && state.drawn) drawMarkers();
  if (d.steps || d.diagnoses) schedule();
}

async function load() {
  openOn(await getJSON(`${API}/diagnoses?latest=1&history=1000`));
  draw(true);
}

if (table) {
  bindSort();
  table.addEventListener("click", (ev) => {
    const b = ev.target.closest("button.suggest-accept, button.suggest-dismiss");
    if (b) respond(b, b.classList.contains("suggest-accept")).catch(flash);
  });
  document.addEventListener("sb:update", (ev) => onUpdate(ev.detail));
  // After the charts have painted: not on their critical path.
  document.addEventListener("sb:series", () => setTimeout(() => { lastSparks = performance.now(); draw(true); }, 0));
  document.addEventListener("sb:reset", () => load().catch(flash));
  // After the charts' first drawing: the page's first paint does not wait on this request.
  const start = () => load().catch(flash);
  if (state.drawn) start(); else document.addEventListener("sb:series", start, {once: true});
}
