"""The `steerboard` command line."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from server.errors import SchemaOutOfDate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="steerboard")
def main() -> None:
    """Steerboard: see and steer the data curriculum of GRPO-style RL post-training."""


# ---------------------------------------------------------------------------------------------------
# Helpers shared by the server commands
# ---------------------------------------------------------------------------------------------------


def default_data_dir() -> Path:
    """The data directory: `steerboard demo` keeps its files there and every command's default SQLite
    database is its steerboard.db, so the demo's runs are what `serve` and `user add` see."""
    return Path(os.environ.get("STEERBOARD_DATA_DIR") or "steerboard-data")


def _settings(data: Path | None = None, **overrides: Any) -> Any:
    """The settings; without a database URL (option, STEERBOARD_DATABASE_URL or .env), the SQLite
    database in `data` (default: default_data_dir())."""
    from pydantic import ValidationError

    from server.settings import Settings

    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        raise click.ClickException(f"invalid settings: {e}") from e
    if "database_url" not in settings.model_fields_set:
        database = (data or default_data_dir()) / "steerboard.db"
        settings = settings.model_copy(update={"database_url": f"sqlite:///{database}"})
    return settings


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def _friendly_errors(settings: Any) -> Iterator[None]:
    """Turn the failures a person can fix (schema, unreachable services) into one clear line."""
    import redis
    from sqlalchemy.exc import DBAPIError, NoSuchModuleError

    try:
        yield
    except SchemaOutOfDate as e:
        raise click.ClickException(e.message) from e
    except (DBAPIError, NoSuchModuleError) as e:
        first = str(getattr(e, "orig", e) or e).strip().splitlines()[0]
        raise click.ClickException(
            f"cannot use the database at {_safe_url(settings.database_url)}: {first}"
        ) from e
    except redis.RedisError as e:
        raise click.ClickException(f"cannot reach Redis at {settings.redis_url}: {e}") from e


