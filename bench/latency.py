"""Latency at a fixed rate: POSTs sent open loop (on time, whatever earlier ones do), timed to the actor's start."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import workers
from bench.api_load import percentile, start_api
from bench.common import DelayProxy, Processes, diff, log_payload, metric_sums, queue_count, wait_for
from bench.figures import RequestFigures
from bench.http_post import POST_ERRORS, PostPool


def schedule(rate: float, seconds: float) -> list[float]:
    """When an open-loop sender sends, in seconds from its start: every 1/rate s for `seconds` (bounded)."""
    if rate <= 0 or seconds <= 0:
        return []
    return [i / rate for i in range(int(rate * seconds))]


async def open_loop(offsets: list[float], send: Callable[[int], Awaitable[None]]) -> list[float]:
    """Start `send(i)` at `offsets[i]` from now, each in a task of its own, whether or not earlier sends
    have returned; wait for them all. Returns how late each send started, in seconds."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[None]] = []
    lateness: list[float] = []
    for i, offset in enumerate(offsets):
        delay = start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lateness.append(max(0.0, loop.time() - start - offset))
        tasks.append(asyncio.create_task(send(i)))
    await asyncio.gather(*tasks)
    return lateness


def read_marks(path: Path) -> dict[str, tuple[float, str]]:
    """The marks file's first (time, pid) for each bench id: "<time.time()> <id> <pid>[ <received> <accepted>]"."""
    return {ident: (started, pid) for ident, (started, pid, _) in _read_lines(path).items()}


def read_receipts(path: Path) -> dict[str, tuple[float, float]]:
    """Where the worker noted them, for each bench id's first start: (when the receive that brought it
    returned, when SQS accepted it)."""
    return {ident: noted for ident, (_, _, noted) in _read_lines(path).items() if noted is not None}


def _read_lines(path: Path) -> dict[str, tuple[float, str, tuple[float, float] | None]]:
    found: dict[str, tuple[float, str, tuple[float, float] | None]] = {}
    if not path.exists():
        return found
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) in (3, 5) and parts[1] not in found:
            noted = (float(parts[3]), float(parts[4])) if len(parts) == 5 else None
            found[parts[1]] = (float(parts[0]), parts[2], noted)
    return found


@dataclasses.dataclass
class FixedRate(RequestFigures):
    """One API and worker of the same implementation under a steady stream of POSTs."""

    impl: str
    rtt_ms: float
    rate: float
    seconds: float
    sent: int
    accepted: int
    statuses: Counter[int]
    errors: Counter[str]
    #: POST sent -> the actor started it (the actor's own time.time()), per accepted message seen.
    latencies_ms: list[float]
    #: POST sent -> 202 answered.
    answers_ms: list[float]
    #: How late the scheduler started each POST.
    lateness_ms: list[float]
    unseen: int
    error: str | None = None
    #: The legs of POST -> actor start, per message whose receive the worker noted (ours): POST -> SQS
    #: accepted it (its SentTimestamp, to the millisecond), SQS accepted -> the 202 reached the client,
    #: SQS accepted -> the receive that brought it returned, and that receive -> the actor started.
    to_accepted_ms: list[float] = dataclasses.field(default_factory=list)
    accepted_to_answer_ms: list[float] = dataclasses.field(default_factory=list)
    to_receive_ms: list[float] = dataclasses.field(default_factory=list)
    to_start_ms: list[float] = dataclasses.field(default_factory=list)
    #: SQS requests by action while the fixed-rate run went on (first POST -> every message started).
    api_requests: Counter[str] = dataclasses.field(default_factory=Counter)
    worker_requests: Counter[str] = dataclasses.field(default_factory=Counter)
    #: Ours: the mean time of the run's SendMessageBatch calls, from the API's hand-off to a send thread to
    #: SQS's answer (`qm_api_send_seconds`): the round trip a send really takes here, proxy delay included.
    send_ms_mean: float = math.nan

    def percentile(self, p: float) -> float:
        return percentile(self.latencies_ms, p)

    def _messages(self) -> int:
        return self.accepted

    def round_trips(self, p: float) -> float:
        return self.percentile(p) / self.rtt_ms if self.rtt_ms > 0 else float("nan")

    def send_round_trips(self, p: float) -> float:
        """The p-th percentile in the API's own sends' mean round trip (ours), not the proxy's delay."""
        return self.percentile(p) / self.send_ms_mean if self.send_ms_mean > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {
            "impl": self.impl,
            "rtt_ms": self.rtt_ms,
            "rate": self.rate,
            "seconds": self.seconds,
            "sent": self.sent,
            "accepted": self.accepted,
            "statuses": {str(k): v for k, v in self.statuses.items()},
            "errors": dict(self.errors),
            "start_p50_ms": self.percentile(50),
            "start_p99_ms": self.percentile(99),
            "start_max_ms": max(self.latencies_ms, default=float("nan")),
            "answer_p50_ms": percentile(self.answers_ms, 50),
            "answer_p99_ms": percentile(self.answers_ms, 99),
            "lateness_p99_ms": percentile(self.lateness_ms, 99),
            "to_accepted_p50_ms": percentile(self.to_accepted_ms, 50),
            "to_accepted_p99_ms": percentile(self.to_accepted_ms, 99),
            "accepted_to_answer_p50_ms": percentile(self.accepted_to_answer_ms, 50),
            "to_receive_p50_ms": percentile(self.to_receive_ms, 50),
            "to_receive_p99_ms": percentile(self.to_receive_ms, 99),
            "to_start_p50_ms": percentile(self.to_start_ms, 50),
            "to_start_p99_ms": percentile(self.to_start_ms, 99),
            "api_requests": dict(self.api_requests),
            "worker_requests": dict(self.worker_requests),
            "requests_per_msg": self.requests_per_message,
            "sends_per_msg": self.sends_per_message,
            "receives_per_msg": self.receives_per_message,
            "unseen": self.unseen,
            "send_ms_mean": self.send_ms_mean,
            "error": self.error,
        }


