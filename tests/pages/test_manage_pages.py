"""The runs table's sort and pages, and managing a run from the pages (tags, note, archive, delete with
its confirmation): real app over HTTP, real Redis and SQLite, each with and without HX-Request, parsed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
from bs4 import BeautifulSoup
from sqlalchemy import Engine

from server.db import make_engine
from server.settings import Settings
from tests.server.conftest import LiveServer, ingest_docs, run_start, step_msg

from .helpers import add_viewer_and_operator, csrf_of, login, soup, start_run

HX = {"HX-Request": "true"}


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    e = make_engine(settings.database_url)
    yield e
    e.dispose()


def rows(page: BeautifulSoup) -> list[str]:
    return [str(tr["data-run"]) for tr in page.select("#runs-table tbody tr[data-run]")]


def query_of(href: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(href).query)


def test_runs_table_sorts_and_pages(app_server: LiveServer, engine: Engine) -> None:
    # 55 runs, run i with i % 7 steps; "odd" ones in project p-odd.
    docs = []
    for i in range(55):
        run = f"pt-{i:02d}"
        docs.append(run_start(run, 1, ["x"], project="p-odd" if i % 2 else "p-even"))
        docs.extend(step_msg(run, 2 + s, s, ["x"]) for s in range(i % 7))
    ingest_docs(engine, docs)
    c = app_server.client

    page = soup(c.get("/"))
    assert rows(page) == [f"pt-{i:02d}" for i in range(54, 4, -1)]  # 50 a page, newest first
    assert page.select_one("#runs-count").text.split() == ["55", "runs", "·", "page", "1", "of", "2"]
    pager = {a.text: a["href"] for a in page.select(".pager a")}
    assert pager == {"next ›": "/?page=2", "last »": "/?page=2"}
    assert rows(soup(c.get("/", params={"page": 2}))) == [f"pt-{i:02d}" for i in range(4, -1, -1)]

    # Sorted by steps, descending: the most steps first, ties newest first; the header says so and its
    # link turns the order around; the pages keep the sort, the filters and nothing else.
    r = c.get("/", params={"sort": "steps", "order": "desc", "project": "p-odd"})
    page = soup(r)
    odd = [i for i in range(54, -1, -1) if i % 2]
    want = sorted(odd, key=lambda i: i % 7, reverse=True)
    assert rows(page) == [f"pt-{i:02d}" for i in want]
    th = page.select_one('th[data-sort="steps"]')
    assert th["aria-sort"] == "descending"
    assert query_of(th.select_one("a")["href"]) == {"sort": ["steps"], "order": ["asc"], "project": ["p-odd"]}
    run_th = page.select_one('th[data-sort="run"]')
    assert not run_th.has_attr("aria-sort")
    assert query_of(run_th.select_one("a")["href"]) == {"sort": ["run"], "order": ["asc"], "project": ["p-odd"]}
    steps_col = [int(tr.select("td")[6].text) for tr in page.select("tbody tr[data-run]")]
    assert steps_col == [i % 7 for i in want]
    # The table's state travels with its refreshes.
    state = {i["name"]: i["value"] for i in page.select("#runs-table > input[type=hidden]")}
    assert state == {"sort": "steps", "order": "desc", "page": "1"}

    r = c.get("/", params={"sort": "run", "order": "asc", "page": 2}, headers=HX)
    frag = soup(r)
    assert frag.find("html") is None and [el["id"] for el in frag.find_all(recursive=False)] == ["runs-table"]
    assert rows(frag) == [f"pt-{i:02d}" for i in range(50, 55)]
    pager = {a.text: query_of(a["href"]) for a in frag.select(".pager a")}
    assert pager == {"« first": {"sort": ["run"], "order": ["asc"]},
                     "‹ previous": {"sort": ["run"], "order": ["asc"]}}
    assert [s.text for s in frag.select(".pager .disabled")] == ["next ›", "last »"]
    # Past the last page: no rows, and the count still says how many there are.
    frag = soup(c.get("/", params={"page": 9}, headers=HX))
    assert rows(frag) == [] and frag.select_one("td.empty").text.split()[:4] == ["No", "runs", "on", "this"]
    for bad in ({"sort": "colour"}, {"order": "up", "sort": "run"}, {"archived": "maybe"}, {"page": "0"}):
        assert c.get("/", params=bad).status_code == 422, bad


def test_manage_a_run_from_its_page(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "pm-1", config={"tags": ["cfg"]})
    c = app_server.client  # local dev mode: the loopback client is an operator named "local"
    page = soup(c.get("/runs/pm-1"))
    assert [t.text for t in page.select("#run-header .tag")] == ["cfg"]
    manage = page.select_one("#run-manage")
    assert [f["action"] for f in manage.select("form")] == ["/runs/pm-1/tags", "/runs/pm-1/note", "/runs/pm-1/archive"]
    assert manage.select_one("#delete-link")["href"] == "/runs/pm-1/delete"
    token = csrf_of(c, "/runs/pm-1")

    # Tags, with htmx: the fragment to swap, and the header out of band showing them.
    r = c.post("/runs/pm-1/tags", data={"action": "add", "tags": "ablation, lr sweep", "csrf_token": token}, headers=HX)
    assert r.status_code == 200
    frag = soup(r)
    assert [el["id"] for el in frag.find_all(recursive=False)] == ["run-manage", "run-header"]
    assert frag.select_one("#run-header")["hx-swap-oob"] == "true"
    assert [t.text for t in frag.select("#run-header .tag")] == ["cfg", "ablation", "lr sweep"]
    assert [b["aria-label"] for b in frag.select("#run-manage button.chip")] == ["remove tag ablation",
                                                                               "remove tag lr sweep"]
    assert frag.select_one("#run-manage .form-message").text == "saved"
    # An invalid tag: 400, the form again with its error and what was typed.
    r = c.post("/runs/pm-1/tags", data={"action": "add", "tags": "x" * 70, "csrf_token": token}, headers=HX)
    assert r.status_code == 400
    frag = soup(r)
    assert frag.select_one(".manage-tags .form-error").text.startswith("a tag has at most 64 characters")
    assert frag.select_one(".manage-tags input[name=tags]")["aria-invalid"] == "true"
    assert frag.select_one(".manage-tags input[name=tags]")["value"] == "x" * 70
    assert frag.select_one("#run-header") is None
    # Without htmx: a redirect on success; the management page with the error otherwise.
    r = c.post("/runs/pm-1/tags", data={"action": "remove", "tags": "ablation", "csrf_token": token})
    assert (r.status_code, r.headers["location"]) == (303, "/runs/pm-1")
    r = c.post("/runs/pm-1/tags", data={"action": "remove", "tags": "cfg", "csrf_token": token})
    assert r.status_code == 400
    page = soup(r)
    assert page.select_one("title").text == "Manage pm-1 · Steerboard"
    assert "comes from the run's config" in page.select_one(".manage-tags .form-error").text

    r = c.post("/runs/pm-1/note", data={"note": "lr too high\nretry with 1e-6", "csrf_token": token}, headers=HX)
    assert soup(r).select_one("#run-note").text == "lr too high\nretry with 1e-6"
    assert soup(r).select_one(".manage-note textarea").text == "lr too high\nretry with 1e-6"
    r = c.post("/runs/pm-1/archive", data={"archived": "true", "csrf_token": token}, headers=HX)
    frag = soup(r)
    assert frag.select_one("#run-archived").text == "archived"
    assert frag.select_one(".manage-archive button").text == "Unarchive"
    assert rows(soup(c.get("/"))) == []
    listed = soup(c.get("/", params={"archived": "only"}))
    assert rows(listed) == ["pm-1"]
    row = listed.select_one("tr[data-run=pm-1]")
    assert "archived" in row["class"] and row.select_one(".badge.archived") is not None
    assert [t.text for t in row.select(".tag")] == ["cfg", "lr sweep"]
    assert row.select_one("td.note").text == "lr too high\nretry with 1e-6"
    assert [t["class"] for t in row.select(".tag")] == [["tag", "tag-agent"], ["tag", "tag-user"]]
    assert query_of(row.select(".tag")[1]["href"]) == {"tag": ["lr sweep"], "archived": ["only"]}
    assert [o["value"] for o in listed.select("select[name=tag] option")] == ["", "cfg", "lr sweep"]
    r = c.post("/runs/pm-1/archive", data={"archived": "false", "csrf_token": token}, headers=HX)
    assert soup(r).select_one("#run-archived") is None and rows(soup(c.get("/"))) == ["pm-1"]

    # No CSRF token, no change.
    assert c.post("/runs/pm-1/note", data={"note": "forged"}, headers=HX).status_code == 403
    log = c.get("/api/runs/pm-1/actions").json()
    assert [(a["action"], a["detail"], a["actor"]) for a in reversed(log)] == [
        ("tag", "ablation", "local"), ("tag", "lr sweep", "local"), ("untag", "ablation", "local"),
        ("note", "lr too high\nretry with 1e-6", "local"), ("archive", "", "local"), ("unarchive", "", "local"),
    ]


def test_viewers_see_but_cannot_manage(app_server: LiveServer, rds: redis.Redis, settings: Settings,
                                       client_for: Callable[[], httpx.Client]) -> None:
    start_run(app_server, rds, settings, "pm-2")
    add_viewer_and_operator(settings)
    op = client_for()
    login(op, "omar", "omar-pass-1")
    token = csrf_of(op, "/runs/pm-2")
    assert op.post("/runs/pm-2/tags", data={"action": "add", "tags": "keep", "csrf_token": token},
                   headers=HX).status_code == 200
    assert op.post("/runs/pm-2/note", data={"note": "ask omar", "csrf_token": token}, headers=HX).status_code == 200

    viewer = client_for()
    login(viewer, "vera", "vera-pass-1")
    page = soup(viewer.get("/runs/pm-2"))
    assert [t.text for t in page.select("#run-header .tag")] == ["keep"]
    assert page.select_one("#run-note").text == "ask omar"
    assert page.select_one("#run-manage") is None
    assert page.select_one("#run-header #run-archived") is None
    token = csrf_of(viewer, "/runs/pm-2")
    for path, data in (("/runs/pm-2/tags", {"action": "add", "tags": "mine"}), ("/runs/pm-2/note", {"note": "x"}),
                       ("/runs/pm-2/archive", {"archived": "true"}), ("/runs/pm-2/delete", {})):
        r = viewer.post(path, data={**data, "csrf_token": token}, headers=HX)
        assert r.status_code == 403, path
        assert soup(r).select_one(".error-message").text == "vera is a viewer; steering needs an operator"
    confirm = soup(viewer.get("/runs/pm-2/delete"))
    assert confirm.select_one("form.delete-form") is None
    assert confirm.select_one(".delete-confirm .hint:last-child").text == "Deleting a run needs an operator."
    assert soup(viewer.get("/runs/pm-2/manage")).select_one("#run-manage") is None
    assert [a["actor"] for a in viewer.get("/api/runs/pm-2/actions").json()] == ["omar", "omar"]
    assert viewer.get("/api/runs/pm-2").status_code == 200


def test_delete_from_the_pages(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "pm-del", steps=4)
    start_run(app_server, rds, settings, "pm-other")
    c = app_server.client
    page = soup(c.get("/runs/pm-del/delete"))
    assert page.select_one("h1").text == "Delete run pm-del?"
    what = {li["data-kind"]: li.select_one("strong").text for li in page.select("#delete-what li[data-kind]")}
    assert what == {"arm step rows": "16", "rollup rows": "16", "score-part rollup rows": "24", "steps": "4",
                    "evaluation rows": "0", "commands": "0", "arm diagnoses": "1", "diagnosis changes": "0",
                    "suggestion answers": "0", "scheduler snapshots": "0", "tags": "0", "arms": "4"}
    assert "control stream" in page.select("#delete-what li")[-1].text
    assert page.select_one("#delete-running").text.split()[:4] == ["This", "run", "is", "running."]
    assert page.select_one("#delete-confirm-button").text == "Delete pm-del for good"
    form = page.select_one("form.delete-form")
    assert (form["action"], form["method"]) == ("/runs/pm-del/delete", "post")

    token = csrf_of(c, "/runs/pm-del/delete")
    assert c.post("/runs/pm-del/delete", data={}, headers=HX).status_code == 403  # no CSRF token
    r = c.post("/runs/pm-del/delete", data={"csrf_token": token}, headers=HX)
    assert (r.status_code, r.headers["HX-Redirect"]) == (200, "/?deleted=pm-del")
    assert c.get("/runs/pm-del").status_code == 404
    assert c.get("/runs/pm-del/delete").status_code == 404
    page = soup(c.get("/", params={"deleted": "pm-del"}))
    assert page.select_one("#deleted-notice").text == "Run pm-del was deleted."
    assert rows(page) == ["pm-other"]
    # Without htmx: a redirect to the list.
    r = c.post("/runs/pm-other/delete", data={"csrf_token": token})
    assert (r.status_code, r.headers["location"]) == (303, "/?deleted=pm-other")
    assert [a["action"] for a in c.get("/api/runs/pm-other/actions").json()] == ["delete"]
