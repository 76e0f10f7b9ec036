"""API benchmark: each API in a process of its own, driven by an aiohttp load generator here."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import aiohttp

from bench.common import (
    Processes,
    answers,
    child_env,
    free_port,
    host_busy_percent,
    host_cpu_ticks,
    tree_cpu_seconds,
    wait_for,
)

#: The request every client sends.
BODY = json.dumps({"type": "log", "payload": {"message": "bench"}}).encode()
HEADERS = {"Content-Type": "application/json"}


@dataclasses.dataclass
class LoadResult:
    impl: str
    clients: int
    sent: int
    accepted: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int]
    requests: Counter[str]
    errors: Counter[str] = dataclasses.field(default_factory=Counter)
    api_cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    host_busy_percent: float = float("nan")
    loadgen_cpu_seconds: float = 0.0

    @property
    def api_cpu_ms_per_message(self) -> float:
        return self.api_cpu_seconds * 1000 / self.accepted if self.accepted else 0.0

    @property
    def loadgen_cpu_ms_per_message(self) -> float:
        return self.loadgen_cpu_seconds * 1000 / self.accepted if self.accepted else 0.0

    @property
    def server_cpu_ms_per_message(self) -> float:
        return self.server_cpu_seconds * 1000 / self.accepted if self.accepted else 0.0

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]

    def requests_per_message(self) -> dict[str, float]:
        return {a: n / self.accepted for a, n in self.requests.items()} if self.accepted else {}


async def _load(
    url: str, clients: int, total: int, time_limit: float
) -> tuple[int, int, float, list[float], Counter[int], Counter[str]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    issued = 0
    accepted = 0
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        deadline = start + time_limit

        async def client() -> None:
            nonlocal issued, accepted
            while issued < total and time.perf_counter() < deadline:
                issued += 1
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=BODY, headers=HEADERS) as response:
                        await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors[type(exc).__name__] += 1
                    continue
                statuses[status] += 1
                if status == 202:
                    accepted += 1
                    latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(client() for _ in range(clients)))
        seconds = time.perf_counter() - start
    return issued, accepted, seconds, latencies, statuses, errors


def _counts(base: str) -> Counter[str]:
    with urllib.request.urlopen(base + "/_bench/counts", timeout=5) as response:
        return Counter(json.loads(response.read()))


def run_api(
    procs: Processes,
    endpoint: str,
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
    port = free_port()
    command = [sys.executable, "-m", "bench.api_server", impl, str(port), prefix]
    process, log_path = procs.start(command, env=child_env(endpoint), log_name=f"api-{impl}")
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        wait_for(
            lambda: "READY" in Path(log_path).read_text(errors="replace") or process.poll() is not None,
            timeout=60,
            what=f"the {impl} API",
        )
        if process.poll() is not None or not answers(base + "/_bench/counts"):
            raise RuntimeError(f"The {impl} API did not start:\n{Path(log_path).read_text(errors='replace')[-3000:]}")
        url = base + "/messages"
        asyncio.run(_load(url, 1, warmup, 10.0))
        for clients in levels:
            before = _counts(base)
            cpu_before = tree_cpu_seconds(process.pid), tree_cpu_seconds(server_pid)
            host_before = host_cpu_ticks()
            loadgen_before = time.process_time()
            issued, accepted, seconds, latencies, statuses, errors = asyncio.run(_load(url, clients, total, time_limit))
            loadgen_after = time.process_time()
            host_after = host_cpu_ticks()
            cpu_after = tree_cpu_seconds(process.pid), tree_cpu_seconds(server_pid)
            after = _counts(base)
            requests = Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)})
            result = LoadResult(impl, clients, issued, accepted, seconds, latencies, statuses, requests, errors)
            result.api_cpu_seconds = cpu_after[0] - cpu_before[0]
            result.server_cpu_seconds = cpu_after[1] - cpu_before[1]
            result.host_busy_percent = host_busy_percent(host_before, host_after)
            result.loadgen_cpu_seconds = loadgen_after - loadgen_before
            results.append(result)
    finally:
        Processes.stop(process, timeout=15)
    return results
