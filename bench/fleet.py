"""A fleet on one busy queue: two `dramatiq` masters of the shipped worker share a stream of `log` messages."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

from bench import workers
from bench.common import DelayProxy, Processes, preload
from bench.latency import read_marks


@dataclasses.dataclass
class Fleet:
    """Two masters of one implementation and how many messages each one's actors started."""

    impl: str
    rtt_ms: float
    messages: int
    processes: int
    threads: int
    #: Distinct messages each master started (its own marks file), in start order.
    started: list[int]
    seconds: float
    runs: list[workers.WorkerRun]
    error: str | None = None

    def share(self, index: int) -> float:
        total = sum(self.started)
        return self.started[index] / total if total else float("nan")

    @property
    def rate(self) -> float:
        return sum(self.started) / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "impl": self.impl,
            "rtt_ms": self.rtt_ms,
            "messages": self.messages,
            "masters": f"2 x ({self.processes} x {self.threads})",
            "started": self.started,
            "shares": [self.share(i) for i in range(len(self.started))],
            "seconds": self.seconds,
            "rate": self.rate,
            "error": self.error,
        }


def run(
    procs: Processes,
    reaper: workers.Reaper,
    client: Any,
    proxy: DelayProxy,
    impl: str,
    prefix: str,
    queue_url: str,
    *,
    messages: int,
    processes: int,
    threads: int,
    workdir: Path,
    timeout: float,
) -> Fleet:
    """Start two masters, wait until both are ready, then load the queue at once (so neither gets a head
    start) and count, from each master's marks, how many messages its actors started."""
    runs = [
        workers.start_worker(
            procs,
            proxy,
            impl,
            prefix,
            scenario="fleet",
            name=name,
            shape=workers.MARKED,
            processes=processes,
            threads=threads,
            messages=messages,
            workdir=workdir,
            marks=True,
        )
        for name in ("a", "b")
    ]
    error = None
    try:
        for run in runs:
            workers.wait_ready(run)
        started_at = time.monotonic()
        # Preloading runs far faster than two workers drain, so the queue is busy almost at once.
        loader = threading.Thread(target=preload, args=(client, queue_url, "log", "log", messages), daemon=True)
        loader.start()
        deadline = started_at + timeout
        counts = [0, 0]
        while time.monotonic() < deadline:
            counts = [len(read_marks(run.marks_path)) for run in runs if run.marks_path is not None]
            if sum(counts) >= messages:
                break
            time.sleep(0.05)
        seconds = time.monotonic() - started_at
        loader.join(timeout=30)
        if sum(counts) < messages:
            error = f"{messages - sum(counts)} messages not started after {timeout:.0f} s;"
    finally:
        for run in runs:
            workers.stop(run, reaper)
    return Fleet(impl, proxy.rtt_ms, messages, processes, threads, counts, seconds, runs, error)