@dataclasses.dataclass
class _Posted:
    """What the open-loop sender saw: per accepted bench id, when its POST went and when its 202 came."""

    sent_at: dict[str, float]
    answered_at: dict[str, float]
    statuses: Counter[int]
    errors: Counter[str]
    answers_ms: list[float]
    lateness_ms: list[float]


async def _post_at_rate(url: str, rate: float, seconds: float, id_prefix: str) -> _Posted:
    sent_at: dict[str, float] = {}
    answered_at: dict[str, float] = {}
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    answers: list[float] = []
    # A connection per POST in flight: a slow answer must never hold back the next POST (that would close the loop).
    pool = PostPool(url)

    async def send(i: int) -> None:
        ident = f"{id_prefix}{i}"
        body = json.dumps({"type": "log", "payload": log_payload(ident)}).encode()
        sent = time.time()
        try:
            status = await pool.post(body)
        except POST_ERRORS as exc:
            errors[type(exc).__name__] += 1
            return
        statuses[status] += 1
        if status == 202:
            answered = time.time()
            sent_at[ident] = sent
            answered_at[ident] = answered
            answers.append((answered - sent) * 1000)

    try:
        lateness = await open_loop(schedule(rate, seconds), send)
    finally:
        pool.close()
    return _Posted(sent_at, answered_at, statuses, errors, answers, [s * 1000 for s in lateness])


def run(
    procs: Processes,
    reaper: workers.Reaper,
    client: Any,
    proxy: DelayProxy,
    impl: str,
    prefix: str,
    *,
    rate: float,
    seconds: float,
    processes: int,
    threads: int,
    workdir: Path,
    drain_timeout: float,
    warmup: int = 20,
) -> FixedRate:
    """Start a worker (the shipped one, `log` marking its starts) and an API of `impl`; POST `log`
    messages at `rate` for `seconds`; match each accepted POST to its mark."""
    worker = workers.start_worker(
        procs,
        proxy,
        impl,
        prefix,
        scenario="latency",
        shape=workers.MARKED,
        processes=processes,
        threads=threads,
        messages=int(rate * seconds),
        workdir=workdir,
        marks=True,
    )
    assert worker.marks_path is not None
    marks_path = worker.marks_path
    api = None
    api_tag = f"api-latency-{prefix}"
    try:
        workers.wait_ready(worker)
        api, base = start_api(procs, proxy, impl, prefix, api_tag)
        queue_url = client.get_queue_url(QueueName=f"{prefix}_log")["QueueUrl"]
        asyncio.run(_post_at_rate(base + "/messages", warmup / 2, 2.0, "w"))
        wait_for(lambda: queue_count(client, queue_url) == 0, timeout=30, what="the warm-up messages to be processed")
        api_before, worker_before = proxy.counts(api_tag), proxy.counts(worker.tag)
        sends_before = _send_seconds(base) if impl == "ours" else None
        posted = asyncio.run(_post_at_rate(base + "/messages", rate, seconds, "l"))
        send_ms_mean = math.nan
        if sends_before is not None:
            total, count = (after - before for after, before in zip(_send_seconds(base), sends_before, strict=True))
            send_ms_mean = total / count * 1000 if count else math.nan
        sent_at = posted.sent_at
        error = None
        try:
            wait_for(
                lambda: len(sent_at.keys() & read_marks(marks_path).keys()) >= len(sent_at),
                timeout=drain_timeout,
                interval=0.1,
                what="every accepted message to start",
            )
        except TimeoutError as exc:
            error = str(exc)
        if error is None:
            # Counted once every message is deleted too, so the window holds every message's acks.
            try:
                wait_for(lambda: queue_count(client, queue_url) == 0, timeout=10, what="the last acks")
            except TimeoutError as exc:
                error = str(exc)
        api_requests = diff(proxy.counts(api_tag), api_before)
        worker_requests = diff(proxy.counts(worker.tag), worker_before)
        marks = read_marks(marks_path)
        receipts = read_receipts(marks_path)
        latencies = [(marks[i][0] - t) * 1000 for i, t in sent_at.items() if i in marks]
        noted = [i for i in sent_at if i in marks and i in receipts]
        return FixedRate(
            impl,
            proxy.rtt_ms,
            rate,
            seconds,
            sum(posted.statuses.values()) + sum(posted.errors.values()),
            len(sent_at),
            posted.statuses,
            posted.errors,
            latencies,
            posted.answers_ms,
            posted.lateness_ms,
            unseen=len(sent_at) - len(latencies),
            error=error,
            to_accepted_ms=[(receipts[i][1] - sent_at[i]) * 1000 for i in noted],
            accepted_to_answer_ms=[(posted.answered_at[i] - receipts[i][1]) * 1000 for i in noted],
            to_receive_ms=[(receipts[i][0] - receipts[i][1]) * 1000 for i in noted],
            to_start_ms=[(marks[i][0] - receipts[i][0]) * 1000 for i in noted],
            api_requests=api_requests,
            worker_requests=worker_requests,
            send_ms_mean=send_ms_mean,
        )
    finally:
        if api is not None:
            Processes.stop(api, timeout=15)
        workers.stop(worker, reaper)


def _send_seconds(base: str) -> tuple[float, ...]:
    """Our API's `qm_api_send_seconds` so far, from one read: (seconds, sends)."""
    return metric_sums(base + "/metrics", "qm_api_send_seconds_sum", "qm_api_send_seconds_count")
