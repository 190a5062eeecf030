// The live run page: Plotly charts fed by /api/runs/{run}/series and /parts, extended from the
// run's SSE stream (/api/runs/{run}/events); command acks update the audit log and chart markers.
(function () {
  "use strict";
  const page = JSON.parse(document.getElementById("run-data").textContent);
  const RUN = encodeURIComponent(page.run);
  const API = `/api/runs/${RUN}`;
  const PREFETCH = window.SBRunPrefetch;  // run-prefetch.js: requests started before Plotly loaded
  const MAX_POINTS = PREFETCH.maxPoints;
  // Charts of one per-arm metric each. Two have two views (radio buttons in their captions):
  // completions per step or cumulative, and the scheduler's score or its parts (from the step
  // records' score parts); `metric` is the view shown, the only one loaded and kept live (the other
  // is fetched afresh when chosen).
  const CHARTS = [
    {id: "chart-probability", metric: "probability", stacked: true, yrange: [0, 1]},
    {id: "chart-mean_abs_adv", metric: "mean_abs_adv", smooth: true},
    {id: "chart-accuracy", metric: "accuracy", smooth: true, yrange: [0, 1.02]},
    {id: "chart-counts", metric: "n_step"},
    {id: "chart-score", metric: "score", smooth: true},
  ];
  const FIELD = {probability: "p"};  // SSE step records name the probability `p`
  // The parts chart tells parts apart by line style, in the order the parts first arrive; there is
  // no Plotly legend on this page, so its caption (#parts-names) says which style is which part.
  const DASHES = [["solid", "solid"], ["dot", "dotted"], ["dash", "dashed"], ["dashdot", "dash-dot"]];

  const arms = page.arms.slice();
  const data = {};           // metric -> arm -> {x: [steps], y: [values]}
  const parts = new Map();   // "arm\u0000part" -> {arm, part, x, y}
  const partNames = [];
  const downsampled = {};
  const stepTs = new Map();  // step -> unix seconds
  const markers = new Map(page.markers.map((m) => [m.id, m]));
  const acks = new Map();    // command id -> ack, re-applied to fragments htmx swaps in later
  const opts = {xmode: "step", ema: 0, hidden: new Set()};
  let uirevision = 1;
  let drawn = false;

  const armIndex = (arm) => { const i = arms.indexOf(arm); return i < 0 ? 0 : i; };
  const last = (a) => (a.length ? a[a.length - 1] : -Infinity);

  function xOf(step) {
    if (opts.xmode === "time") {
      const ts = stepTs.get(step);
      return ts === undefined ? null : new Date(ts * 1000);
    }
    return step;
  }

  // --- traces ----------------------------------------------------------------------------------
  function traceList(chart) {
    // [{key, arm, name, x(steps), y(raw), dash}]
    if (chart.metric === "parts") {
      return Array.from(parts.values()).map((p) => ({
        arm: p.arm, name: `${p.arm} ${p.part}`, x: p.x, y: p.y,
        dash: DASHES[partNames.indexOf(p.part) % DASHES.length][0],
      }));
    }
    const byArm = data[chart.metric] || {};
    return arms.map((arm) => ({arm, name: arm, x: (byArm[arm] || {x: []}).x, y: (byArm[arm] || {y: []}).y}));
  }

  function hover(name, smoothed) {
    return smoothed ? `${name}: %{y:.6g} (raw %{customdata:.6g})<extra></extra>` : `${name}: %{y:.6g}<extra></extra>`;
  }

  function buildTraces(chart) {
    const smoothed = chart.smooth && opts.ema > 0;
    return traceList(chart).map((t) => {
      const trace = {
        type: "scatter", mode: "lines", name: t.name, legendgroup: t.arm,
        // Copies (extendTraces appends to a trace's arrays in place); customdata (the raw value) only
        // where hover shows it, next to the smoothed one.
        x: opts.xmode === "step" ? t.x.slice() : t.x.map(xOf), y: smoothed ? SB.ema(t.y, opts.ema) : t.y.slice(),
        line: {color: SB.color(armIndex(t.arm)), width: 1.6, dash: t.dash || "solid"},
        hovertemplate: hover(t.name, smoothed),
        visible: opts.hidden.has(t.arm) ? "legendonly" : true,
      };
      if (smoothed) trace.customdata = t.y.slice();
      if (chart.stacked) { trace.stackgroup = "one"; trace.line.width = 0.5; }
      return trace;
    });
  }

  function markerShapes() {
    const shapes = [];
    const annotations = [];
    for (const m of markers.values()) {
      const x = xOf(m.step);
      if (x === null) continue;
      shapes.push({type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
        line: {color: "#b42318", width: 1, dash: "dot"}});
      annotations.push({x, y: 1, xref: "x", yref: "paper", text: m.label, showarrow: false, xanchor: "left",
        yanchor: "top", textangle: -90, font: {size: 10, color: "#b42318"}});
    }
    return {shapes, annotations};
  }

  function chartLayout(chart) {
    const m = markerShapes();
    return SB.layout({
      uirevision,
      // Dates label themselves; a title under them would collide with the two-line tick labels.
      xaxis: {title: {text: opts.xmode === "time" ? "" : "step"}, gridcolor: "#e5e9f0",
        type: opts.xmode === "time" ? "date" : "linear"},
      yaxis: Object.assign({gridcolor: "#e5e9f0"}, chart.yrange ? {range: chart.yrange} : {}),
      shapes: m.shapes, annotations: m.annotations,
      // One legend for all the charts: the "Arms shown" checkboxes with their colour swatches.
      // Seven Plotly legends of 64 entries each took a quarter of the drawing time.
      showlegend: false,
    });
  }

  function draw(chart) {
    const el = document.getElementById(chart.id);
    if (!el) return;
    // uirevision stays the same across redraws: the user's zoom is kept.
    Plotly.react(el, buildTraces(chart), chartLayout(chart), SB.config);
    if (!el.dataset.bound) {
      el.dataset.bound = "1";
      el.on("plotly_relayout", (ev) => refine(chart, ev));
    }
  }

  function drawAll() { CHARTS.forEach(draw); drawn = true; }

  // --- loading ---------------------------------------------------------------------------------
  async function getJSON(url) {
    const r = await fetch(url, {headers: {Accept: "application/json"}});
    if (!r.ok) throw new Error(`${r.status} ${url}`);
    return r.json();
  }

  function storeSeries(metric, series) {
    data[metric] = {};
    downsampled[metric] = false;
    for (const s of series) {
      data[metric][s.arm] = {x: s.steps, y: s.values};
      if (!arms.includes(s.arm)) { arms.push(s.arm); armToggle(s.arm); }
      downsampled[metric] = downsampled[metric] || s.downsampled;
    }
  }

  function storeParts(series) {
    parts.clear();
    downsampled.parts = false;
    for (const s of series) {
      parts.set(`${s.arm}\u0000${s.part}`, {arm: s.arm, part: s.part, x: s.steps, y: s.values});
      if (!partNames.includes(s.part)) partNames.push(s.part);
      downsampled.parts = downsampled.parts || s.downsampled;
    }
    labelParts();
  }

  function labelParts() {
    const label = document.getElementById("parts-names");
    if (label && partNames.length) {
      label.textContent = partNames.map((p, i) => `${p}: ${DASHES[i % DASHES.length][1]} line`).join(", ");
    }
  }

  let prefetched = true;  // the first load uses the requests run-prefetch.js started

  function fetchView(metric, early) {
    if (metric === "parts") return getJSON(`${API}/parts?max_points=${PREFETCH.partsPoints}`);
    return (early && PREFETCH.series[metric]) || getJSON(`${API}/series?metric=${metric}&max_points=${MAX_POINTS}`);
  }

  function storeView(metric, doc) {
    if (metric === "parts") storeParts(doc.series); else storeSeries(metric, doc.series);
  }

  async function loadAll() {
    const early = prefetched;
    prefetched = false;
    const views = CHARTS.map((c) => c.metric);
    const docs = await Promise.all(views.map((m) => fetchView(m, early)));
    if (early) performance.mark("sb:data");  // a benchmark reads the split: waiting vs drawing
    views.forEach((m, i) => storeView(m, docs[i]));
    if (opts.xmode === "time") await loadTimes();
    liveSinceLoad = 0;
    drawAll();
    if (early) performance.mark("sb:drawn");
    // A chart the user had zoomed into gets its visible range at full resolution again.
    for (const chart of CHARTS) {
      const el = document.getElementById(chart.id);
      const range = el && el.layout && el.layout.xaxis && el.layout.xaxis.autorange === false && el.layout.xaxis.range;
      if (range) refine(chart, {"xaxis.range[0]": range[0], "xaxis.range[1]": range[1]});
    }
  }

  // Live steps are appended raw. Once as many have arrived as a chart holds downsampled points, the
  // charts are reloaded downsampled, so a page left open on a fast run stays as light as a fresh one.
  let liveSinceLoad = 0;
  let reloading = false;
  let held = [];  // live steps that arrived during a reload
  function maybeReload(n) {
    liveSinceLoad += n;
    if (reloading || liveSinceLoad < MAX_POINTS) return;
    reloading = true;
    performance.mark("sb:reload");
    loadAll().catch((err) => window.SBflash && SBflash(String(err))).finally(() => {
      reloading = false;
      const late = held;
      held = [];
      if (late.length) appendSteps(late);  // steps the reloaded series already has are skipped
    });
  }

  async function loadTimes() {
    const doc = await getJSON(`${API}/timestamps`);
    doc.steps.forEach((step, i) => stepTs.set(step, doc.ts[i]));
  }

  // Zoomed in on a downsampled chart: fetch the visible range at full resolution and splice it in.
  async function refine(chart, ev) {
    if (opts.xmode !== "step" || !downsampled[chart.metric]) return;
    const a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
    if (a === undefined || b === undefined) return;
    const start = Math.max(0, Math.floor(a)), end = Math.ceil(b);
    const url = chart.metric === "parts"
      ? `${API}/parts?start=${start}&end=${end}&max_points=${MAX_POINTS}`
      : `${API}/series?metric=${chart.metric}&start=${start}&end=${end}&max_points=${MAX_POINTS}`;
    const doc = await getJSON(url);
    const splice = (cur, steps, values) => {
      const keepL = [], keepR = [];
      cur.x.forEach((x, i) => { if (x < start) keepL.push(i); else if (x > end) keepR.push(i); });
      return {x: [...keepL.map((i) => cur.x[i]), ...steps, ...keepR.map((i) => cur.x[i])],
        y: [...keepL.map((i) => cur.y[i]), ...values, ...keepR.map((i) => cur.y[i])]};
    };
    for (const s of doc.series) {
      if (chart.metric === "parts") {
        const key = `${s.arm}\u0000${s.part}`;
        const cur = parts.get(key) || {arm: s.arm, part: s.part, x: [], y: []};
        parts.set(key, Object.assign(cur, splice(cur, s.steps, s.values)));
      } else {
        const cur = data[chart.metric][s.arm] || {x: [], y: []};
        data[chart.metric][s.arm] = splice(cur, s.steps, s.values);
      }
    }
    draw(chart);
  }

  // --- live updates ----------------------------------------------------------------------------
  function appendSteps(steps) {
    if (reloading) { held.push(...steps); return; }  // applied once the reload is in (see maybeReload)
    let newArm = false;
    const ext = new Map();  // chart id -> Map(traceIndex -> {x, y, raw})
    const push = (chart, idx, step, value) => {
      if (!ext.has(chart.id)) ext.set(chart.id, new Map());
      const m = ext.get(chart.id);
      if (!m.has(idx)) m.set(idx, {steps: [], raw: []});
      m.get(idx).steps.push(step);
      m.get(idx).raw.push(value);
    };
    for (const s of steps) {
      stepTs.set(s.step, s.ts);
      for (const rec of s.arms) {
        if (!arms.includes(rec.arm)) { arms.push(rec.arm); armToggle(rec.arm); newArm = true; }
        for (const chart of CHARTS) {
          if (chart.metric === "parts") {
            for (const [part, value] of Object.entries(rec.parts || {})) {
              if (typeof value !== "number") continue;
              const key = `${rec.arm}\u0000${part}`;
              if (!parts.has(key)) { parts.set(key, {arm: rec.arm, part, x: [], y: []}); newArm = true; }
              if (!partNames.includes(part)) { partNames.push(part); labelParts(); }
              const p = parts.get(key);
              if (s.step <= last(p.x)) continue;
              p.x.push(s.step); p.y.push(value);
              push(chart, Array.from(parts.keys()).indexOf(key), s.step, value);
            }
            continue;
          }
          const value = rec[FIELD[chart.metric] || chart.metric];
          if (value === null || value === undefined) continue;
          const byArm = data[chart.metric] || (data[chart.metric] = {});
          const d = byArm[rec.arm] || (byArm[rec.arm] = {x: [], y: []});
          if (s.step <= last(d.x)) continue;  // already loaded with the series
          d.x.push(s.step); d.y.push(value);
          push(chart, arms.indexOf(rec.arm), s.step, value);
        }
      }
    }
    if (steps.length) updateArmTable(steps[steps.length - 1]);
    if (!drawn) return;
    maybeReload(steps.length);
    if (newArm) { drawAll(); return; }
    for (const chart of CHARTS) {
      const m = ext.get(chart.id);
      const el = document.getElementById(chart.id);
      if (!m || !el || !el.data) continue;
      const idx = [], xs = [], ys = [], raws = [];
      const smoothed = chart.smooth && opts.ema > 0;
      for (const [i, e] of m) {
        const trace = el.data[i];
        if (!trace) continue;
        let prev = null;
        if (smoothed) for (let k = trace.y.length - 1; k >= 0; k--) if (trace.y[k] !== null) { prev = trace.y[k]; break; }
        const y = e.raw.map((v) => (prev = prev === null ? v : opts.ema * prev + (1 - opts.ema) * v));
        idx.push(i); xs.push(e.steps.map(xOf)); ys.push(smoothed ? y : e.raw); raws.push(e.raw);
      }
      if (idx.length) Plotly.extendTraces(el, smoothed ? {x: xs, y: ys, customdata: raws} : {x: xs, y: ys}, idx);
    }
  }

  // Steps are drawn in batches: redrawing seven charts for every step of a fast run would keep a
  // slow machine's browser busy forever.
  const FLUSH_MS = 400;
  let queued = [];
  let flushTimer = null;
  function queueSteps(steps) {
    queued.push(...steps);
    if (flushTimer === null) {
      flushTimer = setTimeout(() => {
        flushTimer = null;
        const batch = queued;
        queued = [];
        appendSteps(batch);
      }, FLUSH_MS);
    }
  }

  function fmt(v, digits) { return v === null || v === undefined ? "—" : Number(v).toFixed(digits); }

  function updateArmTable(step) {
    const stepEl = document.getElementById("run-step");
    if (stepEl) stepEl.textContent = step.step;
    for (const rec of step.arms) {
      const row = document.querySelector(`tr[data-arm="${CSS.escape(rec.arm)}"]`);
      if (!row) continue;
      row.querySelector(".arm-state").textContent = rec.state;
      row.querySelector(".arm-p").textContent = fmt(rec.p, 3);
      row.querySelector(".arm-pin").textContent = fmt(rec.pin, 3);
      row.querySelector(".arm-boost").textContent = fmt(rec.boost, 2);
    }
  }

  function ackText(a) {
    return a.status === "applied" ? `applied at step ${a.applied_step}` : `${a.status}: ${a.message || ""}`;
  }

  function applyAcks() {
    for (const [id, a] of acks) {
      document.querySelectorAll(`[data-command-id="${CSS.escape(id)}"]`).forEach((el) => {
        el.textContent = ackText(a);
        el.dataset.status = a.status;
      });
    }
  }

  // Same wording as the server's audit log (server/routes/pages.py command_label).
  function commandLabel(c) {
    if (c.kind === "pin") return c.value === null ? `pin ${c.arm}` : `pin ${c.arm}=${c.value}`;
    if (c.kind === "boost") {
      const extra = c.steps ? ` for ${c.steps} steps` : "";
      return c.value === null ? `boost ${c.arm}` : `boost ${c.arm}\u00d7${c.value}${extra}`;
    }
    return `${c.kind} ${c.arm}`;
  }

  // Chart markers come from the audit log (the ack itself does not say what the command was).
  async function refreshMarkers() {
    const log = await getJSON(`${API}/commands?limit=500`);
    let changed = false;
    for (const c of log) {
      if (c.status !== "applied" || c.applied_step === null || markers.has(c.id)) continue;
      markers.set(c.id, {id: c.id, step: c.applied_step, label: commandLabel(c)});
      changed = true;
    }
    if (changed && drawn) {
      CHARTS.forEach((chart) => {
        const el = document.getElementById(chart.id);
        if (el && el.data) Plotly.relayout(el, markerShapes());
      });
    }
  }

  function handleAcks(list) {
    for (const a of list) acks.set(a.id, a);
    applyAcks();
    if (list.some((a) => a.status === "applied")) refreshMarkers();
    htmx.trigger(document.body, "sb-ack");  // the audit log refreshes from the server
  }

  function setLive(text) {
    const el = document.getElementById("live-state");
    if (el) el.textContent = text;
  }

  function connect() {
    const es = new EventSource(`${API}/events?after=${page.event_seq}`);
    es.addEventListener("ready", () => setLive("live"));
    es.addEventListener("update", (e) => {
      const d = JSON.parse(e.data);
      page.event_seq = d.seq;
      if (d.steps) queueSteps(d.steps);
      if (d.acks) handleAcks(d.acks);
      if (d.status) {
        const badge = document.getElementById("run-status");
        if (badge) { badge.textContent = d.status.status; badge.className = `badge status-${d.status.status}`; }
      }
      setLive(`live · step ${document.getElementById("run-step").textContent}`);
    });
    es.addEventListener("reset", () => { setLive("reloading…"); loadAll(); });
    es.onerror = () => setLive("reconnecting…");
  }

  // --- controls --------------------------------------------------------------------------------
  // The "Arms shown" checkboxes are the legend of every chart: each carries its arm's colour (the
  // server renders the run's arms; an arm that first appears live gets its entry here).
  const toggles = new Map();  // arm -> checkbox
  const legend = document.getElementById("arm-toggles");

  function armToggle(arm) {
    let cb = toggles.get(arm);
    if (!cb) {
      const label = document.createElement("label");
      cb = document.createElement("input");
      Object.assign(cb, {type: "checkbox", className: "arm-toggle", value: arm, checked: !opts.hidden.has(arm)});
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.setAttribute("aria-hidden", "true");
      label.append(cb, swatch, ` ${arm}`);
      legend.append(label);
      bindToggle(cb);
    }
    const swatch = cb.parentElement.querySelector(".swatch");
    if (swatch) swatch.style.backgroundColor = SB.color(armIndex(arm));
    return cb;
  }

  function bindToggle(cb) {
    toggles.set(cb.value, cb);
    cb.addEventListener("change", () => showArms([cb.value], cb.checked));
  }

  // Show or hide several arms with one redraw of the charts.
  function showArms(list, show) {
    for (const arm of list) {
      if (show) opts.hidden.delete(arm); else opts.hidden.add(arm);
      const cb = toggles.get(arm);
      if (cb) cb.checked = show;
    }
    if (drawn) drawAll();
  }

  // A chart's other view: fetched afresh (the hidden view was not kept live), then drawn.
  document.querySelectorAll("input.chart-view").forEach((r) => r.addEventListener("change", async () => {
    const chart = CHARTS.find((c) => c.id === r.dataset.chart);
    if (!chart || !r.checked) return;
    chart.metric = r.value;
    document.querySelectorAll(`[data-view-of="${chart.id}"]`).forEach((el) => {
      el.hidden = el.dataset.view !== r.value;
    });
    try {
      storeView(r.value, await fetchView(r.value, false));
      if (chart.metric === r.value && drawn) draw(chart);
    } catch (err) { window.SBflash && SBflash(String(err)); }
  }));

  legend.querySelectorAll(".arm-toggle").forEach(bindToggle);
  arms.forEach(armToggle);
  document.getElementById("arms-all").addEventListener("click", () => showArms(arms, true));
  document.getElementById("arms-none").addEventListener("click", () => showArms(arms, false));
  const emaInput = document.getElementById("ema");
  emaInput.addEventListener("input", () => {
    opts.ema = Number(emaInput.value);
    document.getElementById("ema-value").textContent = opts.ema.toFixed(2);
    drawAll();
  });
  document.querySelectorAll('input[name="xaxis"]').forEach((r) => r.addEventListener("change", async () => {
    opts.xmode = r.value;
    uirevision += 1;  // a new axis: the old zoom means nothing there
    if (opts.xmode === "time") await loadTimes();
    drawAll();
  }));
  // Fragments htmx swaps in (a form's "pending", the audit log) get the acks already received.
  document.body.addEventListener("htmx:afterSettle", applyAcks);

  loadAll().then(connect).catch((err) => { setLive("error"); window.SBflash && SBflash(String(err)); });
})();
