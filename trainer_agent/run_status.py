"""How a training process ended, for the `run_end` message: finished, failed or interrupted.

- a clean end (no exception in flight, `sys.exit(0)`): `finished`;
- Ctrl-C (KeyboardInterrupt) or SIGTERM: `interrupted`;
- any other exception, or `sys.exit` with a non-zero code: `failed`.

SIGTERM (what schedulers, `kill` and `torchrun` send) would end Python at once, without unwinding
or exit handlers, so the run would look alive until it went stale. A streaming agent therefore turns
the first SIGTERM into `SystemExit(143)`: the training loop unwinds, `finally` blocks and `with`
blocks run, the agent sends `run_end` with `interrupted`. Only where nobody handles SIGTERM already
(the default handler, in the main thread); a second SIGTERM kills as before.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from .protocol import RunEndStatus

_terminated = False
_sigterm_installed = False
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM


def status_of(exc_type: type[BaseException] | None, exc: BaseException | None = None) -> RunEndStatus:
    """The status of a run whose process is ending with `exc_type` in flight (None: no exception)."""
    if _terminated:
        return "interrupted"
    if exc_type is None:
        return "finished"
    if issubclass(exc_type, KeyboardInterrupt):
        return "interrupted"
    if issubclass(exc_type, SystemExit):
        code = exc.code if isinstance(exc, SystemExit) else None
        return "finished" if code in (None, 0) else "failed"
    return "failed"


def current_status() -> RunEndStatus:
    """The status to report now: from the exception being raised or handled, if any."""
    exc_type, exc, _ = sys.exc_info()
    return status_of(exc_type, exc)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminated
    _terminated = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise SystemExit(SIGTERM_EXIT_CODE)


def install_sigterm_handler() -> bool:
    """Unwind on SIGTERM (see the module docstring) where SIGTERM is not handled already."""
    global _sigterm_installed
    if _sigterm_installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return False  # the application (or its launcher) handles SIGTERM itself
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # no signals here (e.g. an embedded interpreter)
        return False
    _sigterm_installed = True
    return True
