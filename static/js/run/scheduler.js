// The scheduler panel (templates/_scheduler_panel.html): the scheduler in force and its parameters, and for an
// operator a command on it (set parameters, switch, freeze, unfreeze; docs/formulas.md "Scheduler commands"):
// - the inputs are built from the parameter schema of GET /api/runs/{run}/scheduler (numbers with their
//   ranges, choices and booleans as selects, json as text);
// - Preview asks POST /api/runs/{run}/scheduler/preview and shows, per arm, the probability in force and the
//   one the command would put in force (numbers and a pair of bars); Send stays off until the command on
//   screen has been previewed, and any edit asks for a new preview;
// - Send confirms the exact command (as steer.js does for the arms) and posts it to
//   POST /api/runs/{run}/commands with the reason;
// - live: the `scheduler` entry of the update events and the scheduler commands' acks refresh what is in
//   force and the history; an ended run has no controls, a stale one shows them disabled with the reason.
import {API, flash, getJSON, page} from "./page.js";

const KINDS = ["set_params", "switch", "freeze", "unfreeze"];
const ENDED = ["finished", "failed", "interrupted"];
const $ = (id) => document.getElementById(id);
const section = $("sched");
const canSteer = Boolean(section && section.dataset.canSteer);

const panel = {data: null, live: null, status: page.status, previewed: null, timer: null};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

const show = (v) => (typeof v === "object" && v !== null ? JSON.stringify(v) : String(v));
// A long value (a replay's schedule, a staged plan) cut short; the inputs hold it whole.
const brief = (v) => { const t = show(v); return t.length > 40 ? `${t.slice(0, 39)}…` : t; };
const paramsText = (params) => Object.entries(params || {}).map(([k, v]) => `${k}=${brief(v)}`).join(", ");

// A parameter's range in words: "(0, ∞)", "[1, 100000]".
function rangeText(spec) {
  if (spec.low === null && spec.high === null) return "";
  const lo = spec.low === null ? "(-∞" : `${spec.low_open ? "(" : "["}${spec.low}`;
  const hi = spec.high === null ? "∞)" : `${spec.high}${spec.high_open ? ")" : "]"}`;
  return `${lo}, ${hi}`;
}

// What is in force, in the heading's line.
function showNow() {
  const d = panel.data;
  const now = $("sched-now");
  if (!d || !now) return;
  const params = paramsText(d.params);
  now.textContent = `${d.name}${params ? ` (${params})` : ""}${d.frozen ? " · frozen" : ""}`
    + (d.step >= 0 ? ` · as of step ${d.step}` : "");
  now.dataset.scheduler = d.name;
  now.dataset.frozen = d.frozen ? "1" : "";
}

// The inputs of one scheduler's parameters: set_params starts from the values in force, switch from the
// new scheduler's defaults (left empty).
function buildParams(schema, values) {
  const box = $("sched-params");
  box.replaceChildren();
  for (const [name, spec] of Object.entries(schema || {})) {
    const current = values && name in values ? values[name] : undefined;
    let input;
    if (spec.choices && spec.choices.length) {
      input = el("select", {});
      if (current === undefined) input.append(el("option", {value: "", textContent: "default"}));
      for (const c of spec.choices) input.append(el("option", {value: show(c), textContent: show(c)}));
    } else if (spec.type === "bool") {
      input = el("select", {});
      if (current === undefined) input.append(el("option", {value: "", textContent: "default"}));
      for (const c of ["true", "false"]) input.append(el("option", {value: c, textContent: c}));
    } else if (spec.type === "json") {
      input = el("input", {type: "text", placeholder: current === undefined ? "default (JSON)" : "JSON"});
    } else {
      input = el("input", {type: "number", inputmode: "decimal", step: spec.type === "int" ? "1" : "any",
        placeholder: current === undefined ? "default" : ""});
      if (spec.low !== null) input.min = String(spec.low);
      if (spec.high !== null) input.max = String(spec.high);
    }
    if (current !== undefined) input.value = show(current);
    Object.assign(input.dataset, {param: name, type: spec.type, initial: input.value});
    input.id = `sched-param-${name}`;
    const range = rangeText(spec);
    box.append(el("label", {className: "sched-param", htmlFor: input.id},
      el("span", {className: "sched-param-name", textContent: name}), input,
      el("span", {className: "hint", textContent: `${spec.doc || ""}${range ? ` ${range}` : ""}`})));
  }
  if (!box.children.length && $("sched-kind").value !== "freeze" && $("sched-kind").value !== "unfreeze") {
    box.append(el("p", {className: "hint", textContent: "this scheduler has no parameters"}));
  }
}

