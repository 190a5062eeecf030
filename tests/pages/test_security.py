"""Issue 16, "safe to put on a shared box": server-side sessions, private reads, dev mode that never
comes back on its own, invalid tokens refused everywhere. Real app over HTTP, real SQLite and Redis,
the real `steerboard` command."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis
from alembic import command
from sqlalchemy import text

from server import auth
from server.db import alembic_config, make_engine, make_sessionmaker
from server.settings import Settings
from server.store import users
from tests.server.conftest import ROOT, LiveServer, cli_env, run_start, step_msg, wait_for, xadd

from .helpers import ARMS, add_token, add_user, csrf_of, login, soup, start_run

HX = {"HX-Request": "true"}
RELEASE = {"kind": "release", "arm": "kk3"}


def cli(args: list[str], settings: Settings, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], env=cli_env(settings), cwd=ROOT, input=stdin,
        capture_output=True, text=True, timeout=60,
    )


def steer(c: httpx.Client, run: str, token: str) -> int:
    """A command posted with this client's cookie and CSRF token: the status."""
    return c.post(f"/api/runs/{run}/commands", json=RELEASE, headers={"X-CSRF-Token": token}).status_code


# ---------------------------------------------------------------------------------------------------
# 1. Sessions held by the server
# ---------------------------------------------------------------------------------------------------


def test_a_saved_cookie_no_longer_steers_after_logout(app_server: LiveServer, rds: redis.Redis, settings: Settings,
                                                      client_for: Callable[[], httpx.Client]) -> None:
    start_run(app_server, rds, settings, "sec-logout")
    add_user(settings, "omar", "operator", "omar-pass-1")
    op = client_for()
    assert login(op, "omar", "omar-pass-1").status_code == 303
    token = csrf_of(op, "/runs/sec-logout")
    saved = dict(op.cookies)
    assert steer(op, "sec-logout", token) == 202
    assert op.post("/logout", data={"csrf_token": token}).status_code == 303

    thief = client_for()
    thief.cookies.update(saved)  # the cookie as it was before the logout
    assert steer(thief, "sec-logout", token) == 401
    assert thief.get("/runs/sec-logout").headers["location"] == "/login?next=/runs/sec-logout"
    got = app_server.client.get(
        "/api/runs/sec-logout/commands", headers={"Authorization": f"Bearer {add_token(settings, 'v', 'viewer')}"}
    ).json()
    assert isinstance(got, list), got
    assert [c["kind"] for c in got] == ["release"]


def test_password_role_disable_and_logout_commands_act_at_once(
    app_server: LiveServer, rds: redis.Redis, settings: Settings, client_for: Callable[[], httpx.Client]
) -> None:
    start_run(app_server, rds, settings, "sec-cli")
    add_user(settings, "omar", "operator", "omar-pass-1")
    op = client_for()
    login(op, "omar", "omar-pass-1")
    token = csrf_of(op, "/runs/sec-cli")
    assert steer(op, "sec-cli", token) == 202

    assert cli(["user", "role", "omar", "viewer"], settings).stdout == "user omar is now viewer\n"
    assert steer(op, "sec-cli", token) == 403
    assert cli(["user", "role", "omar", "operator"], settings).returncode == 0
    assert steer(op, "sec-cli", token) == 202

    r = cli(["user", "passwd", "omar", "--password-stdin"], settings, "omar-pass-2\n")
    assert r.stdout == "password of omar changed; their sessions ended\n", r.stderr
    assert steer(op, "sec-cli", token) == 401
    assert login(op, "omar", "omar-pass-1").status_code == 401
    assert login(op, "omar", "omar-pass-2").status_code == 303
    token = csrf_of(op, "/runs/sec-cli")
    assert steer(op, "sec-cli", token) == 202

    r = cli(["user", "disable", "omar"], settings)
    assert r.stdout == "user omar disabled; their sessions ended\n"
    assert steer(op, "sec-cli", token) == 401
    bad = login(op, "omar", "omar-pass-2")
    assert bad.status_code == 401 and soup(bad).select_one(".form-error").text == "wrong user name or password"
    assert cli(["user", "list"], settings).stdout.split("\n")[0].split("\t")[3] == "disabled"
    assert cli(["user", "enable", "omar"], settings).returncode == 0

    # Two logins; `user sessions` lists both, `user logout --session` ends one, `user logout` the rest.
    other = client_for()
    assert login(op, "omar", "omar-pass-2").status_code == 303
    assert login(other, "omar", "omar-pass-2").status_code == 303
    rows = [line.split("\t") for line in cli(["user", "sessions", "omar"], settings).stdout.splitlines()]
    assert len(rows) == 2 and {r[1] for r in rows} == {"omar"} and rows[0][5] == "127.0.0.1"
    newest = rows[0][0]
    r = cli(["user", "logout", "omar", "--session", newest], settings)
    assert r.stdout == "1 session of omar ended\n"
    assert steer(other, "sec-cli", csrf_of(other, "/login")) == 401  # `other` logged in last
    token = csrf_of(op, "/runs/sec-cli")
    assert steer(op, "sec-cli", token) == 202
    assert cli(["user", "logout", "omar"], settings).stdout == "1 session of omar ended\n"
    assert steer(op, "sec-cli", token) == 401
    assert cli(["user", "sessions"], settings).stdout == ""
    r = cli(["user", "logout", "nobody"], settings)
    assert r.returncode == 1 and "no user named 'nobody'" in r.stderr
    r = cli(["user", "add", "ev\nil", "--role", "viewer", "--password-stdin"], settings, "long-enough\n")
    assert r.returncode == 1 and "user name 'ev\\nil' contains the control" in r.stderr


