// Loading the charts' data into the page state: each chart's view (the first load takes the requests
// early.js started), a zoomed range at full resolution, the wall-time axis.
import {API, CHARTS, getJSON, takeOpening, viewURL} from "./page.js";
import {setParts, setSeries, setStepTime, spliceRange, state} from "./state.js";

function storeView(metric, doc) {
  if (metric === "parts") setParts(doc.series); else setSeries(metric, doc.series);
}

// Every chart's current view (and the wall-time axis when shown).
export async function loadViews() {
  const early = takeOpening();
  const metrics = CHARTS.map((c) => state.views.get(c.id).metric);
  const docs = await Promise.all(metrics.map((m) => early.get(m) || getJSON(viewURL(m))));
  if (early.size) performance.mark("sb:data");  // bench/series.py reads the split: waiting vs drawing
  metrics.forEach((m, i) => storeView(m, docs[i]));
  if (state.opts.xmode === "time") await loadTimes();
}

// One view, fetched afresh (a chart's other view, when chosen).
export async function loadView(metric) {
  storeView(metric, await getJSON(viewURL(metric)));
}

export async function loadRange(metric, start, end) {
  const doc = await getJSON(viewURL(metric, [start, end]));
  spliceRange(metric, start, end, doc.series);
}

export async function loadTimes() {
  const doc = await getJSON(`${API}/timestamps`);
  doc.steps.forEach((step, i) => setStepTime(step, doc.ts[i]));
}
