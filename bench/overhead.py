"""What the proxy itself costs: the same raw SQS calls straight to the server and through each proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import aiohttp

from bench.api_load import percentile
from bench.common import tree_cpu_seconds

#: A cheap call whose cost does not grow with the queue's depth.
HEADERS = {
    "X-Amz-Target": "AmazonSQS.GetQueueUrl",
    "Content-Type": "application/x-amz-json-1.0",
    # The local server does not check signatures, only that there is one.
    "Authorization": "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/sqs/aws4_request, "
    "SignedHeaders=host;x-amz-target, Signature=0",
}


@dataclasses.dataclass
class Probe:
    """`requests` calls made by `concurrency` clients at once to one URL."""

    path: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float]
    failures: int
    proxy_cpu_seconds: float | None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "rate": self.rate,
            "p50_ms": percentile(self.latencies_ms, 50),
            "p99_ms": percentile(self.latencies_ms, 99),
            "failures": self.failures,
            "proxy_cpu_us_per_request": (
                self.proxy_cpu_seconds * 1e6 / self.requests if self.proxy_cpu_seconds is not None else None
            ),
        }


async def _probe(url: str, body: bytes, concurrency: int, total: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url, data=body, headers=HEADERS) as response:
            await response.read()  # one connection open before the clock starts

        async def client() -> None:
            nonlocal issued, failures
            while issued < total:
                issued += 1
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=HEADERS) as response:
                    await response.read()
                    if response.status != 200:
                        failures += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        return time.perf_counter() - start, latencies, failures


def probe(url: str, queue_name: str, *, concurrency: int, total: int, proxy_pid: int | None) -> Probe:
    """Time `total` GetQueueUrl calls to `url` from `concurrency` clients; the proxy's CPU if there is one."""
    body = json.dumps({"QueueName": queue_name}).encode()
    cpu_before = tree_cpu_seconds(proxy_pid) if proxy_pid else 0.0
    seconds, latencies, failures = asyncio.run(_probe(url, body, concurrency, total))
    cpu = tree_cpu_seconds(proxy_pid) - cpu_before if proxy_pid else None
    return Probe(url, concurrency, total, seconds, latencies, failures, cpu)
