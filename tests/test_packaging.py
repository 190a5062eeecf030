"""The package as users install it: the sdist and the wheel built from this tree, installed into a fresh venv.

A bare install (no extras) runs the agent offline with no server dependency installed or imported; with
the server extra added, `steerboard db upgrade` and `steerboard serve` work from an empty directory, and
the pages and every script and stylesheet they reference answer 200 (templates, static files, vendor
JavaScript and migrations all come from the installed package).

The fresh venv is cheap: it has no pip of its own (this interpreter's pip installs into it with --python),
and the dependencies come from a wheelhouse kept in pytest's cache, filled by `pip download` the first
time (or when a dependency changes) and installed from offline (--no-index).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.conftest import REDIS_URL, free_port

ROOT = Path(__file__).resolve().parents[1]
# What the server reads at run time, as the wheel carries it (setup.py).
WHEEL_NEEDS = [
    "server/alembic.ini", "server/migrations/env.py", "server/migrations/script.py.mako",
    "server/templates/base.html", "server/static/css/app.css", "server/static/vendor/htmx.min.js",
    "server/static/vendor/htmx-ext-sse.min.js", "server/static/vendor/plotly-basic.min.js",
    "server/static/vendor/swagger-ui-bundle.js", "server/static/vendor/swagger-ui.css",
]


def _run(cmd: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=240, **kwargs)


def _check(cmd: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    res = _run(cmd, **kwargs)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{res.stdout}\n{res.stderr}"
    return res


def _source_copy(dest: Path) -> Path:
    """The working tree as git sees it (tracked and new files, not ignored ones) plus static/vendor/ when
    `make assets` built it: a build here must not write build/ and egg-info into the shared tree."""
    listed = _check(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT).stdout
    names = [n for n in listed.split("\0") if n]
    vendor = ROOT / "static" / "vendor"
    if vendor.is_dir():
        names += [str(p.relative_to(ROOT)) for p in vendor.iterdir() if p.is_file()]
    for name in names:
        src = ROOT / name
        if src.is_file():  # a file deleted in the working tree is still listed until the deletion is staged
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel) built as `python -m build` builds them: the sdist, then the wheel from the sdist."""
    src = _source_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: this venv's setuptools (the build requirement) instead of a download per run.
    _check([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src])
    (sdist,) = out.glob("steerboard-*.tar.gz")
    (wheel,) = out.glob("steerboard-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def wheelhouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = getattr(request.config, "cache", None)
    return Path(cache.mkdir("steerboard-wheelhouse")) if cache is not None else tmp_path_factory.mktemp("wheels")


def _install(python: Path, wheelhouse: Path, requirement: str) -> None:
    """pip install `requirement` into the venv of `python` from the wheelhouse, downloading into it first
    when something is missing there."""
    base = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--disable-pip-version-check"]
    offline = [*base, "--no-index", "--find-links", wheelhouse, requirement]
    if _run(offline).returncode != 0:
        _check([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--dest", wheelhouse,
                requirement])
        for stale in wheelhouse.glob("steerboard-*"):  # the package itself always comes from this build
            stale.unlink()
        _check(offline)


@dataclass
class Venv:
    dir: Path

    @property
    def python(self) -> Path:
        return self.dir / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.dir / "bin" / name


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Steerboard settings or an import path that could reach the
    repository: what the installed package finds, it finds on its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERBOARD_") and k != "PYTHONPATH"}
    return env | extra


AGENT = """
import importlib.metadata, importlib.util, json, sys
from trainer_agent import CurriculumAgent

run, redis_url, prefix, spool = sys.argv[1:5]
with CurriculumAgent(run=run, arms=["easy", "hard"], scheduler="dump", redis_url=None if redis_url == "none" else
                     redis_url, key_prefix=prefix, seed=0, spool_dir=spool) as agent:
    for step in range(3):
        arms = agent.sample(4)
        agent.observe([a for a in arms for _ in range(2)], [1.0, 0.0] * 4, groups=[i // 2 for i in range(8)])
        agent.end_step(metrics={"loss": 1.0 / (step + 1)})
    probabilities = agent.probabilities()
print(json.dumps({
    "step": agent.step,
    "probabilities": probabilities,
    "imported": sorted(m for m in ("fastapi", "sqlalchemy", "torch", "starlette", "alembic") if m in sys.modules),
    "installed": sorted(m for m in ("fastapi", "sqlalchemy", "torch") if importlib.util.find_spec(m) is not None),
    "distributions": sorted({d.metadata["Name"].lower() for d in importlib.metadata.distributions()}),
}))
"""


@pytest.fixture
def venv(tmp_path: Path) -> Venv:
    # No --system-site-packages: a dependency the package forgot to declare must fail here.
    _check([sys.executable, "-m", "venv", "--without-pip", tmp_path / "venv"])
    return Venv(tmp_path / "venv")


def test_sdist_and_wheel_carry_what_the_server_reads(dists: tuple[Path, Path]) -> None:
    sdist, wheel = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [n for n in WHEEL_NEEDS if n not in names] == []
    assert {n for n in names if n.startswith("server/migrations/versions/") and n.endswith(".py")} == {
        f"server/migrations/versions/{p.name}" for p in (ROOT / "migrations" / "versions").glob("*.py")}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    with tarfile.open(sdist) as tar:
        top = f"{sdist.name.removesuffix('.tar.gz')}/"
        members = {m.name.removeprefix(top) for m in tar.getmembers()}
    assert {"static/vendor/htmx.min.js", "static/vendor/plotly-basic.min.js", "templates/base.html",
            "migrations/env.py", "alembic.ini", "package-lock.json", "setup.py"} <= members


@dataclass
class Server:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def served() -> Iterator[list[Server]]:
    """Holds the server the test starts, and stops it afterwards."""
    servers: list[Server] = []
    yield servers
    for s in servers:
        s.proc.terminate()
        try:
            s.proc.wait(15)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(5)


def _referenced_assets(client: httpx.Client, page: str) -> list[str]:
    """Every script and stylesheet the page at `page` references (site-relative URLs)."""
    r = client.get(page)
    assert r.status_code == 200, (page, r.status_code, r.text[:500])
    soup = BeautifulSoup(r.text, "html.parser")
    urls = [urljoin(page, s["src"]) for s in soup.find_all("script", src=True)]
    urls += [urljoin(page, link["href"]) for link in soup.find_all("link", href=True)
             if {"stylesheet", "modulepreload", "preload"} & set(link.get("rel") or [])]
    return urls


IMPORT = re.compile(r"""(?:\bimport|\bfrom)\s*\(?\s*["'](\.{1,2}/[^"']+)["']""")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_installed_wheel_runs_the_agent_bare_and_the_server_with_its_extra(
    dists: tuple[Path, Path], wheelhouse: Path, venv: Venv, tmp_path: Path, key_prefix: str,
    served: list[Server],
) -> None:
    _, wheel = dists
    work = tmp_path / "work"  # an empty directory: nothing found through the working directory
    work.mkdir()

    # `pip install steerboard`: numpy and redis; the agent runs offline and loads no server part.
    _install(venv.python, wheelhouse, str(wheel))
    agent = [venv.python, "-c", AGENT]
    res = _check([*agent, "pkg-offline", "none", key_prefix, tmp_path / "spool"], cwd=work, env=_clean_env())
    offline = json.loads(res.stdout)
    assert offline["step"] == 3 and sorted(offline["probabilities"]) == ["easy", "hard"]
    assert offline["imported"] == [] and offline["installed"] == []
    # numpy and redis, and what redis itself needs on this Python
    bare = {"numpy", "redis", "steerboard"} | ({"async-timeout"} if sys.version_info < (3, 11, 3) else set())
    assert offline["distributions"] == sorted(bare)

    # `pip install "steerboard[server]"`, then the README's server commands from the empty directory.
    _install(venv.python, wheelhouse, f"{wheel}[server]")
    where = _check([venv.python, "-c", "import server.web as w; print(w.__file__); print(w.TEMPLATES_DIR)"],
                   cwd=work, env=_clean_env()).stdout.split()
    site = str(venv.dir / "lib")
    assert all(p.startswith(site) for p in where), where
    env = _clean_env(STEERBOARD_REDIS_URL=REDIS_URL, STEERBOARD_KEY_PREFIX=key_prefix,
                     STEERBOARD_INGEST_BLOCK_MS="50")
    assert "no database file" in _check([venv.bin("steerboard"), "db", "current"], cwd=work, env=env).stdout
    assert list(work.iterdir()) == []  # a command that only reads creates no empty database
    _check([venv.bin("steerboard"), "db", "upgrade"], cwd=work, env=env)
    assert (work / "steerboard-data" / "steerboard.db").is_file()

    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([venv.bin("steerboard"), "serve", "--port", str(port)], cwd=work, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    served.append(server)

    run = "pkg-served"
    _check([*agent, run, REDIS_URL, key_prefix, tmp_path / "spool"], cwd=work, env=_clean_env())
    with httpx.Client(base_url=server.base, timeout=10) as client:
        deadline = time.monotonic() + 60
        runs: dict[str, dict[str, object]] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")
            try:
                runs = {r["name"]: r for r in client.get("/api/runs").json()}
            except httpx.HTTPError:
                runs = {}
            if runs.get(run, {}).get("last_step") == 2:
                break
            time.sleep(0.2)
        assert runs.get(run, {}).get("last_step") == 2, (runs, log.read_text(errors="replace"))

        assets: set[str] = set()
        for page in ("/", f"/runs/{run}", f"/compare?runs={run}", "/login", "/docs"):
            assets.update(_referenced_assets(client, page))
        assert all(a.startswith("/static/") for a in assets), assets  # served here, no CDN
        seen: set[str] = set()
        while assets - seen:
            url = min(assets - seen)
            seen.add(url)
            r = client.get(url)
            assert r.status_code == 200 and r.content, (url, r.status_code)
            if url.startswith("/static/js/"):
                assets.update(urljoin(url, m) for m in IMPORT.findall(r.text))
    vendor = {u.rsplit("/", 1)[1] for u in seen if u.startswith("/static/vendor/")}
    assert "htmx.min.js" in vendor and any(v.startswith("plotly-") for v in vendor), seen
    assert {"swagger-ui-bundle.js", "swagger-ui.css"} <= vendor, seen  # the API browser, no CDN
    assert "/static/css/app.css" in seen