function parseValue(input) {
  const raw = input.value.trim();
  switch (input.dataset.type) {
    case "int": case "float": {
      const v = Number(raw);
      if (raw === "" || !Number.isFinite(v)) throw new Error(`${input.dataset.param} must be a number`);
      return v;
    }
    case "bool": return raw === "true";
    case "json":
      try { return JSON.parse(raw); } catch { throw new Error(`${input.dataset.param} must be JSON`); }
    default: return raw;
  }
}

// The command the form describes (throws with what is missing).
function command() {
  const kind = $("sched-kind").value;
  const body = {kind};
  if (kind === "freeze" || kind === "unfreeze") return body;
  const params = {};
  for (const input of $("sched-params").querySelectorAll("[data-param]")) {
    // set_params: only what changed; switch: what was filled in (the rest takes the defaults).
    const changed = kind === "set_params" ? input.value !== input.dataset.initial : input.value.trim() !== "";
    if (changed) params[input.dataset.param] = parseValue(input);
  }
  if (kind === "switch") {
    body.scheduler = $("sched-target").value;
    if (!body.scheduler) throw new Error("no other scheduler to switch to");
    if (Object.keys(params).length) body.params = params;
  } else {
    if (!Object.keys(params).length) throw new Error("change a parameter first");
    body.params = params;
  }
  return body;
}

// The exact command in words, for the confirmation.
export function describe(body, current) {
  switch (body.kind) {
    case "set_params": return `Set ${current}'s ${Object.entries(body.params)
      .map(([k, v]) => `${k} to ${show(v)}`).join(", ")}`;
    case "switch": return `Switch the scheduler from ${current} to ${body.scheduler}`
      + (body.params ? ` with ${paramsText(body.params)}` : " (its default parameters)");
    case "freeze": return `Freeze the ${current} scheduler (hold the probabilities in force)`;
    default: return `Unfreeze the ${current} scheduler`;
  }
}

function setError(text) {
  const err = $("sched-error");
  err.textContent = text || "";
  err.hidden = !text;
}

// The form changed: what was previewed no longer describes it.
function invalidate() {
  panel.previewed = null;
  $("sched-send").disabled = true;
  $("sched-send").title = "preview the command first";
  const fig = $("sched-preview");
  if (!fig.hidden) fig.dataset.stale = "1";
  setError("");
  // A fresh preview shortly after the last edit (one request per pause in typing).
  clearTimeout(panel.timer);
  panel.timer = setTimeout(() => { if (!fig.hidden) preview().catch(flash); }, 400);
}

function kindChanged() {
  const d = panel.data;
  const kind = $("sched-kind").value;
  $("sched-target-label").hidden = kind !== "switch";
  if (kind === "switch") buildParams(d.schedulers[$("sched-target").value], null);
  else if (kind === "set_params") buildParams(d.param_schema, d.params);
  else buildParams({}, null);
  $("sched-preview").hidden = true;
  invalidate();
}

// The form's choices for what is in force: switch offers the other schedulers, freeze or unfreeze the one
// that applies. The inputs are rebuilt only when the scheduler changed or they hold no edit.
function syncForm(previous) {
  const d = panel.data;
  if (!canSteer || !d) return;
  const target = $("sched-target");
  const others = Object.keys(d.schedulers).filter((n) => n !== d.name);
  const keep = target.value;
  target.replaceChildren(...others.map((n) => el("option", {value: n, textContent: n})));
  if (others.includes(keep)) target.value = keep;
  const kind = $("sched-kind");
  kind.querySelector('option[value="freeze"]').disabled = d.frozen;
  kind.querySelector('option[value="unfreeze"]').disabled = !d.frozen;
  if (kind.selectedOptions[0] && kind.selectedOptions[0].disabled) kind.value = "set_params";
  // An edit: a value changed by hand (in set_params, one the command in force has just set is none).
  const setting = kind.value === "set_params";
  const edited = [...$("sched-params").querySelectorAll("[data-param]")].some((i) => i.value !== i.dataset.initial
    && !(setting && d.params && i.dataset.param in d.params && i.value === show(d.params[i.dataset.param])));
  const changed = !previous || previous.name !== d.name || previous.frozen !== d.frozen
    || JSON.stringify(previous.params) !== JSON.stringify(d.params);
  if (!previous || (changed && !edited)) kindChanged();
  else if (changed) { $("sched-preview").dataset.stale = "1"; invalidate(); }
}