def _preflight(settings: Any) -> Any:
    """Check SQL (reachable, schema current) and Redis before starting; return the engine."""
    from server.db import make_engine, require_current_schema
    from server.redis_clients import sync_client

    engine = make_engine(settings.database_url)
    require_current_schema(engine, settings.database_url)
    client = sync_client(settings.redis_url, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()
    return engine


# ---------------------------------------------------------------------------------------------------
# steerboard db ...
# ---------------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(database_url: str | None, revision: str) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from alembic import command

    from server.db import alembic_config

    settings = _settings(database_url=database_url)
    _logging(settings.log_level)
    with _friendly_errors(settings):
        command.upgrade(alembic_config(settings.database_url), revision)
    click.echo(f"database at {_safe_url(settings.database_url)} is at {revision}")


@db.command("prune")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--older-than-days", type=float, help="default: STEERBOARD_RETENTION_RAW_DAYS")
@click.option("--dry-run", is_flag=True, help="say what would be dropped, drop nothing")
def db_prune(database_url: str | None, older_than_days: float | None, dry_run: bool) -> None:
    """Drop the raw per-arm rows of runs that ended more than N days ago; their charts read the rollups."""
    from server.store.retention import prune_raw

    settings = _settings(database_url=database_url)
    _logging(settings.log_level)
    days = older_than_days if older_than_days is not None else settings.retention_raw_days
    if days is None or days <= 0:
        raise click.UsageError("give --older-than-days N (> 0) or set STEERBOARD_RETENTION_RAW_DAYS")
    from server.db import make_engine, require_current_schema

    with _friendly_errors(settings):
        engine = make_engine(settings.database_url)
        try:
            require_current_schema(engine, settings.database_url)
            done = prune_raw(engine, days, dry_run=dry_run)
        finally:
            engine.dispose()
    verb = "would drop" if dry_run else "dropped"
    for p in done:
        click.echo(f"{p.run}: {verb} {p.rows} raw arm rows")
    click.echo(f"{len(done)} run(s) ended more than {days:g} days ago; {verb} {sum(p.rows for p in done)} raw arm rows")


@db.command("current")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def db_current(database_url: str | None) -> None:
    """Show the schema revision of the database and the one this version needs."""
    from server.db import current_revision, head_revision, make_engine, sqlite_file

    settings = _settings(database_url=database_url)
    path = sqlite_file(settings.database_url)
    current = None
    if path is None or path.exists():  # connecting would create a missing SQLite file
        with _friendly_errors(settings):
            engine = make_engine(settings.database_url)
            try:
                current = current_revision(engine)
            finally:
                engine.dispose()
    head = head_revision(settings.database_url)
    state = "up to date" if current == head else "out of date: run `steerboard db upgrade`"
    if path is not None and not path.exists():
        state += f" (no database file at {path.absolute()} yet)"
    click.echo(f"current: {current or '(empty)'}\nhead:    {head}\n{state}")


# ---------------------------------------------------------------------------------------------------
# steerboard user ... / token ...  (auth; the first user or token ends local dev mode)
# ---------------------------------------------------------------------------------------------------


@contextmanager
def _auth_session(database_url: str | None, settings: Any = None) -> Iterator[Any]:
    """A session on a current schema, with ServerErrors shown as one line."""
    from server.db import make_engine, make_sessionmaker, require_current_schema
    from server.errors import ServerError

    settings = settings or _settings(database_url=database_url)
    with _friendly_errors(settings):
        engine = make_engine(settings.database_url)
        try:
            require_current_schema(engine, settings.database_url)
            with make_sessionmaker(engine)() as session:
                try:
                    yield session
                    session.commit()
                except ServerError as e:
                    raise click.ClickException(e.message) from e
        finally:
            engine.dispose()


_ROLE = click.Choice(["viewer", "operator"])


@main.group()
def user() -> None:
    """People who log in to the pages (viewers look; operators also steer)."""


@user.command("add")
@click.argument("name")
@click.option("--role", type=_ROLE, required=True, help="viewer: look only; operator: look and steer")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin instead of prompting")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_add(name: str, role: str, password_stdin: bool, database_url: str | None) -> None:
    """Add a user (the password is asked for, or read from stdin)."""
    from server import auth
    from server.store import users

    password = _read_password(password_stdin, "Password")
    with _auth_session(database_url) as session:
        users.add_user(session, auth.check_name(name, "user"), auth.hash_password(password), auth.check_role(role))
    click.echo(f"user {name} added ({role})")


@user.command("list")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_list(database_url: str | None) -> None:
    """List users: name, role, created, and `disabled` for disabled ones."""
    from server.store import users

    with _auth_session(database_url) as session:
        for u in users.list_users(session):
            click.echo(f"{u.name}\t{u.role}\t{u.created_at:%Y-%m-%d}" + ("\tdisabled" if u.disabled_at else ""))


def _no_user(name: str) -> click.ClickException:
    return click.ClickException(f"no user named {name!r}")


@user.command("remove")
@click.argument("name")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_remove(name: str, database_url: str | None) -> None:
    """Remove a user (their sessions end at once)."""
    from server.store import users

    _change_user(database_url, name, lambda s: users.remove_user(s, name), f"user {name} removed")


def _read_password(from_stdin: bool, prompt: str) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


def _change_user(database_url: str | None, name: str, change: Callable[[Any], bool], done: str) -> None:
    """Apply `change` (a store call answering whether the user exists) and say `done`."""
    with _auth_session(database_url) as session:
        if not change(session):
            raise _no_user(name)
    click.echo(done)


@user.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="read the password from stdin instead of prompting")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_passwd(name: str, password_stdin: bool, database_url: str | None) -> None:
    """Set a user's password; every session of theirs ends."""
    from server import auth
    from server.store import users

    digest = auth.hash_password(_read_password(password_stdin, "New password"))
    _change_user(database_url, name, lambda s: users.set_password(s, name, digest),
                 f"password of {name} changed; their sessions ended")


@user.command("role")
@click.argument("name")
@click.argument("role", type=_ROLE)
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_role(name: str, role: str, database_url: str | None) -> None:
    """Change a user's role (effective at their next request)."""
    from server import auth
    from server.store import users

    _change_user(database_url, name, lambda s: users.set_role(s, name, auth.check_role(role)),
                 f"user {name} is now {role}")


