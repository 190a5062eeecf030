"""Charts of long runs: the series endpoint on a 64-arm x 100,000-step run (6.4 M arm rows).

Builds the run through the real ingest store (so the rollups are what ingest keeps), in SQLite and
in PostgreSQL, serves it with the real app (uvicorn, no ingest), and times
`GET /api/runs/{run}/series?metric=...` for one metric across all arms: the whole run (the default
view, at most ~1,000 points per arm) and zoomed windows, and a trainer-metric panel
(`GET /api/runs/{run}/metrics?name=...`, six metrics sent with every step), its first read by a fresh
web process included. Prints p50/p95 per query (target: p95 <= 250 ms). With `--page`, also loads the
run page in headless Chromium, cold, and times it until every chart in the first screen has drawn (target:
median <= 1 s; the page draws a chart once it comes within half a screen of the viewport), then until every
chart has drawn once scrolled to the bottom.

    .venv/bin/python bench/series.py                      # both backends, 100,000 steps
    .venv/bin/python bench/series.py --backends sqlite --steps 20000
    .venv/bin/python bench/series.py --keep               # reuse the databases on the next run

For scale: TensorBoard keeps 1,000 reservoir samples per scalar (spikes lost), W&B draws 1,500
bucketed points, MLflow 2,500 strided points.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from alembic import command
from sqlalchemy import text
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import databases, number_options, parser, web_server  # noqa: E402

from server.db import alembic_config, make_engine  # noqa: E402
from server.store import ingest as ingest_store  # noqa: E402
from server.wire import INGEST_ADAPTER  # noqa: E402

RUN = "bench-long"


def fill(url: str, steps: int, n_arms: int, batch: int = 250) -> float:
    """Write the run through ingest_store.apply_ingest; returns seconds taken."""
    engine = make_engine(url)
    arms = [f"src{i % 4}/level{i // 4}" for i in range(n_arms)]

    def entry(n: int, doc: dict) -> ingest_store.Entry:
        raw = orjson.dumps(doc)
        return ingest_store.Entry(f"{n + 1}-0", INGEST_ADAPTER.validate_json(raw), raw)

    t0 = time.perf_counter()
    with engine.begin() as conn:
        ingest_store.apply_ingest(conn, [entry(0, {
            "v": 1, "type": "run_start", "run": RUN, "seq": 1, "ts": time.time(), "project": "bench",
            "scheduler": "dump", "params": {"window": 300, "c": 1.0, "temperature": 0.1}, "config": {},
            "arms": [{"name": a, "metadata": {}} for a in arms], "host": "bench", "pid": os.getpid()})])
    totals = [0] * n_arms
    t_start = time.time() - steps
    with tqdm(total=steps * n_arms, unit="row", unit_scale=True, desc="fill", leave=False) as bar:
        for s0 in range(0, steps, batch):
            entries = []
            for step in range(s0, min(steps, s0 + batch)):
                recs = []
                ws = [math.exp(2.0 * math.sin(step / 3000.0 + i)) for i in range(n_arms)]
                z = sum(ws)
                for i, a in enumerate(arms):
                    k = 16 if (step + i) % 4 else 0
                    totals[i] += k
                    acc = min(1.0, step / (20000.0 + 2000 * i))
                    recs.append({
                        "arm": a, "p": ws[i] / z, "score": 0.3 + 0.2 * math.sin(step / 500.0 + i),
                        "parts": {"mu": 0.3 + 0.2 * math.sin(step / 500.0 + i), "bonus": 3.0 / math.sqrt(step + 9)},
                        "n_step": k, "n_total": totals[i],
                        "mean_abs_adv": (0.5 + 0.4 * math.cos(step / 700.0 + i)) if k else None,
                        "mean_reward": acc if k else None, "accuracy": acc if k else None,
                        "state": "active", "pin": None, "boost": None,
                    })
                entries.append(entry(step + 1, {"v": 1, "type": "step", "run": RUN, "seq": step + 2,
                                                "ts": t_start + step, "step": step, "metrics": metrics_at(step),
                                                "dropped": 0, "arms": recs}))
            with engine.begin() as conn:
                ingest_store.apply_ingest(conn, entries)
            bar.update(len(entries) * n_arms)
    engine.dispose()
    return time.perf_counter() - t0


def metrics_at(step: int) -> dict[str, float]:
    """What a GRPO trainer sends with each step (agent.end_step(metrics=...)): six metrics."""
    return {
        "loss": 0.5 * math.exp(-step / 30000.0) + 0.05 * math.sin(step / 7.0),
        "kl": 1e-3 * (1 + math.sin(step / 900.0)),
        "grad_norm": 1.0 + 0.5 * abs(math.sin(step / 13.0)), "reward_mean": min(1.0, step / 60000.0),
        "zero_adv_frac": 0.3 + 0.2 * math.cos(step / 2000.0), "completion_len": 180.0 + step / 1000.0,
    }


def time_queries(base: str, steps: int, repeats: int) -> list[tuple[str, float, float, int]]:
    client = httpx.Client(base_url=base, timeout=30)
    cases = [
        ("probability, whole run", {"metric": "probability"}),
        ("accuracy, whole run", {"metric": "accuracy"}),
        ("mean_abs_adv, 2nd half", {"metric": "mean_abs_adv", "start": steps // 2}),
        ("probability, 10k-step zoom", {"metric": "probability", "start": steps // 3, "end": steps // 3 + 9999}),
        ("probability, 2k-step zoom", {"metric": "probability", "start": steps // 3, "end": steps // 3 + 1999}),
        # what the run page asks when zoomed: its points budget is 24,000 per chart, 375 per arm for 64 arms
        ("same zoom, page's 375 points", {"metric": "probability", "start": steps // 3, "end": steps // 3 + 1999,
                                          "max_points": 375}),
        ("accuracy, 1 arm, whole run", {"metric": "accuracy", "arms": "src1/level3"}),
    ]
    out = timed(client, "series", cases, repeats)
    client.close()
    return out


def timed(client: httpx.Client, path: str, cases: list[tuple[str, dict]], repeats: int,
          ) -> list[tuple[str, float, float, int]]:
    """Per case: (name, p50 ms, p95 ms, most points of one series) over `repeats` requests."""
    out = []
    for name, params in cases:
        times = []
        points = 0
        for _ in range(repeats):
            t0 = time.perf_counter()
            resp = client.get(f"/api/runs/{RUN}/{path}", params=params)
            times.append(time.perf_counter() - t0)
            resp.raise_for_status()
            points = max(len(s["steps"]) for s in resp.json()["series"])
        times.sort()
        p95 = times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)]
        out.append((name, statistics.median(times) * 1000, p95 * 1000, points))
    return out


def time_metric_panels(base: str, steps: int, repeats: int) -> tuple[float, list[tuple[str, float, float, int]]]:
    """A trainer-metric panel (GET /metrics?name=...): the first request of a freshly started server (it
    reads the run's metrics into the web process's cache), then each panel's requests."""
    client = httpx.Client(base_url=base, timeout=60)
    t0 = time.perf_counter()
    client.get(f"/api/runs/{RUN}/metrics", params={"name": "loss", "max_points": 375}).raise_for_status()
    first = (time.perf_counter() - t0) * 1000
    cases = [
        ("loss, whole run", {"name": "loss", "max_points": 375}),
        ("4 panels in one request", {"name": ["grad_norm", "kl", "loss", "reward_mean"], "max_points": 375}),
        ("kl, 10k-step zoom", {"name": "kl", "start": steps // 3, "end": steps // 3 + 9999, "max_points": 375}),
        ("kl, 300-step zoom", {"name": "kl", "start": steps // 3, "end": steps // 3 + 299, "max_points": 375}),
    ]
    out = timed(client, "metrics", cases, repeats)
    client.close()
    return first, out


# The page's charts (line charts, heatmaps, metric panels) that are shown: not in a hidden figure, a
# folded one (a 64-arm run's line charts that the heatmaps replace) or closed heatmaps.
_SHOWN = """(inView) => [...document.querySelectorAll('.plot, .heat-plot')].filter((el) => {
  if (el.closest('[hidden], figure.folded, details:not([open])')) return false;
  const r = el.getBoundingClientRect();
  return r.height > 0 && (!inView || (r.top < innerHeight && r.bottom > 0));
})"""
# Drawn: a Plotly chart with data and its traces rendered, or the note an empty chart shows instead.
_DRAWN = "(d) => (d.data && d.data.length > 0 && d.querySelector('.trace')) || " \
         "(!d.classList.contains('js-plotly-plot') && d.textContent.trim() !== '')"


def page_drawn(page: Any, t0: float) -> tuple[float, float]:
    """Seconds from `t0` until every chart in the page's first screen has drawn, then until every chart
    has, scrolling down a screen at a time once the one in view has drawn (as a person reading it would)."""
    in_view = f"() => {{ const g = ({_SHOWN})(true); return g.length > 0 && g.every({_DRAWN}); }}"
    page.wait_for_function(in_view, timeout=120_000)
    first = time.perf_counter() - t0
    page.wait_for_function("() => document.querySelectorAll('.metric-panel .plot').length > 0", timeout=120_000)
    while page.evaluate("() => { const y = scrollY; scrollBy(0, innerHeight); return scrollY > y; }"):
        page.wait_for_function(in_view.replace("g.length > 0 && ", ""), timeout=120_000)
    page.wait_for_function(f"() => ({_SHOWN})(false).every({_DRAWN})", timeout=120_000)
    return first, time.perf_counter() - t0


def time_page(base: str, loads: int) -> list[tuple[float, float, float | None]] | None:
    """Load the run page `loads` times, each in a fresh browser context (cold cache: Plotly.js and the data
    fetched and compiled anew). Per load: seconds until every chart in the first screen has drawn (the
    page draws a chart when it comes within half a screen of the viewport), then until every chart has drawn
    once scrolled through to the bottom, and from run.js's performance marks the ms at which all the
    charts' data had arrived."""
    from playwright.sync_api import sync_playwright

    out: list[tuple[float, float, float | None]] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        for _ in range(loads):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            t0 = time.perf_counter()
            resp = page.goto(f"{base}/runs/{RUN}")
            if resp is None or resp.status != 200:
                browser.close()
                return None
            first, whole = page_drawn(page, t0)
            marks = dict(page.evaluate(
                "() => performance.getEntriesByType('mark').map(m => [m.name, m.startTime])"))
            out.append((first, whole, marks.get("sb:data")))
            context.close()
        browser.close()
    return out


def time_compare(url: str) -> dict[str, float]:
    """What the compare page computes for this run, per metric, timed in process (the page needs two
    runs): the default (evaluation when a run has one; this run has none, so the unweighted train mean
    through the rollups) and the completion-weighted train accuracy. Median of 3 each."""
    from sqlalchemy.orm import Session

    from server import compare

    engine = make_engine(url)
    out = {}
    with Session(engine) as session:
        for metric in ("", compare.TRAIN_WEIGHTED):
            query = compare.parse_query([RUN], metric, "", "0.7", "")
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                got = compare.compare(session, query, 60.0)
                times.append(time.perf_counter() - t0)
            out[got.metric] = statistics.median(times)
    engine.dispose()
    return out


def main() -> None:
    ap = parser(__doc__)
    number_options(ap, steps=100_000, arms=64, repeats=20)
    ap.add_argument("--page", action="store_true", help="also time the run page in headless Chromium")
    ap.add_argument("--page-loads", type=int, default=3, help="cold page loads to time (with --page)")
    args = ap.parse_args()
    schema = f"bench_series_{args.steps}x{args.arms}"
    print(f"run: {args.arms} arms x {args.steps:,} steps = {args.arms * args.steps:,} arm rows; "
          f"{args.repeats} requests per query")
    for backend, url, exists in databases(args, schema):
        if exists:  # kept from an earlier run: bring it to this version's schema
            t0 = time.perf_counter()
            command.upgrade(alembic_config(url), "head")
            print(f"[{backend}] schema upgraded in {time.perf_counter() - t0:.1f} s")
        else:
            command.upgrade(alembic_config(url), "head")
            secs = fill(url, args.steps, args.arms)
            print(f"[{backend}] filled through the ingest store in {secs:.0f} s "
                  f"({args.arms * args.steps / secs:,.0f} rows/s)")
        if backend == "postgresql":
            # What autovacuum does some time after a bulk load; without fresh statistics the planner
            # believes each arm has a handful of rows and scans an arm's whole range for a few steps.
            eng = make_engine(url)
            with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE"))
            eng.dispose()
        for metric, secs in time_compare(url).items():
            print(f"[{backend}] compare data of this run ({metric}, steps to 0.7, per-arm small multiples, "
                  f"markers, what differs), in process: median {secs:.2f} s over 3")
        with web_server(url, "bench-series", ROOT) as base:
            print(f"[{backend}] {'query':<30} {'p50 ms':>8} {'p95 ms':>8} {'points/arm':>11}")
            first, panels = time_metric_panels(base, args.steps, args.repeats)
            for name, p50, p95, pts in time_queries(base, args.steps, args.repeats):
                flag = "ok" if p95 <= 250 else "OVER 250 ms"
                print(f"[{backend}] {name:<30} {p50:>8.1f} {p95:>8.1f} {pts:>11}  {flag}")
            print(f"[{backend}] {'metric panel':<30} {'p50 ms':>8} {'p95 ms':>8} {'points':>11}")
            flag = "ok" if first <= 250 else "OVER 250 ms"
            print(f"[{backend}] {'first read (cold web process)':<30} {first:>8.1f} {first:>8.1f} {'':>11}  {flag}")
            for name, p50, p95, pts in panels:
                flag = "ok" if p95 <= 250 else "OVER 250 ms"
                print(f"[{backend}] {name:<30} {p50:>8.1f} {p95:>8.1f} {pts:>11}  {flag}")
            if args.page:
                loads = time_page(base, args.page_loads)
                if loads is None:
                    print(f"[{backend}] run page not available")
                else:
                    for i, (first, whole, data_ms) in enumerate(loads, 1):
                        data = "" if data_ms is None else f", all the charts' data in at {data_ms / 1000:.2f} s"
                        print(f"[{backend}] run page, cold load {i}: first screen drawn in {first:.2f} s{data}; "
                              f"every chart, scrolled through, {whole:.2f} s")
                    worst = max(x[0] for x in loads)
                    median = statistics.median(x[0] for x in loads)
                    flag = "ok" if median <= 1 else "OVER 1 s"
                    print(f"[{backend}] run page in headless Chromium, first screen drawn: median {median:.2f} s, "
                          f"worst {worst:.2f} s over {len(loads)} cold loads (target: median <= 1 s)  {flag}; "
                          f"every chart: median {statistics.median(x[1] for x in loads):.2f} s")


if __name__ == "__main__":
    main()
