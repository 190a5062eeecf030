"""`steerboard demo` end to end: server, ingest and two real (short) GRPO runs; both end up in the API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_demo_serves_two_runs_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    prefix = f"sbtest-demo-{uuid.uuid4().hex[:8]}:"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEERBOARD_")}
    env.update(STEERBOARD_REDIS_URL=REDIS_URL, STEERBOARD_KEY_PREFIX=prefix)
    steps = 6
    log = (tmp_path / "demo.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "demo", "--steps", str(steps), "--port", str(port),
         "--data-dir", str(tmp_path / "data"),
         # a short warm-up and fewer prompts keep this test to a minute; the demo's defaults are larger
         "--trainer-arg=--warmup-steps=40", "--trainer-arg=--n-prompts=16", "--trainer-arg=--eval-every=3"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )

    def output() -> str:
        return (tmp_path / "demo.out").read_text(errors="replace")

    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        runs: dict[str, dict] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, output()
            try:
                runs = {r["name"]: r for r in httpx.get(f"{base}/api/runs", timeout=5).json()}
            except httpx.HTTPError:
                runs = {}
            if len(runs) == 2 and all(r["status"] == "finished" for r in runs.values()):
                break
            time.sleep(1.0)
        assert len(runs) == 2, runs
        assert sorted(r["scheduler"] for r in runs.values()) == ["dump", "uniform"]
        for r in runs.values():
            assert r["status"] == "finished" and r["last_step"] == steps - 1
            series = httpx.get(f"{base}/api/runs/{r['name']}/series", params={"metric": "accuracy"}).json()
            assert sum(len(s["steps"]) for s in series["series"]) > 0
        page = httpx.get(f"{base}/runs/{next(iter(runs))}")
        assert page.status_code == 200
        # after training the demo keeps serving until Ctrl-C
        while "still serving" not in output() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
        log.close()
    text = output()
    assert proc.returncode == 0, text
    assert f"Steerboard is serving at http://127.0.0.1:{port}" in text
    assert "training done" in text
