"""Comparing runs: the metric definitions (weighted vs unweighted train accuracy, evaluation), steps to
target and ranking, override markers, what differs, and form errors; long runs through the rollups.
Real SQLite and PostgreSQL, the real ingest, the real app over HTTP."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import orjson
import pytest
import redis
from bs4 import BeautifulSoup
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from server import compare
from server.models import ROLLUP_WIDTHS
from server.settings import Settings

from .conftest import BACKENDS, ROOT, LiveServer, cli_env, ingest_docs, run_start, wait_for, xadd

HX = {"HX-Request": "true"}
ARMS = ["easy", "hard"]


def soup(resp: Any) -> BeautifulSoup:
    return BeautifulSoup(resp.text, "html.parser")


def rec(arm: str, acc: float | None, n: int) -> dict[str, Any]:
    return {"arm": arm, "p": 0.5, "score": 0.0, "parts": {}, "n_step": n, "n_total": 0, "mean_abs_adv": None,
            "mean_reward": acc, "accuracy": acc, "state": "active", "pin": None, "boost": None}


def step(run: str, seq: int, s: int, recs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"v": 1, "type": "step", "run": run, "seq": seq, "ts": 1.7e9 + s, "step": s, "metrics": {},
            "dropped": 0, "arms": recs}


def evaluation(run: str, seq: int, s: int, accs: dict[str, float], name: str = "heldout") -> dict[str, Any]:
    return {"v": 1, "type": "eval", "run": run, "seq": seq, "ts": 1.7e9 + s, "name": name, "step": s,
            "arms": [{"arm": a, "accuracy": v, "correct": None, "total": None} for a, v in accs.items()]}


# Run A samples the easy arm almost only; run B balances. Per step: (easy accuracy, easy n, hard accuracy, hard n).
BATCHES = {
    "cmp-a": [(1.0, 9, 0.0, 1), (0.8, 10, None, 0), (1.0, 6, 0.5, 2)],
    "cmp-b": [(1.0, 5, 0.4, 5), (0.8, 5, 0.6, 5), (1.0, 5, 0.8, 5)],
}
# By hand: weighted = sum acc*n / sum n; unweighted = mean of the arms' latest accuracies.
WEIGHTED = {"cmp-a": [0.9, 0.8, 0.875], "cmp-b": [0.7, 0.7, 0.9]}
UNWEIGHTED = {"cmp-a": [0.5, 0.4, 0.75], "cmp-b": [0.7, 0.7, 0.9]}  # A at step 1: hard carries its 0.0
EVALS = {"cmp-a": [(0, {"easy": 0.9, "hard": 0.1}), (2, {"easy": 0.95, "hard": 0.15})],
         "cmp-b": [(0, {"easy": 0.8, "hard": 0.4}), (2, {"easy": 0.9, "hard": 0.8})]}
EVAL_MEAN = {"cmp-a": [0.5, 0.55], "cmp-b": [0.6, 0.85]}


def fill_two(srv: LiveServer, rds: redis.Redis, settings: Settings, config_b: dict[str, Any] | None = None) -> None:
    for run, batches in BATCHES.items():
        msgs = [run_start(run, 1, ARMS, params={"c": 1.0 if run == "cmp-a" else 2.0, "window": 300},
                          config=config_b if (config_b and run == "cmp-b") else {"lr": 1e-6, "scheduler": "dump"})]
        for s, (ea, en, ha, hn) in enumerate(batches):
            msgs.append(step(run, len(msgs) + 1, s, [rec("easy", ea, en), rec("hard", ha, hn)]))
        for s, accs in EVALS[run]:
            msgs.append(evaluation(run, len(msgs) + 1, s, accs))
        xadd(rds, settings, *msgs)
    for run in BATCHES:
        wait_for(lambda run=run: srv.client.get(f"/api/runs/{run}").status_code == 200
                 and srv.client.get(f"/api/runs/{run}").json()["last_step"] == 2
                 and len(srv.client.get(f"/api/runs/{run}/evals").json()["evals"]) == 4)


def page_data(resp: Any) -> dict[str, Any]:
    return orjson.loads(soup(resp).select_one("#compare-data").text)


def ranking(resp: Any) -> list[tuple[str, str]]:
    return [(tr["data-run"], tr.select_one(".steps-to-target").text) for tr in soup(resp).select("#ranking tbody tr")]


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_metrics_steps_to_target_and_ranking(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    fill_two(app_server, rds, settings)
    c = app_server.client
    base = {"runs": "cmp-a,cmp-b", "target": "0.85"}

    # The default metric: the evaluation, mean over arms. B reaches 0.85 at step 2, A never.
    r = c.get("/compare", params=base)
    assert r.status_code == 200
    data = page_data(r)
    assert data["metric"] == "eval:heldout"
    assert soup(r).select_one("select[name=metric] option[selected]")["value"] == "eval:heldout"
    assert [(t["run"], t["steps"], t["values"]) for t in data["overlay"]] == [
        ("cmp-a", [0, 2], pytest.approx(EVAL_MEAN["cmp-a"])), ("cmp-b", [0, 2], pytest.approx(EVAL_MEAN["cmp-b"]))]
    assert ranking(r) == [("cmp-b", "2"), ("cmp-a", "not reached")]
    # The small multiples: each arm's evaluation accuracy.
    assert data["arms"]["hard"] == [{"run": "cmp-a", "steps": [0, 2], "values": [0.1, 0.15]},
                                    {"run": "cmp-b", "steps": [0, 2], "values": [0.4, 0.8]}]

    # Weighted by completions: A's easy diet wins (0.9 at step 0); B reaches 0.85 at step 2.
    r = c.get("/compare", params={**base, "metric": "train_weighted"})
    data = page_data(r)
    for t in data["overlay"]:
        assert t["steps"] == [0, 1, 2] and t["values"] == pytest.approx(WEIGHTED[t["run"]], abs=1e-12)
    assert ranking(r) == [("cmp-a", "0"), ("cmp-b", "2")]

    # Unweighted mean over arms (the hard arm, unsampled at A's step 1, counts with its 0.0): B first.
    r = c.get("/compare", params={**base, "metric": "train_mean"})
    data = page_data(r)
    for t in data["overlay"]:
        assert t["steps"] == [0, 1, 2] and t["values"] == pytest.approx(UNWEIGHTED[t["run"]], abs=1e-12)
    assert ranking(r) == [("cmp-b", "2"), ("cmp-a", "not reached")]
    assert "last accuracy" in soup(r).select_one("#metric-caption").text

    # One arm's sampling probability, as htmx asks for it: the form and the result, no layout.
    r = c.get("/compare", params={**base, "metric": "probability", "arm": "hard"}, headers=HX)
    frag = soup(r)
    assert frag.find("html") is None and frag.select_one("#compare-view #compare-options") is not None
    assert frag.select_one("select[name=arm] option[selected]")["value"] == "hard"
    data = page_data(r)
    assert (data["metric"], [t["values"] for t in data["overlay"]]) == ("probability", [[0.5] * 3, [0.5] * 3])
    assert sorted(data["arms"]) == ARMS and len(frag.select(".small-plot")) == 2

    # Smoothed as shown (EMA 0.5): A's weighted 0.9, 0.85, 0.8625 still reaches 0.85 at step 0; B's
    # 0.7, 0.7, 0.8 no longer does. Last value and best are the smoothed curve's.
    r = c.get("/compare", params={**base, "metric": "train_weighted", "smoothing": "0.5"})
    assert ranking(r) == [("cmp-a", "0"), ("cmp-b", "not reached")]
    rows = {tr["data-run"]: tr for tr in soup(r).select("#ranking tbody tr")}
    assert (rows["cmp-a"].select_one(".final").text, rows["cmp-a"].select_one(".best").text) == ("0.863", "0.900")
    assert rows["cmp-b"].select_one(".final").text == "0.800"
    assert page_data(r)["smoothing"] == 0.5

    # The URL is the view: the form shows what the address says.
    form = soup(r).select_one("#compare-options")
    assert form.select_one("select[name=metric] option[selected]")["value"] == "train_weighted"
    assert form.select_one("input[name=target]")["value"] == "0.85"
    assert form.select_one("input[name=smoothing]")["value"] == "0.5"
    # The selected runs first, in their order: sent again, each run keeps its colour.
    assert [i["value"] for i in form.select("input[name=runs][checked]")] == ["cmp-a", "cmp-b"]


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_the_cli_ranks_as_the_page_does(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    fill_two(app_server, rds, settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "server", "runs", "compare", *args], env=cli_env(settings),
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    r = cli("cmp-a", "cmp-b", "--target", "0.85")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("evaluation heldout") and "target 0.85" in lines[0]
    assert lines[1].split() == ["rank", "run", "final", "best", "steps", "to", "0.85", "points"]
    assert [ln.split() for ln in lines[2:]] == [["1", "cmp-b", "0.850", "0.850", "2", "2"],
                                                 ["2", "cmp-a", "0.550", "0.550", "-", "2"]]
    # The completion-weighted train accuracy ranks them the other way.
    r = cli("cmp-a", "cmp-b", "--target", "0.85", "--metric", "train_weighted")
    assert [ln.split()[:2] for ln in r.stdout.splitlines()[2:]] == [["1", "cmp-a"], ["2", "cmp-b"]]
    r = cli("cmp-a", "cmp-b", "--target", "1.5")
    assert (r.returncode, r.stderr) == (1, "Error: the target must be a number from 0 to 1, got '1.5'\n")
    r = cli("cmp-a", "nope")
    assert r.returncode == 1 and r.stderr.startswith("Error:") and "nope" in r.stderr and "Traceback" not in r.stderr


def test_ema_is_the_run_pages() -> None:
    # static/js/charts.js SB.ema: s0 = v0, s = w s + (1 - w) v; weight 0 leaves the values as they are.
    assert compare.ema([0.9, 0.8, 0.875], 0.5) == pytest.approx([0.9, 0.85, 0.8625], abs=1e-15)
    assert compare.ema([0.2, 0.4], 0.0) == [0.2, 0.4]
    assert compare.ema([], 0.7) == []


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_markers_and_what_differs(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    fill_two(app_server, rds, settings, config_b={"lr": 1e-6, "scheduler": "dump"})
    c = app_server.client
    # A pin on run A, applied by the agent at step 1 (its ack through the real ingest).
    cid = c.post("/api/runs/cmp-a/commands", json={"kind": "pin", "arm": "easy", "value": 0.9}).json()["id"]
    xadd(rds, settings, {"v": 1, "type": "command_ack", "run": "cmp-a", "seq": 50, "ts": 1.7e9 + 1, "id": cid,
                         "status": "applied", "applied_step": 1, "message": ""})
    wait_for(lambda: c.get("/api/runs/cmp-a/commands").json()[0]["status"] == "applied")
    # A command the agent rejected is no override.
    cid2 = c.post("/api/runs/cmp-b/commands", json={"kind": "retire", "arm": "hard"}).json()["id"]
    xadd(rds, settings, {"v": 1, "type": "command_ack", "run": "cmp-b", "seq": 50, "ts": 1.7e9 + 1, "id": cid2,
                         "status": "rejected", "message": "no"})
    wait_for(lambda: c.get("/api/runs/cmp-b/commands").json()[0]["status"] == "rejected")

    r = c.get("/compare", params={"runs": ["cmp-a", "cmp-b"]})
    data = page_data(r)
    assert data["markers"] == [{"run": "cmp-a", "step": 1, "label": "pin easy=0.9", "arm": "easy"}]
    page = soup(r)
    table = page.select_one("#diff-table")
    rows = {tr["data-key"]: tr for tr in table.select("tbody tr")}
    assert [td.text.strip() for td in rows["overrides"].select("td")] == ["pin easy=0.9 at step 1", "none"]
    # Shown by default: only what differs (the overrides and params.c); the rest behind the toggle.
    assert [k for k, tr in rows.items() if "differs" in tr["class"]] == ["overrides", "params.c"]
    assert [td.text for td in rows["params.c"].select("td")] == ["1.0", "2.0"]
    assert page.select_one("#diff-all") is not None
    # Each key once: config.scheduler says what scheduler says, so it is folded into that row, and the
    # ranking table has no scheduler column.
    assert "config.scheduler" not in rows and "same as config.scheduler" in rows["scheduler"].th.text
    assert [tr["data-key"] for tr in table.select("tbody tr")].count("scheduler") == 1
    assert "scheduler" not in [th.text.lower() for th in page.select("#ranking thead th")]
    assert [td.text for td in rows["scheduler"].select("td")] == ["dump", "dump"]
    assert sorted(rows) == sorted(["overrides", "scheduler", "project", "params.c", "params.window", "config.lr"])
    ranked = {tr["data-run"]: tr.select("td")[-1].text for tr in page.select("#ranking tbody tr")}
    assert ranked == {"cmp-a": "1", "cmp-b": "0"}


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_bad_parameters_come_back_as_form_errors(app_server: LiveServer, rds: redis.Redis,
                                                 settings: Settings) -> None:
    fill_two(app_server, rds, settings)
    c = app_server.client
    ok = {"runs": "cmp-a,cmp-b"}
    cases = [
        ({**ok, "target": "1.5"}, "target", "the target must be a number from 0 to 1, got '1.5'"),
        ({**ok, "target": "abc"}, "target", "the target must be a number from 0 to 1, got 'abc'"),
        ({**ok, "smoothing": "1"}, "smoothing", "smoothing must be a number from 0 to 0.99, got '1'"),
        ({"runs": "cmp-a,nope"}, "runs", "no run named 'nope'"),
        ({"runs": ",".join(f"r{i}" for i in range(11))}, "runs", "compare at most 10 runs at once; 11 are selected"),
        ({**ok, "metric": "loss"}, "metric", "unknown metric 'loss': choose train_mean, train_weighted, accuracy, "
                                             "probability or an evaluation (eval:NAME)"),
        ({**ok, "metric": "eval:aime"}, "metric",
         "none of these runs has an evaluation 'aime' (their evaluations: heldout)"),
        ({**ok, "metric": "accuracy", "arm": "zz"}, "arm",
         "none of these runs has an arm 'zz'; their arms: easy, hard"),
    ]
    for params, field, message in cases:
        for headers in ({}, HX):
            r = c.get("/compare", params=params, headers=headers)
            assert r.status_code == 400, (params, r.text[:300])
            page = soup(r)
            assert (page.find("html") is None) == bool(headers)
            assert page.select_one(f"#err-{field}").text == message
            assert page.select_one("#compare-options") is not None and page.select_one("#compare-data") is None
    # The typed value stays in the form, marked invalid, next to its message.
    page = soup(c.get("/compare", params={**ok, "target": "1.5"}))
    target = page.select_one("input[name=target]")
    assert (target["value"], target["aria-invalid"], target["aria-describedby"]) == ("1.5", "true", "err-target")
    # Ten runs is the limit, not an error; a name given twice counts once.
    assert c.get("/compare", params={"runs": "cmp-a,cmp-b,cmp-a"}).status_code == 200
    # The JSON API keeps its 422 JSON.
    r = c.get("/api/runs/cmp-a/series", params={"metric": "bogus"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    # Links from before: metric=overall_accuracy is the weighted train accuracy.
    assert page_data(c.get("/compare", params={**ok, "metric": "overall_accuracy"}))["metric"] == "train_weighted"


def test_without_evaluations_the_default_is_the_unweighted_train_mean(
    app_server: LiveServer, rds: redis.Redis, settings: Settings
) -> None:
    for run in ("ne-a", "ne-b"):
        xadd(rds, settings, run_start(run, 1, ARMS), step(run, 2, 0, [rec("easy", 1.0, 3), rec("hard", 0.0, 1)]))
        wait_for(lambda run=run: c_get(app_server, run) == 0)
    r = app_server.client.get("/compare", params={"runs": "ne-a,ne-b"})
    data = page_data(r)
    assert data["metric"] == "train_mean" and data["overlay"][0]["values"] == [0.5]
    assert [o["value"] for o in soup(r).select("select[name=metric] option")] == [
        "train_mean", "train_weighted", "accuracy", "probability"]
    # One run: the form, a hint, no figures.
    one = soup(app_server.client.get("/compare", params={"runs": "ne-a"}, headers=HX))
    assert one.select_one("#compare-view") is not None and one.select_one("#compare-data") is None
    assert one.select_one("#compare-result .hint") is not None


def c_get(srv: LiveServer, run: str) -> int | None:
    r = srv.client.get(f"/api/runs/{run}")
    return r.json()["last_step"] if r.status_code == 200 else None


# ---------------------------------------------------------------------------------------------------
# Long runs: through the rollups
# ---------------------------------------------------------------------------------------------------

LONG_ARMS = ["a", "b", "c"]
STEPS = 3000


def long_record(arm: str, i: int, s: int) -> dict[str, Any]:
    """Arm c is never graded after step 2000; arm b has no completions on every 3rd step; one spike."""
    n = 0 if (i == 1 and s % 3 == 0) or (i == 2 and s > 2000) else 4 + i
    acc = min(1.0, s / (1500.0 + 700 * i)) * (0.9 + 0.1 * math.sin(s / 37.0 + i))
    if i == 0 and s == 1777:
        acc = 0.0  # one bad batch: the weighted overlay must still show it
    return rec(arm, acc if n else None, n)


def fill_long(engine: Engine, run: str) -> None:
    ingest_docs(engine, [run_start(run, 1, LONG_ARMS)] + [
        step(run, s + 2, s, [long_record(a, i, s) for i, a in enumerate(LONG_ARMS)]) for s in range(STEPS)
    ], batch=400)


def long_truth() -> tuple[np.ndarray, np.ndarray]:
    """Per step: the weighted accuracy, and each arm's accuracy (NaN where not graded)."""
    weighted, per_arm = [], []
    for s in range(STEPS):
        recs = [long_record(a, i, s) for i, a in enumerate(LONG_ARMS)]
        graded = [(r["accuracy"], r["n_step"]) for r in recs if r["accuracy"] is not None]
        weighted.append(sum(a * n for a, n in graded) / sum(n for _, n in graded))
        per_arm.append([np.nan if r["accuracy"] is None else r["accuracy"] for r in recs])
    return np.array(weighted), np.array(per_arm)