@user.command("disable")
@click.argument("name")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_disable(name: str, database_url: str | None) -> None:
    """Stop a user logging in; every session of theirs ends (`enable` undoes it)."""
    from server.store import users

    _change_user(database_url, name, lambda s: users.set_disabled(s, name, True),
                 f"user {name} disabled; their sessions ended")


@user.command("enable")
@click.argument("name")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_enable(name: str, database_url: str | None) -> None:
    """Let a disabled user log in again."""
    from server.store import users

    _change_user(database_url, name, lambda s: users.set_disabled(s, name, False), f"user {name} enabled")


@user.command("sessions")
@click.argument("name", required=False)
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_sessions(name: str | None, database_url: str | None) -> None:
    """Live logins, newest first: id, user, started, last seen, expires, address, browser (tab-separated)."""
    from server.logsafe import printable
    from server.store import users

    with _auth_session(database_url) as session:
        for r in users.list_sessions(session, name):
            click.echo("\t".join([
                str(r.id), r.user, f"{r.created_at:%Y-%m-%d %H:%M}", f"{r.last_seen_at:%Y-%m-%d %H:%M}",
                f"{r.expires_at:%Y-%m-%d %H:%M}", printable(r.address or ""), printable(r.user_agent or "", 80),
            ]))


@user.command("logout")
@click.argument("name")
@click.option("--session", "session_id", type=int, help="only this session (an id from `steerboard user sessions`)")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def user_logout(name: str, session_id: int | None, database_url: str | None) -> None:
    """End a user's sessions (all of them, or one): their cookies stop working at once."""
    from server.store import users

    with _auth_session(database_url) as session:
        if users.get_user(session, name) is None:
            raise _no_user(name)
        n = users.end_user_sessions(session, name, session_id)
        if session_id is not None and n == 0:
            raise click.ClickException(f"{name} has no session {session_id}")
    click.echo(f"{n} session{'s' if n != 1 else ''} of {name} ended")


@main.group()
def token() -> None:
    """Bearer tokens for scripts (Authorization: Bearer <token>)."""


@token.command("create")
@click.argument("name")
@click.option("--role", type=_ROLE, required=True, help="viewer or operator")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def token_create(name: str, role: str, database_url: str | None) -> None:
    """Create a token and print it once (only its hash is stored)."""
    from server import auth
    from server.store import users

    secret, digest = auth.new_token()
    with _auth_session(database_url) as session:
        users.add_token(session, auth.check_name(name, "token"), digest, auth.check_role(role))
    click.echo(secret)


@token.command("list")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def token_list(database_url: str | None) -> None:
    """List token names and roles (the tokens themselves are not stored)."""
    from server.store import users

    with _auth_session(database_url) as session:
        for t in users.list_tokens(session):
            click.echo(f"{t.name}\t{t.role}\t{t.created_at:%Y-%m-%d}")


@token.command("revoke")
@click.argument("name")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def token_revoke(name: str, database_url: str | None) -> None:
    """Revoke a token (at once). Revoking the last credential does not turn local dev mode back on."""
    from server.store import users

    with _auth_session(database_url) as session:
        if not users.remove_token(session, name):
            raise click.ClickException(f"no token named {name!r}")
    click.echo(f"token {name} revoked")


# ---------------------------------------------------------------------------------------------------
# steerboard runs ...
# ---------------------------------------------------------------------------------------------------


@main.group()
def runs() -> None:
    """The runs in the database: list them, delete one."""


@runs.command("list")
@click.option("--project", help="only this project's runs")
@click.option("--status", help="running, stale, finished, failed or interrupted")
@click.option("--tag", help="only runs with this tag")
@click.option("--archived", type=click.Choice(["hide", "only", "all"]), default="all", show_default=True)
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def runs_list(project: str | None, status: str | None, tag: str | None, archived: str,
              database_url: str | None) -> None:
    """Runs, newest first: name, status, project, scheduler, steps, tags, archived (tab-separated)."""
    from server.store import runs_table

    settings = _settings(database_url=database_url)
    with _auth_session(database_url, settings) as session:
        page = 1
        while True:
            query = runs_table.RunsQuery(status=status, project=project, tag=tag, archived=archived, page=page,
                                         per_page=500)
            got = runs_table.runs_table(session, settings.stale_seconds, query)
            for r in got.rows:
                tags = ",".join(t.tag for t in r.tags)
                click.echo("\t".join([r.name, r.shown_status, r.project, r.scheduler, str(r.steps), tags,
                                      "archived" if r.archived_at else ""]))
            if page >= got.pages:
                break
            page += 1