def test_secure_cookie_whenever_the_request_is_https(make_server: Callable[..., LiveServer],
                                                     settings: Settings) -> None:
    https = {"X-Forwarded-Proto": "https"}
    direct = make_server(settings)
    # Not behind a trusted proxy: a client cannot claim https (nor another address).
    cookie = direct.client.get("/login", headers=https).headers["set-cookie"]
    assert "steerboard_session=" in cookie and "secure" not in cookie.lower()
    assert "strict-transport-security" not in direct.client.get("/healthz", headers=https).headers

    proxied = make_server(settings.model_copy(update={"forwarded_allow_ips": "127.0.0.1"}))
    r = proxied.client.get("/login", headers=https)
    assert "; secure" in r.headers["set-cookie"].lower()
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    assert "secure" not in proxied.client.get("/login").headers["set-cookie"].lower()


# ---------------------------------------------------------------------------------------------------
# 3. Reads private once a credential exists; invalid bearer tokens refused on every route
# ---------------------------------------------------------------------------------------------------

READS = [
    "/api/runs", "/api/runs/sec-read", "/api/runs/sec-read/series", "/api/runs/sec-read/parts",
    "/api/runs/sec-read/steps", "/api/runs/sec-read/timestamps", "/api/runs/sec-read/evals",
    "/api/runs/sec-read/commands", "/api/runs/sec-read/actions", "/api/runs/sec-read/export.csv?what=commands",
    "/api/runs/sec-read/events", "/api/dead-letters",
]
PAGES = ["/", "/runs/sec-read", "/runs/sec-read/commands", "/runs/sec-read/manage", "/runs/sec-read/delete",
         "/compare?runs=sec-read"]


def test_reads_need_a_viewer_once_a_credential_exists(
    app_server: LiveServer, make_server: Callable[..., LiveServer], rds: redis.Redis, settings: Settings
) -> None:
    start_run(app_server, rds, settings, "sec-read")
    c = app_server.client
    assert c.get("/api/runs/sec-read").status_code == 200  # no credential ever: open, as in dev mode
    viewer = add_token(settings, "dash", "viewer")
    bearer = {"Authorization": f"Bearer {viewer}"}
    for path in READS:
        r = c.get(path)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized"), path
        assert "viewing needs a login" in r.json()["error"]["message"]
    for path in PAGES:
        r = c.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    assert c.get("/runs/sec-read", headers=HX).status_code == 401
    for path in READS[:-2] + PAGES:  # the SSE stream and dead letters below (a stream never ends)
        assert c.get(path, headers=bearer).status_code == 200, path
    with c.stream("GET", "/api/runs/sec-read/events", headers=bearer) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert c.get("/api/dead-letters", headers=bearer).status_code == 200
    # A bearer token that matches nothing is refused everywhere, never taken as anonymous.
    for path in [*READS, *PAGES, "/healthz", "/login"]:
        for header in ("Bearer sb_not-a-token", "Basic dXNlcjpwdw==", "Bearer"):
            r = c.get(path, headers={"Authorization": header, **HX})
            assert r.status_code == 401, (path, header)
    assert c.get("/healthz").status_code == 200 and c.get("/login").status_code == 200

    # STEERBOARD_PUBLIC_READ: anyone views, nobody steers without a login.
    public = make_server(settings.model_copy(update={"public_read": True}))
    for path in READS[:-2] + PAGES:
        assert public.client.get(path).status_code == 200, path
    assert public.client.post("/api/runs/sec-read/commands", json=RELEASE).status_code == 401
    page = soup(public.client.get("/runs/sec-read"))
    assert page.select("form.cmd") == [] and page.select_one(".dev-banner") is None
    assert page.select_one("#no-controls a")["href"] == "/login?next=/runs/sec-read"
    assert "Viewing needs no login" in public.client.get("/login").text


