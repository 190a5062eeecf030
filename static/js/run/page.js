// What the server sends the run page, and how the page asks it for more, for the other modules. The page
// data (#run-data, rendered by server/routes/pages.py `_run_ctx`) is read once, never changed: `charts`
// is the server's chart list (pages.RUN_CHARTS: each chart's id, title and views; a view's `metric` to
// load and the `field` of the live step records that extends it), `points` the points budget per arm
// (and per part trace), `markers` the applied commands so far, `event_seq` where the live stream starts.
// early.js (a classic script that ran before any module) read it, holds the fetch helper and the data
// URLs, and has started the opening views' requests.
const early = window.SBRun;

export const page = early.page;
export const API = early.api;
export const CHARTS = page.charts;
export const getJSON = early.getJSON;
// viewURL(metric, [start, end]?): a view's data, the whole run downsampled or a zoomed range.
export const viewURL = early.viewURL;

// The opening views' requests, once: the first load takes them, later loads fetch afresh.
export function takeOpening() {
  const taken = new Map(early.opening);
  early.opening.clear();
  return taken;
}

// An error the page cannot show elsewhere, in the flash bar (static/js/app.js).
export function flash(err) {
  if (window.SBflash) window.SBflash(String(err));
}

// Drawing what is out of sight waits until it comes within half a screen of the viewport: the first screen (at
// 64 arms, the heatmaps) is drawn first instead of after every chart below it, and a chart never scrolled
// to costs nothing. whenNear(el, draw) draws now when `el` is near the viewport or already drawn (live
// updates stay immediate); otherwise once it comes near, with the latest `draw` given for it.
const waiting = new WeakMap();
const observer = typeof IntersectionObserver === "undefined" ? null : new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting || !waiting.has(e.target)) continue;
    const draw = waiting.get(e.target);
    waiting.delete(e.target);
    observer.unobserve(e.target);
    draw();
  }
}, {rootMargin: "50% 0px"});

function near(el) {
  const r = el.getBoundingClientRect();
  return r.bottom > -window.innerHeight / 2 && r.top < 1.5 * window.innerHeight;
}

export function whenNear(el, draw) {
  if (!observer || el.data || near(el)) {
    if (waiting.delete(el)) observer.unobserve(el);
    draw();
    return;
  }
  if (!waiting.has(el)) observer.observe(el);
  waiting.set(el, draw);
}
