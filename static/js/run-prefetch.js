// Starts the run page's data requests while Plotly.js is still loading and compiling, so the two
// overlap; run.js picks the promises up (window.SBRunPrefetch). Loaded right after #run-data.
(function () {
  "use strict";
  const page = JSON.parse(document.getElementById("run-data").textContent);
  const api = `/api/runs/${encodeURIComponent(page.run)}`;
  // Points per arm per chart: up to 1,000, fewer when there are many arms, so a chart holds about
  // 24,000 points in all and the page draws in a second or two whatever the run's length.
  const maxPoints = Math.max(200, Math.min(1000, Math.floor(24000 / Math.max(1, page.arms.length))));
  const get = (url) => fetch(url, {headers: {Accept: "application/json"}}).then((r) => {
    if (!r.ok) throw new Error(`${r.status} ${url}`);
    return r.json();
  });
  // The views the charts open on (run.js: CHARTS); their other views load when chosen.
  const metrics = ["probability", "mean_abs_adv", "accuracy", "n_step", "score"];
  const series = {};
  for (const m of metrics) series[m] = get(`${api}/series?metric=${m}&max_points=${maxPoints}`);
  // The parts view has a trace per arm and part (DUMP: mu and bonus), so half the points per trace.
  const partsPoints = Math.max(100, Math.floor(maxPoints / 2));
  // Failures surface when run.js awaits these; keep the console free of unhandled rejections.
  Object.values(series).forEach((p) => p.catch(() => {}));
  window.SBRunPrefetch = {maxPoints, partsPoints, series, get};
})();
