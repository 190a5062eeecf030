"""A run ends with the status of how its training process ended: Ctrl-C and SIGTERM `interrupted`,
an exception `failed`, a clean end `finished`, whichever way the script holds the agent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from tests.conftest import REDIS_URL

# A training loop as users write it; `{hold}` picks how the agent is held, `{end}` how the loop ends.
SCRIPT = """
import signal, sys, time
from trainer_agent import CurriculumAgent

# A job started in the background by a non-interactive shell (CI) inherits SIGINT ignored, and Python
# then installs no KeyboardInterrupt handler; a training script in a terminal has it.
signal.signal(signal.SIGINT, signal.default_int_handler)

def train(agent, steps):
    for step in range(steps):
        arms = agent.sample(4)
        agent.observe(arms, [1.0, 0.0, 1.0, 0.0], groups=[0, 0, 1, 1])
        agent.end_step(metrics={{"loss": 0.1}})
        if step == 2:
            print("running", flush=True)
        {end}
        time.sleep(0.02)

agent = CurriculumAgent(sys.argv[1], ["a", "b"], scheduler="dump", redis_url={url!r},
                        key_prefix=sys.argv[2], spool_dir=sys.argv[3], heartbeat_s=0.2)
{hold}
"""
HOLDS = {
    # the README's way
    "with": "with agent:\n    train(agent, {steps})",
    # try/finally with a bare close(): the status comes from the exception in flight
    "finally": "try:\n    train(agent, {steps})\nfinally:\n    agent.close()",
    # never closed: the exit hook closes it
    "unclosed": "train(agent, {steps})",
}


def run_end(key_prefix: str, run: str) -> dict[str, object]:
    r = redis.Redis.from_url(REDIS_URL)
    try:
        docs = [json.loads(f[b"m"]) for _, f in r.xrange(f"{key_prefix}ingest")]
    finally:
        r.close()
    ends = [d for d in docs if d["type"] == "run_end" and d["run"] == run]
    assert len(ends) == 1, [d["type"] for d in docs]
    return ends[0]


def start(tmp_path: Path, key_prefix: str, run: str, hold: str, end: str = "", steps: int = 10_000
          ) -> subprocess.Popen[str]:
    code = textwrap.dedent(SCRIPT).format(url=REDIS_URL, end=end, hold=HOLDS[hold].format(steps=steps))
    script = tmp_path / f"{run}.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script), run, key_prefix, str(tmp_path / "spool" / run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc


def wait_running(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "running", proc.stderr.read() if proc.stderr else ""


@pytest.mark.parametrize("hold", sorted(HOLDS))
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, None), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_signal_ends_the_run_interrupted(tmp_path: Path, key_prefix: str, hold: str, sig: int,
                                           code: int | None) -> None:
    run = f"sig-{hold}-{sig}"
    proc = start(tmp_path, key_prefix, run, hold)
    wait_running(proc)
    time.sleep(0.1)
    proc.send_signal(sig)
    rc = proc.wait(20)
    if code is not None:
        assert rc == code  # SIGTERM still ends the process with 128 + 15
    else:
        assert rc != 0
    end = run_end(key_prefix, run)
    assert end["status"] == "interrupted"
    assert isinstance(end["step"], int) and end["step"] >= 2


@pytest.mark.parametrize("hold", sorted(HOLDS))
def test_an_exception_in_the_loop_ends_the_run_failed(tmp_path: Path, key_prefix: str, hold: str) -> None:
    run = f"exc-{hold}"
    proc = start(tmp_path, key_prefix, run, hold, end='if step == 4:\n            raise RuntimeError("CUDA OOM")')
    assert proc.wait(20) == 1
    assert proc.stderr is not None and "CUDA OOM" in proc.stderr.read()
    end = run_end(key_prefix, run)
    assert (end["status"], end["step"]) == ("failed", 4)


@pytest.mark.parametrize("hold", sorted(HOLDS))
def test_a_clean_end_is_finished(tmp_path: Path, key_prefix: str, hold: str) -> None:
    run = f"ok-{hold}"
    proc = start(tmp_path, key_prefix, run, hold, steps=5)
    assert proc.wait(20) == 0
    assert run_end(key_prefix, run) == {**run_end(key_prefix, run), "status": "finished", "step": 4}


def test_sigterm_is_left_to_an_application_that_handles_it(tmp_path: Path, key_prefix: str) -> None:
    # A launcher's own SIGTERM handler is not replaced.
    run = "own-handler"
    code = textwrap.dedent(SCRIPT).format(url=REDIS_URL, end="", hold=HOLDS["with"].format(steps=10_000))
    code = "import signal\nsignal.signal(signal.SIGTERM, lambda s, f: print('own', flush=True))\n" + code
    script = tmp_path / "own.py"
    script.write_text(code)
    proc = subprocess.Popen([sys.executable, str(script), run, key_prefix, str(tmp_path / "spool")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_running(proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "own"
    assert proc.poll() is None  # still training: the application decided to ignore it
    proc.send_signal(signal.SIGINT)
    proc.wait(20)
    assert run_end(key_prefix, run)["status"] == "interrupted"