@runs.command("compare")
@click.argument("names", nargs=-1, required=True)
@click.option("--metric", default="", help="eval:NAME (default: the runs' evaluation), train_mean or train_weighted")
@click.option("--target", default="", help="the target of 'steps to target' (default 0.8)")
@click.option("--smoothing", default="", help="EMA weight in [0, 0.99], as on the pages (default 0)")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
def runs_compare(names: tuple[str, ...], metric: str, target: str, smoothing: str, database_url: str | None) -> None:
    """Rank runs as the compare page does: final and best value of the metric, steps to the target."""
    from server import compare
    from server.errors import InvalidRequest

    settings = _settings(database_url=database_url)
    with _auth_session(database_url, settings) as session:
        try:
            got = compare.compare(session, compare.parse_query(list(names), metric, "", target, smoothing),
                                  settings.stale_seconds)
        except InvalidRequest as e:
            fields = (e.details or {}).get("fields") or {}
            raise click.ClickException("; ".join(fields.values()) or e.message) from None

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    click.echo(f"{got.metric_label}; target {got.target:g}, smoothing {got.smoothing:g}")
    rows = [("rank", "run", "final", "best", f"steps to {got.target:g}", "points")]
    rows += [(str(r.rank), r.run, fmt(r.final), fmt(r.best),
              "-" if r.steps_to_target is None else str(r.steps_to_target), str(r.points)) for r in got.ranking]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:  # names left-aligned, figures right-aligned
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        click.echo("  ".join(cells))


@runs.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--redis-url", help="defaults to STEERBOARD_REDIS_URL")
def runs_delete(name: str, yes: bool, database_url: str | None, redis_url: str | None) -> None:
    """Delete a run: every row of it in the database and its Redis keys (audited)."""
    from server import managing
    from server.redis_clients import sync_client
    from server.store import manage

    settings = _settings(database_url=database_url, redis_url=redis_url)
    with _auth_session(database_url, settings) as session:
        preview = manage.deletion_preview(session, name, settings.stale_seconds)
        what = ", ".join(f"{n} {label}" for label, n in preview.rows.items())
        click.echo(f"run {name} ({preview.status}, {preview.last_step + 1} steps): {what}; and its Redis keys")
        if preview.status in ("running", "stale"):
            click.echo(f"warning: run {name} is {preview.status}; if its trainer keeps sending, the run comes back "
                       "from its next message (without this history)", err=True)
        if not yes:
            click.confirm(f"Delete run {name} for good?", abort=True)
        client = sync_client(settings.redis_url, socket_connect_timeout=5)
        try:
            with _friendly_errors(settings):
                actor = f"cli:{os.environ.get('USER') or os.environ.get('USERNAME') or 'unknown'}"
                gone = managing.delete_run(session, client, settings, name, actor)
        finally:
            client.close()
    click.echo(f"run {name} deleted ({sum(gone.rows.values())} rows, {gone.redis_keys} Redis keys)")


# ---------------------------------------------------------------------------------------------------
# steerboard serve / worker
# ---------------------------------------------------------------------------------------------------


@main.command()
@click.option("--host", help="bind address (default 127.0.0.1; STEERBOARD_HOST)")
@click.option("--port", type=int, help="port (default 8000; STEERBOARD_PORT)")
@click.option("--no-ingest", is_flag=True, help="web only: run no ingest worker in this process")
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--redis-url", help="defaults to STEERBOARD_REDIS_URL")
def serve(
    host: str | None, port: int | None, no_ingest: bool, database_url: str | None, redis_url: str | None
) -> None:
    """Run the web server (JSON API, SSE) with an in-process ingest worker."""
    import uvicorn

    from server.app import create_app

    settings = _settings(host=host, port=port, database_url=database_url, redis_url=redis_url)
    _logging(settings.log_level)
    with _friendly_errors(settings):
        _preflight(settings).dispose()
    app = create_app(settings, ingest=not no_ingest)
    # Forwarded headers are the app's (STEERBOARD_FORWARDED_ALLOW_IPS), not uvicorn's default trust of 127.0.0.1.
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                proxy_headers=False)


