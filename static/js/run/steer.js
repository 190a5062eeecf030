// The steering controls follow the run and each arm (templates/_command_form.html's forms in the arms
// table):
// - an ended run (finished, failed, interrupted) has none, and says so; a stale one shows them disabled,
//   with the reason, until a step arrives from its trainer again;
// - each arm offers only what makes sense in its state: a retired arm Restore only; an active one Pin,
//   Boost and Retire, and Release only while it is pinned or boosted;
// - an error under a form is cleared once the arm's state it was about has changed;
// - the confirmation states the exact command ("Pin kk4 to p = 0.3?"), and the reason typed in the
//   field above the table goes with it into the audit log.
// The rows' data-state, data-pinned and data-boosted drive the CSS that shows or hides each form.
import {page} from "./page.js";

const ENDED = ["finished", "failed", "interrupted"];
let current = page.status;
const $ = (id) => document.getElementById(id);
const rowOf = (arm) => document.querySelector(`tr[data-arm="${CSS.escape(arm)}"]`);

// A record's state as the row carries it: active or retired, pinned, boosted.
function mark(row, rec) {
  const was = `${row.dataset.state}|${row.dataset.pinned}|${row.dataset.boosted}`;
  row.dataset.state = rec.state || "active";
  row.dataset.pinned = rec.pin === null || rec.pin === undefined ? "" : "1";
  row.dataset.boosted = rec.boost === null || rec.boost === undefined ? "" : "1";
  const now = `${row.dataset.state}|${row.dataset.pinned}|${row.dataset.boosted}`;
  if (row.dataset.marked && was !== now) {
    // What a stale error was about has changed: it no longer applies.
    row.querySelectorAll(".form-error").forEach((el) => el.remove());
    row.querySelectorAll('[aria-invalid="true"]').forEach((el) => el.removeAttribute("aria-invalid"));
  }
  row.dataset.marked = "1";
}

const cellNumber = (row, cls) => {
  const text = (row.querySelector(cls) || {}).textContent || "";
  return /\d/.test(text) ? Number(text) : null;
};

// The rows as the server rendered them.
function markRendered() {
  for (const row of document.querySelectorAll("tr[data-arm]")) {
    mark(row, {state: (row.querySelector(".arm-state") || {}).textContent?.trim(),
      pin: cellNumber(row, ".arm-pin"), boost: cellNumber(row, ".arm-boost")});
  }
}

// A live step's arm records.
export function followArms(records) {
  if (current === "stale") followRun("running");  // a step: its trainer is back
  for (const rec of records) {
    const row = rowOf(rec.arm);
    if (row) mark(row, rec);
  }
}

// The run's status: steering is off once it has ended; a stale run warns that commands wait.
export function followRun(status) {
  current = status;
  const main = document.querySelector("main");
  const ended = ENDED.includes(status);
  main.dataset.runEnded = ended ? "1" : "";
  const note = $("steer-note");
  if (!note) return;
  const stale = status === "stale";
  note.hidden = !(ended || stale);
  note.textContent = ended
    ? `This run has ended (${status}): steering is off.`
    : "No word from this run's trainer for a while (stale): steering is off until it sends a step again.";
  for (const button of document.querySelectorAll("form.cmd button")) {
    button.disabled = stale;
    button.title = stale ? "the run is stale: its trainer would not receive the command" : "";
  }
}

function number(form, name) {
  const input = form.querySelector(`[name="${name}"]`);
  return input ? input.value.trim() : "";
}

// The exact command a form sends, in words.
export function describe(form) {
  const arm = form.dataset.arm;
  const value = number(form, "value");
  const steps = number(form, "steps");
  switch (form.dataset.kind) {
    case "pin": return `Pin ${arm} to p = ${value || "?"}`;
    case "boost": return `Boost ${arm} ×${value || "?"} ${steps ? `for ${steps} steps` : "until released"}`;
    case "retire": return `Retire ${arm} (probability 0 until restored)`;
    case "restore": return `Restore ${arm}`;
    case "release": return `Release ${arm} (clear its pin and boost)`;
    default: return `${form.dataset.kind} ${arm}`;
  }
}

function bind() {
  document.body.addEventListener("htmx:confirm", (e) => {
    const form = e.target.closest && e.target.closest("form.cmd");
    if (!form) return;
    e.preventDefault();
    const reason = ($("steer-reason") || {}).value?.trim();
    const text = `${describe(form)}?${reason ? `\nReason: ${reason}` : ""}\nApplied at the next step.`;
    if (window.confirm(text)) e.detail.issueRequest(true);
  });
  // A command accepted: its reason is spent (before the swap: the form is replaced, and events on the
  // old one no longer reach the page).
  document.body.addEventListener("htmx:beforeSwap", (e) => {
    const form = e.target.closest && e.target.closest("form.cmd");
    if (form && e.detail.xhr.status < 300 && $("steer-reason")) $("steer-reason").value = "";
  });
}

// On a phone each arm's controls fold into its menu (a <details> per row, open on wider screens).
function foldOnPhones() {
  if (!window.matchMedia("(max-width: 700px)").matches) return;
  for (const menu of document.querySelectorAll("details.steer-menu")) {
    if (!menu.querySelector(".form-error, .form-message")) menu.open = false;
  }
}

markRendered();
followRun(page.status);
foldOnPhones();
bind();
