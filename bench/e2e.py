"""End to end: clients POST to an API, the API sends to SQS, the shipped worker (`dramatiq actors`) drains the queue."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import profile, workers
from bench.api_load import Load, load, start_api
from bench.common import DelayProxy, Processes, diff, queue_count, tree_cpu_seconds, wait_for
from bench.figures import ClosedLoopFigures

#: How often the bench reads the queue's depth while the load runs (directly, not through the proxy).
DEPTH_POLL_SECONDS = 0.1


@dataclasses.dataclass
class EndToEnd(ClosedLoopFigures):
    """One API and one worker of the same implementation, and what went through them."""

    impl: str
    rtt_ms: float
    clients: int
    processes: int
    threads: int
    load: Load
    started_at: float
    load_done_at: float
    empty_at: float
    api_requests: Counter[str]
    worker_requests: Counter[str]
    api_cpu_seconds: float
    worker_cpu_seconds: float
    server_cpu_seconds: float
    proxy_cpu_seconds: float
    peak_backlog: int
    error: str | None = None

    def _finished_at(self) -> float:
        return self.empty_at  # the queue read empty: every message processed and deleted

    def cpu_ms_per_message(self, seconds: float) -> float:
        return self.per_message(seconds * 1000)

    def as_dict(self) -> dict[str, Any]:
        return {
            "impl": self.impl,
            "rtt_ms": self.rtt_ms,
            "clients": self.clients,
            "worker": f"{self.processes} x {self.threads}",
            "accepted": self.accepted,
            "issued": self.load.issued,
            "statuses": {str(k): v for k, v in self.load.statuses.items()},
            "errors": dict(self.load.errors),
            "rate": self.rate,
            "api_rate": self.api_rate,
            "lag_s": self.lag_seconds,
            "peak_backlog": self.peak_backlog,
            "api_requests": dict(self.api_requests),
            "worker_requests": dict(self.worker_requests),
            "requests_per_msg": self.requests_per_message,
            "receives_per_msg": self.receives_per_message,
            "api_cpu_ms_per_msg": self.cpu_ms_per_message(self.api_cpu_seconds),
            "worker_cpu_ms_per_msg": self.cpu_ms_per_message(self.worker_cpu_seconds),
            "sqs_server_cpu_ms_per_msg": self.cpu_ms_per_message(self.server_cpu_seconds),
            "proxy_cpu_ms_per_msg": self.cpu_ms_per_message(self.proxy_cpu_seconds),
            "error": self.error,
        }


class _DepthWatch:
    """Reads the queue's depth in the background and keeps the largest value seen."""

    def __init__(self, client: Any, url: str) -> None:
        self.client = client
        self.url = url
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(DEPTH_POLL_SECONDS):
            try:
                self.peak = max(self.peak, queue_count(self.client, self.url))
            except Exception:  # a missed reading only lowers the peak; the drain check catches real trouble
                continue

    def __enter__(self) -> _DepthWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run(
    procs: Processes,
    reaper: workers.Reaper,
    client: Any,
    proxy: DelayProxy,
    impl: str,
    prefix: str,
    *,
    clients: int,
    total: int,
    time_limit: float,
    processes: int,
    threads: int,
    server_pid: int,
    workdir: Path,
    drain_timeout: float,
    profile_dir: Path | None = None,
    warmup: int = 20,
    env: dict[str, str] | None = None,
    drained: Callable[[str], None] | None = None,
    settle_seconds: float = 0.0,
) -> EndToEnd:
    """Start a worker and an API of `impl`, warm them up, then time `total` POSTs until the queue is empty.

    `env` adds settings to both; `drained` is called with the API's base URL once the queue is empty,
    before anything stops (to read the processes' metrics). `settle_seconds` is waited after the
    queue is empty before the CPU is read: work the processes do after the last message (a span
    export on a timer) is counted too. The rate is measured to the empty queue all the same.
    """
    worker = workers.start_worker(
        procs,
        proxy,
        impl,
        prefix,
        scenario="e2e",
        shape=workers.SHIPPED,
        processes=processes,
        threads=threads,
        messages=total,
        workdir=workdir,
        env=env,
    )
    api_tag = f"api-e2e-{prefix}"
    api = None
    try:
        workers.wait_ready(worker)
        api, base = start_api(procs, proxy, impl, prefix, api_tag, env)
        url = client.get_queue_url(QueueName=f"{prefix}_log")["QueueUrl"]
        load(base + "/messages", 1, warmup, 10.0)
        wait_for(lambda: queue_count(client, url) == 0, timeout=30, what="the warm-up messages to be processed")
        pids = (api.pid, worker.process.pid, server_pid, proxy.pid)
        api_before, worker_before = proxy.counts(api_tag), proxy.counts(worker.tag)
        cpu_before = [tree_cpu_seconds(pid) for pid in pids]
        error = None
        samplers = []
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            for role, pid in (("api", api.pid), ("worker", worker.process.pid)):
                samplers.append(profile.start(pid, profile_dir / f"{proxy.rtt_ms:g}ms-{impl}-{role}.txt"))
        with _DepthWatch(client, url) as watch:
            started_at = time.monotonic()
            burst = load(base + "/messages", clients, total, time_limit)
            load_done_at = time.monotonic()
            deadline = load_done_at + drain_timeout
            while (left := queue_count(client, url)) and time.monotonic() < deadline:
                time.sleep(0.02)
            empty_at = time.monotonic()
            if left:
                error = f"{left} messages left {drain_timeout:.0f} s after the last answer;"
        if settle_seconds > 0:
            time.sleep(settle_seconds)
        for sampler in samplers:
            profile.stop(sampler)
        api_cpu, worker_cpu, server_cpu, proxy_cpu = (
            tree_cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)
        )
        result = EndToEnd(
            impl,
            proxy.rtt_ms,
            clients,
            processes,
            threads,
            burst,
            started_at,
            load_done_at,
            empty_at,
            api_requests=diff(proxy.counts(api_tag), api_before),
            worker_requests=diff(proxy.counts(worker.tag), worker_before),
            api_cpu_seconds=api_cpu,
            worker_cpu_seconds=worker_cpu,
            server_cpu_seconds=server_cpu,
            proxy_cpu_seconds=proxy_cpu,
            peak_backlog=max(watch.peak, left),
            error=error,
        )
        if drained is not None:  # after the CPU was read: what it does is not counted
            drained(base)
    finally:
        if api is not None:
            Processes.stop(api, timeout=15)
        workers.stop(worker, reaper)
    return result
