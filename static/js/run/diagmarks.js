// Diagnosis changes marked on the charts of steps (docs/diagnosis.md), beside the command markers and in
// a colour of their own (the page's --stale, so dark mode has one too): a dashed line at the step the
// diagnosis began (its since-step), labelled at the foot of the chart; changes on nearby steps share a
// marker ("N diagnoses", the list on hover) as commands do. An arm's first "learning" is where every arm
// starts, not news: it is not marked. Hidden arms' markers are hidden with them.
import {state} from "./state.js";

const marks = new Map();  // "arm|diagnosis|since" -> {arm, diagnosis, step, label}

// Changes from the API (`changes`, replacing those held) or a live event (`diagnoses`, added); true
// when the markers changed.
export function setDiagnosisMarkers(changes, live) {
  if (!live) marks.clear();
  let added = false;
  for (const c of changes) {
    if (!c.diagnosis || (c.diagnosis === "learning" && !c.previous)) continue;
    const k = `${c.arm}|${c.diagnosis}|${c.since_step}`;
    if (marks.has(k)) continue;
    marks.set(k, {arm: c.arm, diagnosis: c.diagnosis, step: c.since_step,
      label: `${c.arm}: ${c.diagnosis.replace("_", " ")}`});
    added = true;
  }
  return added || !live;
}

// The markers of the arms shown.
export function diagnosisMarks() {
  return [...marks.values()].filter((m) => !state.opts.hidden.has(m.arm));
}

function colour() {
  const v = getComputedStyle(document.documentElement).getPropertyValue("--stale").trim();
  return v || "#8250df";
}

// Plotly shapes and annotations of marker groups (charts.js groups them), at `xOf(step)`.
export function diagnosisShapes(groups, xOf) {
  const shapes = [];
  const annotations = [];
  const color = colour();
  for (const g of groups) {
    const x = xOf(g[0].step);
    shapes.push({type: "line", xref: "x", yref: "paper", x0: x, x1: x, y0: 0, y1: 1,
      line: {color, width: 1, dash: "dash"}});
    annotations.push({x, y: 0, xref: "x", yref: "paper", text: g.length === 1 ? g[0].label : `${g.length} diagnoses`,
      hovertext: g.map((m) => `since step ${m.step}: ${m.label}`).join("<br>"), showarrow: false, xanchor: "right",
      yanchor: "bottom", textangle: -90, font: {size: 10, color}, captureevents: true});
  }
  return {shapes, annotations};
}
