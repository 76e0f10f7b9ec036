"""Several API processes on one port: a small master starts them, forwards signals, and ends with them.

Each child is a fresh `python -m api.app` that binds the port with SO_REUSEPORT, so the kernel
spreads connections across them. Their Prometheus metrics go to one multiprocess directory and
every child's `/metrics` sums all of them; their idempotency keys are one SQLite store in the state
directory, so a retry that lands on another process replays the first answer. A child dies with
its master (PR_SET_PDEATHSIG); if a child dies on its own, the master stops the others and exits
non-zero, so the supervisor (supervisord, systemd, an orchestrator) restarts the whole API, as it
does Dramatiq's workers.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

logger = logging.getLogger(__name__)

#: Set in a child's environment to the master's pid: the child binds with SO_REUSEPORT.
CHILD_ENV = "QM_API_CHILD_OF"

#: How long past their shutdown timeout stopping children may take before they are killed.
STOP_MARGIN_SECONDS = 10.0

#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def is_child() -> bool:
    """Whether this process is one of several API processes started by a master."""
    return bool(os.environ.get(CHILD_ENV))


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(processes: int, *, shutdown_timeout_seconds: float, state_dir: Path | None) -> int:
    """Run `processes` API children until a signal or a child's death; returns the exit status.

    The children share a Prometheus multiprocess directory of this run's own, and the idempotency
    store in `state_dir` (a directory of this run's own when None).
    """
    run_dir = Path(tempfile.mkdtemp(prefix="qm-api-"))
    metrics_dir = run_dir / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        CHILD_ENV: str(os.getpid()),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "QM_STATE_DIR": str(state_dir or run_dir / "state"),
    }
    # Each child leads a process group of its own: a Ctrl-C on the terminal reaches the master
    # only, which forwards it once (a second signal would cut a child's graceful stop short).
    children = [
        subprocess.Popen([sys.executable, "-m", "api.app"], env=env, preexec_fn=_die_with_parent, process_group=0)
        for _ in range(processes)
    ]
    logger.info("Started %d API processes: %s.", processes, ", ".join(str(c.pid) for c in children))
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    deadline: float | None = None
    try:
        while any(c.poll() is None for c in children):
            if not stopping:
                died = [c for c in children if c.poll() is not None]
                if died:
                    logger.error("API process %d exited with %d; stopping the others.", died[0].pid, died[0].returncode)
                    status = 1
                    forward(signal.SIGTERM, None)
            elif deadline is None:
                # Each child lets its requests finish within the shutdown timeout; then it is killed.
                deadline = time.monotonic() + shutdown_timeout_seconds + STOP_MARGIN_SECONDS
            elif time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if any(c.returncode for c in children if c.returncode is not None and c.returncode != -signal.SIGTERM):
            status = status or 1
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
        shutil.rmtree(run_dir, ignore_errors=True)
    return status