// The arms that matter first (the larger of p now and after), and bars scaled to the largest p shown, so
// that the few arms holding most of a 64-arm run's mass read at a glance (ties in arm order).
function drawRows(arms) {
  const top = Math.max(1e-12, ...arms.map((a) => Math.max(a.current, a.preview)));
  const width = (p) => `${Math.max(0, Math.min(100, (p / top) * 100)).toFixed(2)}%`;
  const sorted = arms.map((a, i) => ({...a, i}))
    .sort((a, b) => Math.max(b.current, b.preview) - Math.max(a.current, a.preview) || a.i - b.i);
  return {top, rows: sorted.map((a) => {
    const delta = a.preview - a.current;
    const moved = Math.abs(delta) >= 5e-4;
    const bars = el("td", {className: "bars"},
      el("span", {className: "bar bar-now"}), el("span", {className: "bar bar-after"}));
    bars.children[0].style.width = width(a.current);
    bars.children[1].style.width = width(a.preview);
    return el("tr", {dataset: {schedArm: a.arm, current: String(a.current), preview: String(a.preview)}},
      el("th", {scope: "row", textContent: a.arm}),
      el("td", {className: "num", textContent: a.current.toFixed(3)}),
      el("td", {className: "num", textContent: a.preview.toFixed(3)}),
      el("td", {className: `num delta${moved ? (delta > 0 ? " up" : " down") : ""}`,
        textContent: moved ? `${delta > 0 ? "+" : "−"}${Math.abs(delta).toFixed(3)}` : "0"}),
      bars);
  })};
}

function drawPreview(body, res, ms) {
  const {top, rows} = drawRows(res.arms);
  $("sched-bars-scale").textContent = `(bars: p / ${top.toFixed(3)})`;
  $("sched-preview-rows").replaceChildren(...rows);
  const older = res.last_step > res.snapshot_step ? ` (the run is at step ${res.last_step})` : "";
  const pending = res.pending ? `, after ${res.pending} pending command${res.pending > 1 ? "s" : ""}` : "";
  $("sched-preview-caption").textContent = `${describe(body, panel.data.name)}: ${res.message}. From the `
    + `scheduler's state at step ${res.snapshot_step}${older}${pending}; answered in ${Math.round(ms)} ms.`;
  const fig = $("sched-preview");
  Object.assign(fig.dataset, {snapshotStep: String(res.snapshot_step), stale: "", ms: String(Math.round(ms))});
  fig.hidden = false;
}