def carried_mean(rows: np.ndarray) -> np.ndarray:
    """Row by row: the mean over columns of each column's latest non-NaN value (a plain loop)."""
    last = [math.nan] * rows.shape[1]
    out = []
    for row in rows:
        last = [v if not math.isnan(v) else lv for v, lv in zip(row, last, strict=True)]
        out.append(np.nanmean(last))
    return np.array(out)


@pytest.mark.parametrize("empty_db", BACKENDS, indirect=True)
def test_long_runs_read_per_step_totals_and_rollups(engine: Engine) -> None:
    fill_long(engine, "long-a")
    fill_long(engine, "long-b")
    weighted, per_arm = long_truth()
    runs = ["long-a", "long-b"]
    with Session(engine) as session:
        w = compare.compare(session, compare.parse_query(runs, "train_weighted", "", "0.8", ""), 60.0,
                            max_points=200, small_points=100)
        m = compare.compare(session, compare.parse_query(runs, "train_mean", "", "0.8", ""), 60.0, max_points=200)
        exact = compare.compare(session, compare.parse_query(runs, "train_mean", "", "0.8", ""), 60.0,
                                max_points=STEPS)
        coarse = compare.compare(session, compare.parse_query(runs, "train_mean", "", "0.8", ""), 60.0,
                                 max_points=100)
        arm = compare.compare(session, compare.parse_query(runs, "accuracy", "a", "0.8", ""), 60.0, max_points=200)
    # Weighted: per-step totals, downsampled keeping each bucket's min and max.
    for t in w.overlay:
        assert len(t.steps) <= 200 and t.steps[0] == 0 and t.steps[-1] == STEPS - 1
        assert np.allclose(t.values, weighted[t.steps], atol=1e-12)
        assert min(t.values) == pytest.approx(weighted.min()) and max(t.values) == pytest.approx(weighted.max())
    first = int(np.flatnonzero(np.array(w.overlay[0].values) >= 0.8)[0])
    assert [r.steps_to_target for r in w.ranking] == [w.overlay[0].steps[first]] * 2
    # Unweighted, whole run within the chart's points: every step, each arm carrying its last accuracy.
    assert exact.bucket is None
    assert np.allclose(exact.overlay[0].values, carried_mean(per_arm), atol=1e-12)
    # Unweighted, longer than the chart: one point per 64-step rollup bucket at its last step (47 buckets,
    # at most 200 / 4), each arm counting with its mean over the bucket (arm c, silent after step 2000,
    # carries its last bucket's).
    width = ROLLUP_WIDTHS[0]
    assert m.bucket == width
    # With 100 points: at most 25 buckets, so 256-step ones (12).
    assert coarse.bucket == ROLLUP_WIDTHS[1] and len(coarse.overlay[0].steps) == -(-STEPS // ROLLUP_WIDTHS[1])
    buckets = -(-STEPS // width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # arm c's empty buckets: NaN, as wanted
        by_bucket = np.array([np.nanmean(per_arm[b * width:(b + 1) * width], axis=0) for b in range(buckets)])
    for t in m.overlay:
        assert t.steps == [min(b * width + width - 1, STEPS - 1) for b in range(buckets)]
        assert np.allclose(t.values, carried_mean(by_bucket), atol=1e-12)
    # One arm's accuracy: downsampled through the rollups, the bad batch at step 1777 kept.
    for t in arm.overlay:
        assert len(t.steps) <= 200 and 0.0 in t.values
    assert sorted(w.small) == LONG_ARMS and all(len(ts) == 2 for ts in w.small.values())
    assert all(len(t.steps) <= 100 for ts in w.small.values() for t in ts)
