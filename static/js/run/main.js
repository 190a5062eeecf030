// The live run page (templates/run.html): Plotly charts of the run's per-arm series, extended from its
// SSE stream; chart options; command acks on the audit log, the forms and the charts. A module script,
// so it runs after Plotly.js and static/js/charts.js (deferred, in document order); the data requests
// started before (early.js).
import {showAcks} from "./acks.js";
import {drawAll} from "./charts.js";
import {applyView, bindControls, syncLegend} from "./controls.js";
import {bindEvals, drawEvals, loadEvals} from "./evals.js";
import {connect, reload, setLive} from "./live.js";
import {bindMetrics, drawPanels, loadMetrics} from "./metrics.js";
import {flash, page} from "./page.js";
import {state} from "./state.js";
import {initialView} from "./view.js";
// The arms cockpit and the heatmaps wire themselves to the page (the sb:* events live.js dispatches).
import "./cockpit.js";
import "./heatmaps.js";
// The scheduler panel too (its preview, Send, history; the sb:update events).
import "./scheduler.js";

// The view a shared link carries (smoothing, x axis, hidden arms, chart views, zoom, panels).
const view = initialView();
applyView(view);
syncLegend();
bindControls();
bindEvals();
bindMetrics();
// A theme change redraws the charts whose traces take the page's colours (the mean, the metric panels).
document.addEventListener("sb:theme", () => {
  if (state.drawn) { drawAll(); drawPanels(); }
  drawEvals();
});
// Fragments htmx swaps in (a form's "pending", the audit log) get the acks already received.
document.body.addEventListener("htmx:afterSettle", showAcks);
// The first load is drawn once the document's other DOMContentLoaded work is done (htmx processing the
// arms' forms, a few hundred on a 64-arm run): when the data came before it and the charts were drawn
// first, they still waited for that work to reach the screen (20-80 ms later on the 64-arm page).
document.addEventListener("DOMContentLoaded", () => {
  // Evaluations load beside the charts: what arrives after the page was rendered is also replayed by
  // the live stream, and setting a point twice changes nothing.
  loadEvals().catch(flash);
  reload().then(() => {
    loadMetrics(view).catch(flash);
    performance.mark("sb:drawn");
    connect(page.event_seq);
  }).catch((err) => {
    setLive("error");
    flash(err);
  });
}, {once: true});
