"""The bench's actor bodies, shared by both worker modules so both run identical code."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

#: How long the sleep actor takes.
SLEEP_SECONDS = 0.05

_marks_fd: int | None = None


def noop() -> None:
    """Does nothing: what is left is the cost of the broker and Dramatiq."""


def log(payload: dict[str, Any]) -> None:
    """Takes what the APIs send (`log` messages) and does nothing with it, for the end-to-end run."""


def sleep() -> None:
    """Sleeps 50 ms, then appends "<start> <end> <pid>-<thread>" to BENCH_MARKS if set (one O_APPEND write)."""
    global _marks_fd
    start = time.time()
    time.sleep(SLEEP_SECONDS)
    end = time.time()
    path = os.environ.get("BENCH_MARKS")
    if path:
        if _marks_fd is None:
            _marks_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(_marks_fd, f"{start:.6f} {end:.6f} {os.getpid()}-{threading.get_ident()}\n".encode())
