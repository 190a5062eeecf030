// The run page's first requests: a classic script, which the parser runs where run.html places it (right
// after the page data, before the arms' forms) while Plotly.js is still loading, so the charts' data
// requests overlap Plotly's loading and compiling. A module cannot start them there: deferred, it runs
// after Plotly; async, it ran when the parser next yielded, most of the way through a 64-arm run's
// forms (~0.2 s later); async in the head, it started them while Plotly was still downloading from the
// same busy server, and Plotly came later.
//
// It also holds the page's fetch helper and data URLs; page.js hands them and the requests to the
// modules (window.SBRun is not read anywhere else).
(function () {
  "use strict";
  const page = JSON.parse(document.getElementById("run-data").textContent);
  const api = `/api/runs/${encodeURIComponent(page.run)}`;

  async function getJSON(url) {
    const r = await fetch(url, {headers: {Accept: "application/json"}});
    if (!r.ok) throw new Error(`${r.status} ${url}`);
    return r.json();
  }

  // A view's data: the whole run downsampled, or steps range[0]..range[1]. The parts view has a trace
  // per arm and part (DUMP: mu and bonus), so the whole run gets half the points per trace.
  function viewURL(metric, range) {
    const points = page.points;
    if (metric === "parts") {
      return range ? `${api}/parts?start=${range[0]}&end=${range[1]}&max_points=${points.per_arm}`
        : `${api}/parts?max_points=${points.per_part}`;
    }
    const q = range ? `&start=${range[0]}&end=${range[1]}` : "";
    return `${api}/series?metric=${metric}${q}&max_points=${points.per_arm}`;
  }

  // The views the charts open on.
  const opening = new Map(page.charts.map((c) => [c.views[0].metric, getJSON(viewURL(c.views[0].metric))]));
  // Failures surface when the first load awaits these; keep the console free of unhandled rejections.
  for (const p of opening.values()) p.catch(() => {});

  window.SBRun = {page, api, getJSON, viewURL, opening};
})();
