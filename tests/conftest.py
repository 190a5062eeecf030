"""Shared fixtures: real Redis (the machine's, or a private server a test may stop), unique prefixes."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS_URL = os.environ.get("STEERBOARD_TEST_REDIS", "redis://127.0.0.1:6379/0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def key_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis key prefix owned by this test; its keys are deleted afterwards."""
    import redis

    prefix = f"sbtest-{uuid.uuid4().hex[:10]}:"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(r.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            r.delete(*keys)
    finally:
        r.close()


class RedisProcess:
    """A private redis-server a test may stop and start again (AOF on, so data survives a restart)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
            self.proc.wait(10)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(subprocess.signal.SIGSTOP)  # type: ignore[attr-defined]

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(subprocess.signal.SIGCONT)  # type: ignore[attr-defined]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    rp = RedisProcess(tmp_path / "redis")
    rp.dir.mkdir()
    rp.start()
    yield rp
    if rp.proc is not None:
        rp.resume()
        rp.stop()
