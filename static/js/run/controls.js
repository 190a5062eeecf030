// The chart options above the charts and in their captions: "Arms shown" (the legend of every chart),
// EMA smoothing, the x axis, and the views of a chart. Each changes the page state, then redraws.
import {draw, drawAll} from "./charts.js";
import {drawEvals} from "./evals.js";
import {drawPanels} from "./metrics.js";
import {CHARTS, flash} from "./page.js";
import {loadTimes, loadView} from "./series.js";
import {armIndex, setEma, setView, setXmode, setZoom, showArms, state} from "./state.js";
import {saveView} from "./view.js";

const legend = () => document.getElementById("arm-toggles");
const toggleOf = (arm) => legend().querySelector(`.arm-toggle[value="${CSS.escape(arm)}"]`);

// A checkbox for every arm in the state (the server renders the run's arms; one that first appears
// live gets its entry here), each swatch in its arm's colour.
export function syncLegend() {
  for (const arm of state.arms) {
    let cb = toggleOf(arm);
    if (!cb) {
      const label = document.createElement("label");
      cb = document.createElement("input");
      Object.assign(cb, {type: "checkbox", className: "arm-toggle", value: arm, checked: !state.opts.hidden.has(arm)});
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.setAttribute("aria-hidden", "true");
      label.append(cb, swatch, ` ${arm}`);
      legend().append(label);
    }
    const swatch = cb.parentElement.querySelector(".swatch");
    if (swatch) swatch.style.backgroundColor = SB.color(armIndex(arm));
  }
}

// Show or hide several arms with one redraw of the charts.
function show(arms, visible) {
  showArms(arms, visible);
  for (const arm of arms) {
    const cb = toggleOf(arm);
    if (cb) cb.checked = visible;
  }
  if (state.drawn) drawAll();
  drawEvals();
  saveView();
  document.dispatchEvent(new CustomEvent("sb:arms"));  // the heatmaps follow
}

// A chart's other view: fetched afresh (the hidden view was not kept live), then drawn.
async function chooseView(radio) {
  const chart = CHARTS.find((c) => c.id === radio.dataset.chart);
  if (!chart || !radio.checked) return;
  const view = setView(chart.id, radio.value);
  showViewKey(chart.id, radio.value);
  saveView();
  await loadView(view.metric);
  if (state.views.get(chart.id) === view && state.drawn) draw(chart);
}

function showViewKey(chartId, metric) {
  document.querySelectorAll(`[data-view-of="${chartId}"]`).forEach((el) => {
    el.hidden = el.dataset.view !== metric;
  });
}

// The view the URL asked for (view.js initialView), set before the first load: the state and the controls.
export function applyView(view) {
  setEma(view.ema);
  document.getElementById("ema").value = String(view.ema);
  document.getElementById("ema-value").textContent = view.ema.toFixed(2);
  if (view.xmode !== state.opts.xmode) setXmode(view.xmode);
  document.querySelectorAll('input[name="xaxis"]').forEach((r) => { r.checked = r.value === view.xmode; });
  const hidden = view.hidden.filter((a) => state.arms.includes(a));
  showArms(hidden, false);
  for (const arm of hidden) toggleOf(arm).checked = false;
  for (const [chartId, metric] of view.views) {
    setView(chartId, metric);
    const radio = document.querySelector(`input.chart-view[data-chart="${CSS.escape(chartId)}"][value="${CSS.escape(metric)}"]`);
    if (radio) radio.checked = true;
    showViewKey(chartId, metric);
  }
  setZoom(view.zoom);
}

export function bindControls() {
  // A chart folded under its heatmap (many arms): drawn when asked for.
  document.querySelectorAll("button.unfold").forEach((b) => b.addEventListener("click", () => {
    b.closest("figure").classList.remove("folded");
    b.nextElementSibling?.remove();
    b.remove();
    const chart = CHARTS.find((c) => c.id === b.dataset.chart);
    if (chart && state.drawn) draw(chart);
  }));
  legend().addEventListener("change", (e) => {
    if (e.target.matches(".arm-toggle")) show([e.target.value], e.target.checked);
  });
  document.getElementById("arms-all").addEventListener("click", () => show(state.arms, true));
  document.getElementById("arms-none").addEventListener("click", () => show(state.arms, false));
  const ema = document.getElementById("ema");
  ema.addEventListener("input", () => {
    setEma(Number(ema.value));
    document.getElementById("ema-value").textContent = state.opts.ema.toFixed(2);
    if (state.drawn) { drawAll(); drawPanels(); }
    saveView();
  });
  document.querySelectorAll('input[name="xaxis"]').forEach((r) => r.addEventListener("change", async () => {
    setXmode(r.value);
    saveView();
    try {
      if (state.opts.xmode === "time") await loadTimes();
      if (state.drawn) { drawAll(); drawPanels(); }
    } catch (err) { flash(err); }
  }));
  document.querySelectorAll("input.chart-view").forEach((r) => r.addEventListener("change", () => {
    chooseView(r).catch(flash);
  }));
}
