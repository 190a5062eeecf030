"""`steerboard demo`: the server, its ingest worker and real GRPO runs on CPU, side by side.

The trainers are separate processes (`python -m trainer_agent.demo`), so this module, like the
rest of the server, never imports torch. It brings up, on one machine:
- Redis: the configured one, or a private `redis-server` when none answers;
- the database: by default the SQLite file every `steerboard` command reads (steerboard.db in the data
  directory, ./steerboard-data/ or STEERBOARD_DATA_DIR), migrated to the current schema;
- the web server with an in-process ingest worker, on 127.0.0.1;
- one trainer per (scheduler, seed), streaming through the curriculum agent.
It shows a progress bar per run (read from the server's own database), and when training ends
keeps serving until Ctrl-C (or exits with --exit-when-done). Ctrl-C during training stops the
trainers cleanly (each sends `run_end`), waits until ingest has committed everything, then exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from server.settings import Settings

log = logging.getLogger("steerboard.demo")


@dataclass
class Trainer:
    run: str
    scheduler: str
    seed: int
    proc: subprocess.Popen[bytes]
    log_path: Path


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _redis(url: str, data_dir: Path) -> Iterator[str]:
    """The configured Redis if it answers, else a private redis-server for the demo's lifetime."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.ping()
        yield url
        return
    except redis.RedisError:
        pass
    finally:
        client.close()
    exe = shutil.which("redis-server")
    if exe is None:
        raise click.ClickException(f"Redis at {url} does not answer and redis-server is not installed; "
                                   "start Redis or set STEERBOARD_REDIS_URL")
    port = _free_port()
    click.echo(f"Redis at {url} does not answer; starting a private redis-server on 127.0.0.1:{port}")
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    private = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while True:
            c = redis.Redis.from_url(private, socket_connect_timeout=0.5)
            try:
                c.ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise click.ClickException("the private redis-server did not start") from None
                time.sleep(0.1)
            finally:
                c.close()
        yield private
    finally:
        proc.terminate()
        proc.wait(10)


class _Server:
    """uvicorn serving the app (with its ingest worker) in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from server.app import create_app

        app = create_app(settings, ingest=True)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", lifespan="on",
                                proxy_headers=False)
        self.server = uvicorn.Server(config)
        # uvicorn installs signal handlers only in the main thread: Ctrl-C stays the demo's, which
        # stops the server itself once ingest has drained.
        self.thread = threading.Thread(target=self.server.run, name="steerboard-web", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise click.ClickException("the web server did not start (see the log above)")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def _pending(settings: Settings) -> int:
    """Ingest entries not yet committed: in the stream but not delivered, or delivered, not acked."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        groups = client.xinfo_groups(settings.keys.ingest)
    except redis.ResponseError:
        return 0
    finally:
        client.close()
    total = 0
    for g in groups:
        if g["name"] in (settings.ingest_group, settings.ingest_group.encode()):
            total += int(g.get("pending") or 0) + int(g.get("lag") or 0)
    return total


