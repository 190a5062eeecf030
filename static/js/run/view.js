// The page's view in its URL, so that a copied link opens the same view: EMA smoothing, the x axis, the
// hidden arms, each chart's view, the zoomed step range and the metric panels (with their log scales).
//
//   ?ema=0.6&x=time&hide=rev4,sort4&view=chart-score:parts&zoom=1200,2400&panels=loss,kl&log=loss
//
// Read once when the page opens (initialView); written with history.replaceState on every change
// (saveView), so the back button is not filled with slider positions. A parameter left out is the
// default; `panels=` present but empty means "no panels" (absent: the default panels).
import {page} from "./page.js";
import {state} from "./state.js";

const list = (v) => (v ? v.split(",").map(decodeURIComponent).filter(Boolean) : []);
const joined = (items) => items.map(encodeURIComponent).join(",");

export function initialView() {
  const q = new URLSearchParams(window.location.search);
  const ema = Number(q.get("ema"));
  const zoom = list(q.get("zoom")).map(Number);
  const views = new Map();
  for (const item of list(q.get("view"))) {
    const [chart, metric] = item.split(":");
    const c = page.charts.find((ch) => ch.id === chart);
    if (c && c.views.some((v) => v.metric === metric)) views.set(chart, metric);
  }
  return {
    ema: Number.isFinite(ema) && ema > 0 && ema < 1 ? ema : 0,
    xmode: q.get("x") === "time" ? "time" : "step",
    hidden: list(q.get("hide")),
    views,
    zoom: zoom.length === 2 && zoom.every(Number.isFinite) && zoom[0] < zoom[1] ? zoom : null,
    panels: q.has("panels") ? list(q.get("panels")) : null,
    log: new Set(list(q.get("log"))),
  };
}

export function saveView() {
  const q = new URLSearchParams(window.location.search);
  const set = (key, value, isDefault) => { if (isDefault) q.delete(key); else q.set(key, value); };
  set("ema", state.opts.ema.toFixed(2), !state.opts.ema);
  set("x", "time", state.opts.xmode !== "time");
  const hidden = state.arms.filter((a) => state.opts.hidden.has(a));
  set("hide", joined(hidden), !hidden.length);
  const views = page.charts.filter((c) => state.views.get(c.id) !== c.views[0])
    .map((c) => `${c.id}:${state.views.get(c.id).metric}`);
  set("view", joined(views), !views.length);
  const z = state.opts.zoom;
  set("zoom", z ? `${Math.round(z[0])},${Math.round(z[1])}` : "", !z);
  if (state.panels !== null) {
    set("panels", joined(state.panels.map((p) => p.name)), false);
    const logs = state.panels.filter((p) => p.log).map((p) => p.name);
    set("log", joined(logs), !logs.length);
  }
  const search = q.toString().replace(/%2C/g, ",");
  const url = `${window.location.pathname}${search ? `?${search}` : ""}${window.location.hash}`;
  if (url !== `${window.location.pathname}${window.location.search}${window.location.hash}`) {
    window.history.replaceState(window.history.state, "", url);
  }
}
