// Command acks from the live stream. Each ack carries the command and its outcome ({id, kind, arm, value,
// steps, status, applied_step, message, label}, docs/sse.md), so the audit log row, the sending form's
// message and the chart marker are updated from the event alone, without a request.
import {drawMarkers} from "./charts.js";
import {addMarker, recordAck, state} from "./state.js";

// The audit log's wording (server/routes/pages.py command_status).
function statusText(a) {
  if (a.status === "applied") return `applied at step ${a.applied_step}`;
  if (a.status === "rejected") return `rejected: ${a.message || "no reason given"}`;
  return a.status;
}

function showAck(a) {
  const id = CSS.escape(a.id);
  // The audit log's status cell and the sending form's "pending" message.
  document.querySelectorAll(`[data-command-id="${id}"]`).forEach((el) => {
    el.textContent = statusText(a);
    el.dataset.status = a.status;
  });
  const row = document.querySelector(`tr[data-command-row="${id}"]`);
  if (!row) return false;
  row.className = `status-${a.status}`;
  // The row's last two cells (templates/_commands.html): the applied step, the message.
  const [step, message] = [...row.cells].slice(-2);
  step.textContent = a.applied_step ?? "";
  message.textContent = a.message || "";
  return true;
}

// Every ack received so far, on what the page shows now (htmx swaps in fragments rendered before an
// ack arrived: a form's "sent; pending" message, an audit log).
export function showAcks() {
  for (const a of state.acks.values()) showAck(a);
}

function mark(a) {
  return a.status === "applied" && a.applied_step !== null && addMarker({id: a.id, step: a.applied_step, label: a.label});
}

export function applyAcks(acks) {
  let marked = false;
  let unknown = false;
  for (const a of acks) {
    recordAck(a);
    unknown = !showAck(a) || unknown;
    marked = mark(a) || marked;
  }
  if (marked) drawMarkers();
  // A command sent from elsewhere (another page, the API) has no row here, and the ack does not say
  // who sent it when: the audit log is fetched afresh.
  if (unknown) htmx.trigger(document.body, "sb-ack");
}

// After a `reset` (more events missed than the server replays, acks perhaps among them): the audit
// log is fetched afresh.
export function resync() {
  htmx.trigger(document.body, "sb-ack");
}