# ---------------------------------------------------------------------------------------------------
# 4. Dev mode: never back on its own
# ---------------------------------------------------------------------------------------------------


def test_revoking_the_last_token_does_not_reopen_dev_mode(app_server: LiveServer, rds: redis.Redis,
                                                          settings: Settings) -> None:
    start_run(app_server, rds, settings, "sec-dev")
    c = app_server.client
    assert c.post("/api/runs/sec-dev/commands", json=RELEASE).status_code == 202  # dev mode: never a credential
    assert soup(c.get("/runs/sec-dev")).select_one(".dev-banner") is not None
    secret = cli(["token", "create", "ci", "--role", "operator"], settings).stdout.strip()
    assert c.post("/api/runs/sec-dev/commands", json=RELEASE).status_code == 401
    assert cli(["token", "revoke", "ci"], settings).stdout == "token ci revoked\n"
    assert c.post("/api/runs/sec-dev/commands", json=RELEASE).status_code == 401
    assert c.post("/api/runs/sec-dev/commands", json=RELEASE,
                  headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert c.get("/api/runs/sec-dev").status_code == 401
    assert c.get("/runs/sec-dev").status_code == 303


def test_dev_mode_setting_banner_and_log_line(make_server: Callable[..., LiveServer], rds: redis.Redis,
                                              settings: Settings, caplog: pytest.LogCaptureFixture,
                                              tmp_path: Path) -> None:
    add_user(settings, "omar", "operator", "omar-pass-1")
    with caplog.at_level(logging.WARNING, logger="server.app"):
        srv = make_server(settings.model_copy(update={"dev_mode": "on"}), ingest=True)
    assert any("local dev mode (STEERBOARD_DEV_MODE=on)" in m for m in caplog.messages)
    start_run(srv, rds, settings, "sec-devon")
    assert srv.client.post("/api/runs/sec-devon/commands", json=RELEASE).status_code == 202
    banner = soup(srv.client.get("/runs/sec-devon")).select_one(".dev-banner")
    assert banner is not None and "STEERBOARD_DEV_MODE=on" in banner.text

    # `off` on a server that never had a credential: nobody steers without one.
    never = f"sqlite:///{tmp_path}/never.db"
    command.upgrade(alembic_config(never), "head")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="server.app"):
        off = make_server(settings.model_copy(update={"dev_mode": "off", "database_url": never}))
    assert not any("dev mode" in m for m in caplog.messages)
    assert off.client.post("/api/runs/sec-devon/commands", json=RELEASE).status_code == 401
    assert soup(off.client.get("/")).select_one(".dev-banner") is None


def test_migration_remembers_existing_credentials(empty_db: str) -> None:
    """A database that had a user before this release keeps dev mode off after the user is removed."""
    cfg = alembic_config(empty_db)
    command.upgrade(cfg, "f7e8d9c0b1a2")
    engine = make_engine(empty_db)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (name, password_hash, role, created_at) "
                              "VALUES ('old', 'x', 'viewer', '2026-11-30 00:00:00')"))
        command.upgrade(cfg, "head")
        with make_sessionmaker(engine)() as session:
            assert users.remove_user(session, "old")
            session.commit()
            assert not users.has_credentials(session) and users.credentials_seen(session)
            s = Settings(database_url=empty_db, _env_file=None)  # type: ignore[call-arg]
            assert not auth.dev_mode(session, s)
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------------------------------
# 5. Security headers, the Host check, any printable run name
# ---------------------------------------------------------------------------------------------------


