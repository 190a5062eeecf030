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