def _drain(settings: Settings, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    left = _pending(settings)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _pending(settings)
    return left


def _last_steps(engine: Any, runs: Sequence[str]) -> dict[str, int]:
    from sqlalchemy.orm import Session

    from server.store import runs as run_store

    with Session(engine) as session:
        return run_store.last_steps(session, runs)


def run_demo(settings: Settings, schedulers: Sequence[str], runs_per_scheduler: int, steps: int, seed: int,
             exit_when_done: bool, data_dir: Path, trainer_args: Sequence[str] = ()) -> int:
    """Run the whole demo; returns the process exit status."""
    from alembic import command
    from sqlalchemy.engine import make_url
    from tqdm import tqdm

    from server.db import alembic_config, make_engine

    data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.database_url), "head")
    if not _port_free(settings.host, settings.port):
        port = _free_port(settings.host)
        click.echo(f"port {settings.port} is taken; serving on {port} instead")
        settings = settings.model_copy(update={"port": port})
    stamp = time.strftime("%m%d-%H%M%S")
    with _redis(settings.redis_url, data_dir) as redis_url:
        settings = settings.model_copy(update={"redis_url": redis_url})
        server = _Server(settings)
        server.start()
        url = f"http://{settings.host}:{settings.port}"
        engine = make_engine(settings.database_url)
        trainers: list[Trainer] = []
        interrupted = False
        threads = max(1, (os.cpu_count() or 2) // max(1, len(schedulers) * runs_per_scheduler))
        try:
            for sched in schedulers:
                for k in range(runs_per_scheduler):
                    name = f"{sched}-s{seed + k}-{stamp}"
                    log_path = data_dir / "logs" / f"{name}.log"
                    log_path.parent.mkdir(parents=True, exist_ok=True)
                    cmd = [sys.executable, "-m", "trainer_agent.demo", "--run", name, "--scheduler", sched,
                           "--steps", str(steps), "--seed", str(seed + k), "--redis-url", redis_url,
                           "--key-prefix", settings.key_prefix, "--threads", str(threads), "--no-progress",
                           "--warmup-cache", str(data_dir / "warmup-cache"), *trainer_args]
                    with log_path.open("wb") as out:
                        # Own process group: Ctrl-C reaches the demo only, which then stops each
                        # trainer cleanly itself.
                        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
                    trainers.append(Trainer(name, sched, seed + k, proc, log_path))
            names = [t.run for t in trainers]
            click.echo(f"\nSteerboard is serving at {url}")
            click.echo(f"  runs:    {url}/")
            click.echo(f"  compare: {url}/compare?runs={','.join(names)}")
            click.echo(f"  database: {make_url(settings.database_url).render_as_string(hide_password=True)}")
            click.echo(f"training {len(trainers)} runs of {steps} steps on CPU (logs in {data_dir / 'logs'}); "
                       "Ctrl-C stops cleanly\n")
            bars = {t.run: tqdm(total=steps, desc=f"{t.run:<28}", position=i, unit="step", leave=True,
                                dynamic_ncols=True) for i, t in enumerate(trainers)}
            while any(t.proc.poll() is None for t in trainers):
                done = _last_steps(engine, names)
                for t in trainers:
                    bars[t.run].n = min(steps, done.get(t.run, -1) + 1)
                    bars[t.run].refresh()
                time.sleep(1.0)
            _drain(settings)
            done = _last_steps(engine, names)
            for t in trainers:
                bars[t.run].n = min(steps, done.get(t.run, -1) + 1)
                bars[t.run].close()
        except KeyboardInterrupt:
            interrupted = True
            click.echo("\nstopping the trainers (each sends its last steps and run_end) ...")
            for t in trainers:
                if t.proc.poll() is None:
                    t.proc.send_signal(signal.SIGINT)
            for t in trainers:
                try:
                    t.proc.wait(60)
                except subprocess.TimeoutExpired:
                    click.echo(f"{t.run} did not stop within 60 s; killing it")
                    t.proc.kill()
            left = _drain(settings)
            click.echo("everything the trainers sent is stored" if not left else
                       f"{left} ingest entries still pending; they stay in Redis for the next worker")
        failed = [t for t in trainers if t.proc.returncode not in (0, 130, -signal.SIGINT)]
        for t in failed:
            tail = t.log_path.read_text(errors="replace").splitlines()[-15:]
            click.echo(f"\n{t.run} exited with status {t.proc.returncode}; last lines of {t.log_path}:\n"
                       + "\n".join(tail), err=True)
        if not interrupted:
            click.echo(f"\ntraining done. Runs page: {url}/   compare: {url}/compare?runs={','.join(names)}")
            if not exit_when_done:
                click.echo("still serving; Ctrl-C to stop")
                try:
                    while True:
                        time.sleep(1.0)
                except KeyboardInterrupt:
                    pass
        engine.dispose()
        server.stop()
    return 1 if failed else 0