def test_security_headers_on_every_response(app_server: LiveServer, rds: redis.Redis, settings: Settings) -> None:
    start_run(app_server, rds, settings, "sec-hdr")
    c = app_server.client
    paths = ["/", "/runs/sec-hdr", "/runs/nope", "/login", "/compare?runs=sec-hdr", "/api/runs", "/api/runs/nope",
             "/api/runs/sec-hdr/series?max_points=1", "/healthz", "/static/css/app.css", "/static/nope.js",
             "/openapi.json", "/no-such-page"]
    for path in paths:
        r = c.get(path)
        csp = r.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0], path
        assert (r.headers.get("x-frame-options"), r.headers.get("x-content-type-options"),
                r.headers.get("referrer-policy")) == ("DENY", "nosniff", "same-origin"), path
    with c.stream("GET", "/api/runs/sec-hdr/events") as r:
        assert r.headers["x-frame-options"] == "DENY" and "frame-ancestors" in r.headers["content-security-policy"]
    # No page carries an inline script or event handler (the CSP would block it): scripts are files, data is JSON.
    for path in ["/", "/runs/sec-hdr", "/login", "/compare?runs=sec-hdr", "/runs/sec-hdr/manage",
                 "/runs/sec-hdr/delete", "/runs/nope"]:
        page = soup(c.get(path))
        for s in page.select("script"):
            assert s.get("src") or s.get("type") == "application/json", (path, str(s)[:80])
        handlers = [(t.name, a) for t in page.find_all(True) for a in t.attrs if a.lower().startswith(("on", "hx-on"))]
        assert handlers == [], path
        assert not any(str(a.get("href", "")).lower().startswith("javascript:") for a in page.select("a")), path


def test_host_header_is_checked(make_server: Callable[..., LiveServer], settings: Settings) -> None:
    srv = make_server(settings)
    port = srv.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert srv.client.get("/healthz", headers={"Host": host}).status_code == 200, host
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "", "[::1"):
        r = srv.client.get("/api/runs", headers={"Host": host})
        assert r.status_code == 400 and "Invalid Host header" in r.text, host
        assert r.headers["x-frame-options"] == "DENY"
    more = make_server(settings.model_copy(update={"allowed_hosts": ["steerboard.lab.example"]}))
    assert more.client.get("/healthz", headers={"Host": "steerboard.lab.example"}).status_code == 200
    assert more.client.get("/healthz", headers={"Host": "other.example"}).status_code == 400
    anything = make_server(settings.model_copy(update={"allowed_hosts": ["*"]}))
    assert anything.client.get("/healthz", headers={"Host": "other.example"}).status_code == 200


ODD_NAMES = ["team/exp 1", "a/b/c", "q?x=1#frag", "100% & more+", "ünï/cödé", "ends/with/slash/", "dots..",
             "quote\"'<b>"]


def test_run_names_with_any_printable_character_are_reachable(app_server: LiveServer, rds: redis.Redis,
                                                              settings: Settings) -> None:
    c = app_server.client
    for name in ODD_NAMES:
        xadd(rds, settings, run_start(name, 1, ARMS), step_msg(name, 2, 0, ARMS))
    # Percent-encoded as the pages' scripts do (encodeURIComponent).
    wait_for(lambda: all(c.get(f"/api/runs/{quote(n, safe='')}").status_code == 200 for n in ODD_NAMES))
    table = soup(c.get("/", params={"per_page": 50}))
    links = {a.text: a["href"] for a in table.select("td.run-name a")}
    assert set(links) == set(ODD_NAMES)
    for name in ODD_NAMES:
        q = quote(name, safe="")
        page = c.get(links[name])  # the runs table's own link
        assert page.status_code == 200, name
        assert soup(page).select_one("#run-header h1").contents[0].strip() == name
        for path in (f"/api/runs/{q}", f"/api/runs/{q}/series", f"/api/runs/{q}/steps", f"/api/runs/{q}/commands",
                     f"/api/runs/{q}/export.csv", f"/runs/{q}/manage", f"/runs/{q}/commands"):
            assert c.get(path).status_code == 200, (name, path)
        assert c.get(f"/api/runs/{q}").json()["name"] == name
        r = c.post(f"/api/runs/{q}/commands", json=RELEASE)
        assert r.status_code == 202, (name, r.text)
        assert [x["kind"] for x in c.get(f"/api/runs/{q}/commands").json()] == ["release"]
    # The runs of the names' prefixes do not exist and are not confused with them.
    assert c.get("/api/runs/team").status_code == 404
    assert c.get("/api/runs/a%2Fb").status_code == 404
