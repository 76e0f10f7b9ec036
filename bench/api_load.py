"""API benchmark: each API in a process of its own, driven by a load generator here (`bench.http_post`:
keep-alive connections on asyncio streams, one per client, cheap on the CPU it shares with the APIs)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

from bench.common import (
    OURS_ENV,
    DelayProxy,
    Processes,
    answers,
    child_env,
    diff,
    free_port,
    host_busy_percent,
    host_cpu_ticks,
    tree_cpu_seconds,
    wait_for,
)
from bench.http_post import POST_ERRORS, PostConnection

#: The request every client sends.
BODY = json.dumps({"type": "log", "payload": {"message": "bench"}}).encode()

#: The SQS actions that carry messages.
SEND_ACTIONS = ("SendMessage", "SendMessageBatch")


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile, NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@dataclasses.dataclass
class Load:
    """What one burst of clients got back."""

    issued: int
    accepted: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int]
    errors: Counter[str]

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0


@dataclasses.dataclass
class LoadResult:
    impl: str
    rtt_ms: float
    clients: int
    load: Load
    requests: Counter[str]
    api_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    proxy_cpu_seconds: float = 0.0
    loadgen_cpu_seconds: float = 0.0
    host_busy_percent: float = float("nan")

    @property
    def accepted(self) -> int:
        return self.load.accepted

    @property
    def rate(self) -> float:
        return self.load.rate

    def per_message(self, seconds: float) -> float:
        return seconds * 1000 / self.accepted if self.accepted else float("nan")

    def percentile(self, p: float) -> float:
        return percentile(self.load.latencies_ms, p)

    @property
    def sends_per_message(self) -> float:
        sends = sum(self.requests.get(a, 0) for a in SEND_ACTIONS)
        return sends / self.accepted if self.accepted else float("nan")

    @property
    def requests_per_message(self) -> float:
        return sum(self.requests.values()) / self.accepted if self.accepted else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "impl": self.impl,
            "rtt_ms": self.rtt_ms,
            "clients": self.clients,
            "accepted": self.accepted,
            "seconds": self.load.seconds,
            "rate": self.rate,
            "p50_ms": self.percentile(50),
            "p99_ms": self.percentile(99),
            "requests": dict(self.requests),
            "statuses": {str(k): v for k, v in self.load.statuses.items()},
            "errors": dict(self.load.errors),
            "api_cpu_ms_per_msg": self.per_message(self.api_cpu_seconds),
            "sqs_server_cpu_ms_per_msg": self.per_message(self.server_cpu_seconds),
            "proxy_cpu_ms_per_msg": self.per_message(self.proxy_cpu_seconds),
            "loadgen_cpu_ms_per_msg": self.per_message(self.loadgen_cpu_seconds),
            "host_busy_percent": self.host_busy_percent,
        }


#: A request body by request number (0, 1, ...), and what to call with (number, time.time() at send) on a 202.
BodyOf = Callable[[int], bytes]
OnAccepted = Callable[[int, float], None]


async def _load(
    url: str, clients: int, total: int, time_limit: float, body_of: BodyOf | None, on_accepted: OnAccepted | None
) -> Load:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    issued = 0
    accepted = 0
    connections = [PostConnection(url) for _ in range(clients)]
    start = time.perf_counter()
    deadline = start + time_limit

    async def client(connection: PostConnection) -> None:
        nonlocal issued, accepted
        constant = connection.request(BODY) if body_of is None else None
        while issued < total and time.perf_counter() < deadline:
            number = issued
            issued += 1
            body = BODY if body_of is None else body_of(number)
            sent = time.time()
            t0 = time.perf_counter()
            try:
                status = await connection.post(body, request=constant)
            except POST_ERRORS as exc:
                errors[type(exc).__name__] += 1
                continue
            statuses[status] += 1
            if status == 202:
                accepted += 1
                latencies.append((time.perf_counter() - t0) * 1000)
                if on_accepted is not None:
                    on_accepted(number, sent)

    try:
        await asyncio.gather(*(client(c) for c in connections))
        seconds = time.perf_counter() - start
    finally:
        for connection in connections:
            connection.close()
    return Load(issued, accepted, seconds, latencies, statuses, errors)


def load(
    url: str,
    clients: int,
    total: int,
    time_limit: float,
    *,
    body_of: BodyOf | None = None,
    on_accepted: OnAccepted | None = None,
) -> Load:
    """`clients` concurrent clients POST until `total` requests are issued or `time_limit` passes.

    Each sends BODY (a `log` message), or `body_of(n)` for the n-th request if given; `on_accepted(n,
    sent)` is called for each 202 with the time.time() the request was sent.
    """
    return asyncio.run(_load(url, clients, total, time_limit, body_of, on_accepted))


def start_api(
    procs: Processes, proxy: DelayProxy, impl: str, prefix: str, tag: str, env: dict[str, str] | None = None
) -> tuple[Popen[bytes], str]:
    """Start one API whose SQS calls go through `proxy` under `tag`; returns it and its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "bench.api_server", impl, str(port), prefix]
    extra = {**OURS_ENV, **(env or {})} if impl == "ours" else {}
    process, log_path = procs.start(command, env=child_env(proxy.endpoint(tag), extra), log_name=tag)
    base = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: "READY" in Path(log_path).read_text(errors="replace") or process.poll() is not None,
        timeout=60,
        what=f"the {impl} API",
    )
    if process.poll() is not None or not answers(base + "/messages"):
        raise RuntimeError(f"The {impl} API did not start:\n{Path(log_path).read_text(errors='replace')[-3000:]}")
    return process, base


def run_api(
    procs: Processes,
    proxy: DelayProxy,
    impl: str,
    prefix: str,
    *,
    levels: list[int],
    total: int,
    time_limit: float,
    server_pid: int,
    warmup: int = 20,
) -> list[LoadResult]:
    """Start one API, warm it up, then run each concurrency level in turn; stop it."""
    tag = f"api-{prefix}"
    process, base = start_api(procs, proxy, impl, prefix, tag)
    results = []
    try:
        url = base + "/messages"
        load(url, 1, warmup, 10.0)
        for clients in levels:
            before = proxy.counts(tag)
            pids = (process.pid, server_pid, proxy.pid)
            cpu_before = [tree_cpu_seconds(pid) for pid in pids]
            host_before = host_cpu_ticks()
            loadgen_before = time.process_time()
            burst = load(url, clients, total, time_limit)
            loadgen_after = time.process_time()
            host_after = host_cpu_ticks()
            cpu_after = [tree_cpu_seconds(pid) for pid in pids]
            result = LoadResult(impl, proxy.rtt_ms, clients, burst, diff(proxy.counts(tag), before))
            result.api_cpu_seconds, result.server_cpu_seconds, result.proxy_cpu_seconds = (
                a - b for a, b in zip(cpu_after, cpu_before, strict=True)
            )
            result.host_busy_percent = host_busy_percent(host_before, host_after)
            result.loadgen_cpu_seconds = loadgen_after - loadgen_before
            results.append(result)
    finally:
        Processes.stop(process, timeout=15)
    return results
