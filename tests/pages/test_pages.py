"""The HTML pages over HTTP (real app, Redis, SQLite), each with and without HX-Request, parsed."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable

import httpx
import orjson
import redis

from server.settings import Settings
from server.web import PLOTLY_URL, STATIC_DIR
from tests.server.conftest import LiveServer, step_msg, wait_for, xadd

from .helpers import ARMS, add_user, add_viewer_and_operator, csrf_of, login, soup, start_run

HX = {"HX-Request": "true"}


def test_runs_page_full_fragment_and_filters(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "pg-runs-a", config={"tags": ["kk", "ablation"]}, project="logic")
    start_run(app_server, rds, settings, "pg-runs-b", project="math")
    xadd(rds, settings, {"v": 1, "type": "run_end", "run": "pg-runs-b", "seq": 50, "ts": time.time(),
                         "status": "finished", "step": 2})
    wait_for(lambda: app_server.client.get("/api/runs/pg-runs-b").json()["status"] == "finished")

    full = app_server.client.get("/")
    assert full.status_code == 200
    page = soup(full)
    assert page.title is not None and page.title.text == "Runs · Steerboard"
    assert page.select_one("link[href='/static/css/app.css']") is not None
    rows = {tr["data-run"]: tr for tr in page.select("#runs-table tbody tr[data-run]")}
    assert list(rows) == ["pg-runs-b", "pg-runs-a"]  # newest first
    a = rows["pg-runs-a"]
    assert a.select_one(".badge").text == "running"
    assert [t.text for t in a.select(".tag")] == ["kk", "ablation"]
    keys = [th["data-sort"] for th in page.select("#runs-table thead th[data-sort]")]
    cells = dict(zip(keys, [td.text.strip() for td in a.select("td")[1:]], strict=True))
    assert {k: cells[k] for k in ("project", "tags", "scheduler", "arms", "steps")} == {
        "project": "logic", "tags": "kkablation", "scheduler": "dump", "arms": "4", "steps": "3"}
    assert rows["pg-runs-b"].select_one(".badge").text == "finished"
    # The table refreshes itself every few seconds and keeps the filters.
    table = page.select_one("#runs-table")
    assert (table["hx-get"], table["hx-trigger"]) == ("/", "every 3s")
    assert [o["value"] for o in page.select("select[name=project] option")] == ["", "logic", "math"]

    frag = app_server.client.get("/", headers=HX)
    assert frag.status_code == 200
    fpage = soup(frag)
    assert fpage.find("html") is None and fpage.find("header") is None
    top = [el for el in fpage.contents if getattr(el, "name", None)]
    assert len(top) == 1 and top[0]["id"] == "runs-table"

    def names(**params: str) -> list[str]:
        r = app_server.client.get("/", params=params, headers=HX)
        assert r.status_code == 200
        return [tr["data-run"] for tr in soup(r).select("tr[data-run]")]

    assert names(status="finished") == ["pg-runs-b"]
    assert names(status="running") == ["pg-runs-a"]
    assert names(status="stale") == []
    assert names(project="logic") == ["pg-runs-a"]
    assert names(q="RUNS-B") == ["pg-runs-b"]
    assert names(q="nothing") == []
    # Ticked runs stay ticked across refreshes.
    r = app_server.client.get("/", params={"runs": "pg-runs-a"}, headers=HX)
    ticked = [i["value"] for i in soup(r).select("input[name=runs][checked]")]
    assert ticked == ["pg-runs-a"]
    assert app_server.client.get("/", params={"status": "bogus"}).status_code == 422


def test_run_page_full_and_fragment(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "pg-run-1", steps=5)
    r = app_server.client.get("/runs/pg-run-1")
    assert r.status_code == 200
    page = soup(r)
    assert page.select_one("#run-header h1").contents[0].strip() == "pg-run-1"
    assert page.select_one("#run-status").text == "running"
    assert page.select_one("#run-step").text == "4"
    data = orjson.loads(page.select_one("#run-data").text)
    assert data["run"] == "pg-run-1" and data["arms"] == ARMS and data["markers"] == []
    assert data["event_seq"] == app_server.client.get("/api/runs/pg-run-1").json()["event_seq"]
    assert [d["id"] for d in page.select(".charts .plot")] == [
        "chart-probability", "chart-mean_abs_adv", "chart-accuracy", "chart-counts", "chart-score",
    ]
    assert [c.contents[0].strip() for c in page.select(".charts figcaption")] == [
        "Sampling probability in force (overrides included)", "Mean |advantage| per arm", "Accuracy per arm",
        "Completions", "Scheduler",
    ]
    # Two charts have two views each, chosen in their captions (the first checked).
    views = [(r["data-chart"], r["value"], r.has_attr("checked")) for r in page.select("input.chart-view")]
    assert views == [("chart-counts", "n_step", True), ("chart-counts", "n_total", False),
                     ("chart-score", "score", True), ("chart-score", "parts", False)]
    assert [g["aria-label"] for g in page.select(".charts .views")] == [
        "completions: per step or cumulative", "scheduler: score or its parts"]
    assert page.select_one('[data-view-of="chart-score"][data-view="parts"]').has_attr("hidden")
    # The page's script gets the same charts in the page data: what each view loads, and which field of
    # the live step records extends it.
    charts = [(c["id"], [(v["metric"], v["field"]) for v in c["views"]]) for c in data["charts"]]
    assert charts == [
        ("chart-probability", [("probability", "p")]),
        ("chart-mean_abs_adv", [("mean_abs_adv", "mean_abs_adv")]),
        ("chart-accuracy", [("accuracy", "accuracy")]),
        ("chart-counts", [("n_step", "n_step"), ("n_total", "n_total")]),
        ("chart-score", [("score", "score"), ("parts", "parts")]),
    ]
    assert data["points"] == {"per_arm": 1000, "per_part": 500}  # 4 arms: the most a chart shows per arm
    scripts = [s.get("src") for s in page.select("script[src]")]
    assert scripts == ["/static/js/theme.js", "/static/vendor/htmx.min.js", "/static/js/app.js", PLOTLY_URL,
                       "/static/js/charts.js", "/static/js/run/main.js", "/static/js/run/early.js"]
    # Plotly, SB's helpers and the page's module run after the document is parsed, in this order (a module
    # script is deferred); early.js, a classic script, runs as the parser reaches it, right after the page
    # data it reads: the data requests start while Plotly loads.
    assert all(page.select_one(f'script[src="{src}"]').has_attr("defer")
               for src in (PLOTLY_URL, "/static/js/charts.js"))
    assert page.select_one(f'script[src="{PLOTLY_URL}"]')["fetchpriority"] == "high"
    main = page.select_one('script[src="/static/js/run/main.js"]')
    assert main["type"] == "module" and not main.has_attr("async")
    # Every module main.js imports is requested with it.
    modules = {f"/static/js/run/{p.name}" for p in (STATIC_DIR / "js" / "run").glob("*.js")}
    preloads = {link["href"] for link in page.select('head link[rel="modulepreload"]')}
    assert preloads == modules - {"/static/js/run/main.js", "/static/js/run/early.js"}
    early = page.select_one('script[src="/static/js/run/early.js"]')
    assert not (early.has_attr("type") or early.has_attr("defer") or early.has_attr("async"))
    assert early.find_previous_sibling("script")["id"] == "run-data"
    assert all(not str(s).startswith("http") for s in scripts)
    # Local dev mode: no users, the loopback client is an operator, and the page says so.
    assert page.select_one(".dev-banner") is not None
    rows = page.select("table.arms tbody tr")
    assert [tr["data-arm"] for tr in rows] == ARMS
    kinds = [f["data-kind"] for f in rows[0].select("form.cmd")]
    assert kinds == ["pin", "boost", "retire", "restore", "release"]
    for f in rows[0].select("form.cmd"):
        assert f["hx-post"] == "/runs/pg-run-1/commands" and f["hx-confirm"]
        assert f.select_one("input[name=csrf_token]")["value"]
    exports = [a["href"] for a in page.select(".run-links a[download]")]
    assert exports == [f"/api/runs/pg-run-1/export.csv?what={w}" for w in ("arms", "steps", "evals", "commands")]
    # The evaluation chart comes first, before the chart options; its empty state and the picker of
    # evaluation sets stay hidden until static/js/run/evals.js has loaded the run's evaluations.
    ev = page.select_one("figure#eval")
    assert ev.find_next("section", class_="chart-controls") is not None
    assert ev.select_one("#eval-empty").has_attr("hidden")
    assert " ".join(ev.select_one("#eval-empty").text.split()) == "no evaluation yet: send one with agent.log_eval(...)"
    assert ev.select_one("#eval-picker").has_attr("hidden")
    target = ev.select_one("input#eval-target")
    assert (target["type"], target["min"], target["max"], target.get("value")) == ("number", "0", "1", None)
    assert page.select_one("#audit .empty").text == "No commands yet."

    frag = app_server.client.get("/runs/pg-run-1", headers=HX)
    assert frag.status_code == 200
    fpage = soup(frag)
    assert fpage.find("html") is None
    assert fpage.select_one("header#run-header")["hx-trigger"] == "every 5s"
    assert fpage.select_one("#run-step").text == "4"

    missing = app_server.client.get("/runs/nope")
    assert missing.status_code == 404
    assert soup(missing).select_one(".error-message").text == "no run named 'nope'"
    assert app_server.client.get("/runs/nope", headers=HX).status_code == 404


def test_invalid_pin_is_answered_inline(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "pg-pin")
    c = app_server.client
    token = csrf_of(c, "/runs/pg-pin")
    form = {"csrf_token": token, "kind": "pin", "arm": "kk4", "value": "1.5"}

    r = c.post("/runs/pg-pin/commands", data=form, headers=HX)
    assert r.status_code == 400
    f = soup(r).select_one("form.cmd")
    assert (f["data-arm"], f["data-kind"]) == ("kk4", "pin")
    assert f.select_one(".form-error").text == "pin probability must be in [0, 1], got 1.5"
    assert f.select_one("input[name=value]")["value"] == "1.5"
    assert f.select_one("input[name=value]")["aria-invalid"] == "true"

    r = c.post("/runs/pg-pin/commands", data={**form, "value": "abc"}, headers=HX)
    assert r.status_code == 400
    assert soup(r).select_one(".form-error").text == "the pin probability must be a number, got 'abc'"
    r = c.post("/runs/pg-pin/commands", data={**form, "arm": "zz", "value": "0.2"}, headers=HX)
    assert r.status_code == 400
    assert soup(r).select_one(".form-error").text.startswith("run 'pg-pin' has no arm 'zz'")
    assert rds.xlen(settings.keys.control("pg-pin")) == 0
    assert c.get("/api/runs/pg-pin/commands").json() == []

    # Without htmx: the whole page comes back with that form's error.
    r = c.post("/runs/pg-pin/commands", data=form)
    assert r.status_code == 400
    page = soup(r)
    assert page.select_one("#run-header") is not None
    assert page.select_one('form[data-arm="kk4"][data-kind="pin"] .form-error').text.startswith("pin probability")

    # A valid pin: the form comes back cleared with "pending", and the audit log (out of band).
    r = c.post("/runs/pg-pin/commands", data={**form, "value": "0.5", "reason": "more kk4"}, headers=HX)
    assert r.status_code == 200
    page = soup(r)
    msg = page.select_one("form.cmd .form-message")
    log = c.get("/api/runs/pg-pin/commands").json()
    assert [(x["kind"], x["arm"], x["value"], x["actor"], x["reason"], x["status"]) for x in log] == [
        ("pin", "kk4", 0.5, "local", "more kk4", "pending")
    ]
    assert msg["data-command-id"] == log[0]["id"]
    audit = page.select_one("#audit")
    assert audit["hx-swap-oob"] == "true"
    assert [td.text for td in audit.select(f'td.cmd-status[data-command-id="{log[0]["id"]}"]')] == ["pending"]
    wire = orjson.loads(rds.xrange(settings.keys.control("pg-pin"))[0][1][b"m"])
    assert (wire["id"], wire["kind"], wire["arm"], wire["value"], wire["actor"]) == (log[0]["id"], "pin", "kk4", 0.5,
                                                                                     "local")
    # Without htmx a valid command redirects back to the run page.
    r = c.post("/runs/pg-pin/commands", data={**form, "kind": "release"}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/runs/pg-pin")

    # The ack arrives: the audit log says at which step it applied.
    xadd(rds, settings, {"v": 1, "type": "command_ack", "run": "pg-pin", "seq": 40, "ts": time.time(),
                         "id": log[0]["id"], "status": "applied", "applied_step": 3, "message": "pinned"})
    wait_for(lambda: c.get("/api/runs/pg-pin/commands").json()[-1]["status"] == "applied")
    r = c.get("/runs/pg-pin/commands", headers=HX)
    cell = soup(r).select_one(f'td.cmd-status[data-command-id="{log[0]["id"]}"]')
    assert cell.text == "applied at step 3"
    markers = orjson.loads(soup(c.get("/runs/pg-pin")).select_one("#run-data").text)["markers"]
    assert markers == [{"step": 3, "label": "pin kk4=0.5", "id": log[0]["id"]}]


def test_csrf_is_required_on_every_post(app_server: LiveServer, rds: redis.Redis, settings: Settings,
                                        client_for: Callable[[], httpx.Client]) -> None:
    start_run(app_server, rds, settings, "pg-csrf")
    add_user(settings, "olga", "operator", "olga-pass-1")
    c = client_for()
    # The login form itself carries a CSRF token.
    r = c.post("/login", data={"name": "olga", "password": "olga-pass-1"})
    assert r.status_code == 403
    assert login(c, "olga", "olga-pass-1").status_code == 303
    token = csrf_of(c, "/runs/pg-csrf")
    form = {"kind": "pin", "arm": "kk3", "value": "0.2"}
    for data, headers in [(form, HX), ({**form, "csrf_token": "forged"}, HX), (form, {})]:
        r = c.post("/runs/pg-csrf/commands", data=data, headers=headers)
        assert r.status_code == 403
    r = c.post("/runs/pg-csrf/commands", data=form, headers={**HX, "X-CSRF-Token": "forged"})
    assert r.status_code == 403
    assert "CSRF" in soup(r).select_one(".error-message").text
    # The JSON API from a cookie session needs the header too.
    body = {"kind": "pin", "arm": "kk3", "value": 0.2}
    assert c.post("/api/runs/pg-csrf/commands", json=body).status_code == 403
    assert c.get("/api/runs/pg-csrf/commands").json() == []
    assert c.post("/api/runs/pg-csrf/commands", json=body, headers={"X-CSRF-Token": token}).status_code == 202
    assert c.post("/runs/pg-csrf/commands", data={**form, "kind": "release", "csrf_token": token},
                  headers=HX).status_code == 200
    assert [(x["kind"], x["actor"]) for x in c.get("/api/runs/pg-csrf/commands").json()] == [
        ("release", "olga"), ("pin", "olga")
    ]


def test_login_logout_viewer_and_anonymous(app_server: LiveServer, rds: redis.Redis, settings: Settings,
                                           client_for: Callable[[], httpx.Client]) -> None:
    start_run(app_server, rds, settings, "pg-auth")
    add_viewer_and_operator(settings)

    anon = client_for()
    r = anon.get("/runs/pg-auth")  # a user exists: viewing needs a login (tests/pages/test_security.py)
    assert (r.status_code, r.headers["location"]) == (303, "/login?next=/runs/pg-auth")
    page = soup(anon.get("/login"))
    assert page.select_one(".dev-banner") is None  # a user exists: no more dev mode
    assert page.select_one(".who a").text == "Log in"
    token = csrf_of(anon, "/login")
    r = anon.post("/runs/pg-auth/commands", data={"kind": "release", "arm": "kk3", "csrf_token": token}, headers=HX)
    assert r.status_code == 401
    r = anon.post("/api/runs/pg-auth/commands", json={"kind": "release", "arm": "kk3"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"

    lp = anon.get("/login", params={"next": "/runs/pg-auth"})
    assert lp.status_code == 200 and soup(lp).select_one("input[name=next]")["value"] == "/runs/pg-auth"
    assert soup(anon.get("/login", params={"next": "//evil.example"})).select_one("input[name=next]")["value"] == "/"
    bad = anon.post("/login", data={"name": "vera", "password": "wrong", "csrf_token": csrf_of(anon)})
    assert bad.status_code == 401
    assert soup(bad).select_one(".form-error").text == "wrong user name or password"
    assert soup(bad).select_one("input[name=name]")["value"] == "vera"

    viewer = client_for()
    r = login(viewer, "vera", "vera-pass-1")
    assert (r.status_code, r.headers["location"]) == (303, "/")
    page = soup(viewer.get("/runs/pg-auth"))
    assert page.select_one(".who .user")["data-role"] == "viewer"
    assert page.select("form.cmd") == [] and page.select("table.arms thead th")[-1].text == "Boost"
    assert page.select_one("#no-controls").text.strip() == "You are a viewer: steering needs an operator."
    token = csrf_of(viewer, "/runs/pg-auth")
    r = viewer.post("/runs/pg-auth/commands", data={"kind": "release", "arm": "kk3", "csrf_token": token},
                    headers=HX)
    assert r.status_code == 403
    assert soup(r).select_one(".error-message").text == "vera is a viewer; steering needs an operator"
    r = viewer.post("/api/runs/pg-auth/commands", json={"kind": "release", "arm": "kk3"},
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 403
    assert viewer.get("/api/runs/pg-auth/commands").json() == []

    op = client_for()
    login(op, "omar", "omar-pass-1")
    page = soup(op.get("/runs/pg-auth"))
    assert page.select_one(".who .user").contents[0].strip() == "omar"
    assert len(page.select("form.cmd")) == 5 * len(ARMS)
    logout_token = page.select_one("form[action='/logout'] input[name=csrf_token]")["value"]
    assert op.post("/logout", data={}).status_code == 403
    r = op.post("/logout", data={"csrf_token": logout_token})
    assert (r.status_code, r.headers["location"]) == (303, "/")
    assert soup(op.get("/runs/pg-auth")).select("form.cmd") == []
    # A GET page that needs a login redirects there; the form remembers where to go back.
    r = op.get("/login?next=/runs/pg-auth")
    assert soup(r).select_one("input[name=next]")["value"] == "/runs/pg-auth"


def test_csv_export(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "pg-csv", steps=3)
    r = app_server.client.get("/api/runs/pg-csv/export.csv", params={"what": "arms"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"pg-csv-arms.csv\"; filename*=UTF-8''pg-csv-arms.csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == 3 * len(ARMS)
    assert list(rows[0]) == ["step", "ts", "arm", "probability", "score", "n_step", "n_total", "mean_abs_adv",
                             "mean_reward", "accuracy", "n_groups", "zero_var", "pass_hist", "part_exploit",
                             "part_explore"]
    by_key = {(int(row["step"]), row["arm"]): row for row in rows}
    for s in range(3):
        for rec in step_msg("pg-csv", 0, s, ARMS)["arms"]:
            row = by_key[(s, rec["arm"])]
            assert float(row["ts"]) == 1_700_000_000.0 + s
            assert float(row["probability"]) == 0.25
            assert int(row["n_total"]) == rec["n_total"]
            assert float(row["accuracy"]) == rec["accuracy"]
            assert row["mean_reward"] == ("" if rec["mean_reward"] is None else repr(rec["mean_reward"]))
            assert float(row["part_explore"]) == rec["parts"]["explore"]
            assert (row["n_groups"], row["zero_var"], row["pass_hist"]) == ("", "", "")  # not sent: empty

    app_server.client.post("/api/runs/pg-csv/commands", json={"kind": "boost", "arm": "kk5", "value": 2, "steps": 4})
    r = app_server.client.get("/api/runs/pg-csv/export.csv", params={"what": "commands"})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["actor"], x["kind"], x["arm"], x["value"], x["steps"], x["status"]) for x in rows] == [
        ("api", "boost", "kk5", "2.0", "4", "pending")
    ]
    assert app_server.client.get("/api/runs/nope/export.csv").status_code == 404
    assert app_server.client.get("/api/runs/pg-csv/export.csv", params={"what": "x"}).status_code == 422


def test_parts_api(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "pg-parts", steps=10)
    doc = app_server.client.get("/api/runs/pg-parts/parts", params={"arms": "kk4", "start": 2, "end": 5}).json()
    assert [(s["arm"], s["part"]) for s in doc["series"]] == [("kk4", "exploit"), ("kk4", "explore")]
    assert doc["series"][0]["steps"] == [2, 3, 4, 5]
    assert doc["series"][0]["values"] == [s / 1000.0 for s in range(2, 6)]
    down = app_server.client.get("/api/runs/pg-parts/parts", params={"max_points": 4}).json()["series"][0]
    # two buckets of five steps, each its first and last step with its min and max (rising: min first)
    assert down["downsampled"] and down["steps"] == [0, 4, 5, 9]
    assert down["values"] == [0.0, 0.004, 0.005, 0.009]
    assert app_server.client.get("/api/runs/pg-parts/parts", params={"arms": "zz"}).status_code == 422


def test_assets_are_local(app_server: LiveServer) -> None:
    r = app_server.client.get(PLOTLY_URL)
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert len(r.content) > 1_000_000
    for path in ("/static/vendor/htmx.min.js", "/static/js/run/main.js", "/static/css/app.css"):
        assert app_server.client.get(path).status_code == 200, path