@main.command()
@click.option("--database-url", help="defaults to STEERBOARD_DATABASE_URL")
@click.option("--redis-url", help="defaults to STEERBOARD_REDIS_URL")
def worker(database_url: str | None, redis_url: str | None) -> None:
    """Run one ingest worker (Redis stream to SQL). Start several to share the load."""
    from server.ingest import IngestWorker
    from server.redis_clients import sync_client

    settings = _settings(database_url=database_url, redis_url=redis_url)
    _logging(settings.log_level)
    with _friendly_errors(settings):
        engine = _preflight(settings)
        client = sync_client(settings.redis_url, decode_responses=False)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            IngestWorker(settings, engine, client).run(stop)
        finally:
            client.close()
            engine.dispose()


# ---------------------------------------------------------------------------------------------------
# steerboard demo / simulate
# ---------------------------------------------------------------------------------------------------


@main.command()
@click.option("--steps", type=int, default=250, show_default=True, help="RL steps per run")
@click.option("--scheduler", "schedulers", default="dump,uniform", show_default=True,
              help="comma-separated schedulers, one run each (uniform, fixed, dump, sec, learning_progress, balanced)")
@click.option("--runs", "runs_per_scheduler", type=int, default=1, show_default=True,
              help="runs per scheduler, with seeds seed, seed+1, ...")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--port", type=int, help="port (default 8000, or a free one when taken)")
@click.option("--database-url", help="default: sqlite under the data dir")
@click.option("--redis-url", help="defaults to STEERBOARD_REDIS_URL; a private redis-server if none answers")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="where the demo keeps its database (steerboard.db, which the other commands read too), logs "
                   "and warm-up cache [default: STEERBOARD_DATA_DIR or ./steerboard-data]")
@click.option("--exit-when-done", is_flag=True, help="stop serving when training ends")
@click.option("--trainer-arg", "trainer_args", multiple=True, hidden=True,
              help="passed to `python -m trainer_agent.demo` (e.g. --trainer-arg=--warmup-steps=50)")
def demo(steps: int, schedulers: str, runs_per_scheduler: int, seed: int, port: int | None,
         database_url: str | None, redis_url: str | None, data_dir: Path | None, exit_when_done: bool,
         trainer_args: tuple[str, ...]) -> None:
    """Server, ingest and real small GRPO runs on CPU, side by side (2-5 minutes on 2 cores)."""
    from server.demo import run_demo

    names = [s.strip() for s in schedulers.split(",") if s.strip()]
    from trainer_agent import available_schedulers  # numpy only: no torch in the server

    known = set(available_schedulers())
    bad = [s for s in names if s not in known]
    if not names or bad:
        raise click.BadParameter(f"unknown scheduler(s) {bad}; choose from {', '.join(sorted(known))}",
                                 param_hint="--scheduler")
    if steps < 1 or runs_per_scheduler < 1:
        raise click.BadParameter("--steps and --runs must be >= 1")
    data = (data_dir or default_data_dir()).absolute()
    settings = _settings(data, port=port, database_url=database_url, redis_url=redis_url)
    _logging("WARNING")
    with _friendly_errors(settings):
        code = run_demo(settings, names, runs_per_scheduler, steps, seed, exit_when_done, data, trainer_args)
    sys.exit(code)


@main.command()
@click.option("--scheduler", default="dump", show_default=True)
@click.option("--steps", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def simulate(scheduler: str, steps: int, seed: int) -> None:
    """A curriculum simulation without a model or server: probabilities per arm as a table."""
    from trainer_agent.simulate import main as simulate_main

    sys.exit(simulate_main(["--scheduler", scheduler, "--steps", str(steps), "--seed", str(seed)]))