async function postJSON(url, body) {
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const r = await fetch(url, {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", Accept: "application/json", "X-CSRF-Token": token}});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data?.error?.message || (typeof data.detail === "string" ? data.detail : `${r.status}`));
  return data;
}

async function preview() {
  let body;
  try { body = command(); } catch (e) { setError(e.message); return; }
  const asked = JSON.stringify(body);
  $("sched-status").textContent = "previewing…";
  const t0 = performance.now();
  try {
    const res = await postJSON(`${API}/scheduler/preview`, body);
    let still;
    try { still = JSON.stringify(command()) === asked; } catch { still = false; }
    if (!still) return;  // edited meanwhile: that edit asks for its own preview
    drawPreview(body, res, performance.now() - t0);
    panel.previewed = asked;
    setError("");
    $("sched-status").textContent = "";
    const send = $("sched-send");
    send.disabled = panel.status === "stale";
    send.title = panel.status === "stale" ? "the run is stale: its trainer would not receive the command" : "";
  } catch (e) {
    $("sched-status").textContent = "";
    $("sched-preview").hidden = true;
    setError(e.message);
  }
}

async function send(e) {
  e.preventDefault();
  let body;
  try { body = command(); } catch (err) { setError(err.message); return; }
  if (JSON.stringify(body) !== panel.previewed) { setError("preview the command first"); return; }
  const reason = $("sched-reason").value.trim();
  const text = `${describe(body, panel.data.name)}?${reason ? `\nReason: ${reason}` : ""}\nApplied at the next step.`;
  if (!window.confirm(text)) return;
  $("sched-send").disabled = true;
  try {
    const res = await postJSON(`${API}/commands`, {...body, reason});
    $("sched-reason").value = "";
    $("sched-status").textContent = "sent; pending until the trainer applies it";
    $("sched-status").dataset.commandId = res.id;
    await refresh();
  } catch (err) {
    setError(err.message);
    $("sched-send").disabled = false;
  }
}

function statusText(c) {
  if (c.status === "applied") return `applied at step ${c.applied_step}${c.message ? `: ${c.message}` : ""}`;
  if (c.status === "rejected") return `rejected: ${c.message || ""}`;
  return c.status;
}

function drawHistory() {
  const history = panel.data.history;
  $("sched-history-count").textContent = String(history.length);
  const rows = history.map((c) => el("tr", {dataset: {schedCommand: c.id, status: c.status}},
    el("td", {textContent: c.label}),
    el("td", {className: `status-${c.status}`, textContent: statusText(c)}),
    el("td", {textContent: c.actor}),
    el("td", {textContent: c.reason || "—"}),
    el("td", {className: "num", textContent: new Date(c.created_at).toLocaleString()})));
  if (!rows.length) {
    rows.push(el("tr", {}, el("td", {colSpan: 5, className: "hint", textContent: "no scheduler command yet"})));
  }
  $("sched-history").replaceChildren(...rows);
}

async function refresh() {
  const previous = panel.data;
  const data = await getJSON(`${API}/scheduler`);
  // A live `scheduler` entry newer than this read (it came while the request was out, or the read was of
  // a snapshot older than the ack's step) wins.
  if (panel.live && panel.live.step > data.step) Object.assign(data, panel.live);
  panel.data = data;
  showNow();
  drawHistory();
  syncForm(previous);
  const id = $("sched-status")?.dataset.commandId;
  const mine = id && panel.data.history.find((c) => c.id === id);
  if (mine && mine.status !== "pending") {
    $("sched-status").textContent = statusText(mine);
    delete $("sched-status").dataset.commandId;
  }
}

// The run's status, as steer.js follows it: no controls once it ended, disabled while it is stale.
function follow(status) {
  panel.status = status;
  if (!canSteer) return;
  const ended = ENDED.includes(status);
  const stale = status === "stale";
  const note = $("sched-note");
  note.hidden = !(ended || stale);
  note.textContent = ended ? `This run has ended (${status}): the scheduler can no longer be changed.`
    : "No word from this run's trainer for a while (stale): scheduler commands are off until it sends a step again.";
  $("sched-form").hidden = ended;
  if (ended) $("sched-preview").hidden = true;
  for (const b of $("sched-form").querySelectorAll("button")) {
    b.title = stale ? "the run is stale: its trainer would not receive the command" : "";
    if (b.id === "sched-preview-btn") b.disabled = stale;
  }
  if (stale) $("sched-send").disabled = true;
}

function onUpdate(e) {
  const d = e.detail;
  if (d.status) follow(d.status.status);
  else if (d.steps && panel.status === "stale") follow("running");
  const acked = (d.acks || []).some((a) => KINDS.includes(a.kind));
  if (!panel.data) return;
  if (d.scheduler) panel.live = d.scheduler;
  if (d.scheduler && !acked) {
    // What is in force now; the history and schema come with the next refresh when the name changed.
    const previous = {...panel.data};
    Object.assign(panel.data, d.scheduler);
    if (previous.name !== d.scheduler.name) { refresh().catch(flash); return; }
    showNow();
    syncForm(previous);
  }
  if (acked) refresh().catch(flash);
}

function bind() {
  if (!canSteer) return;
  $("sched-kind").addEventListener("change", kindChanged);
  $("sched-target").addEventListener("change", kindChanged);
  $("sched-params").addEventListener("input", invalidate);
  $("sched-preview-btn").addEventListener("click", () => { clearTimeout(panel.timer); preview().catch(flash); });
  $("sched-form").addEventListener("submit", (e) => { send(e).catch(flash); });
}

if (section) {
  bind();
  follow(page.status);
  document.addEventListener("sb:update", onUpdate);
  document.addEventListener("sb:reset", () => { refresh().catch(flash); });
  refresh().catch(flash);
}
