"""Every shipped message type end to end: clients POST a mix of `log`, `webhook` and `ordered` (FIFO).

The shipped worker (`dramatiq actors`, `log` marking its starts as in the latency scenario) and the
shipped API, both through the bench's delaying proxy, against stock (dramatiq-sqs) with the same mix
in the same run; and ours again with `log` alone (the e2e scenario's traffic), and with the mix's
`ordered` third sent as `webhook` (no FIFO), so the table shows what webhook and FIFO traffic
change. `webhook` and `ordered` POST to a receiver the bench runs on 127.0.0.1 (`python -m
bench.mix PORT`, a process of its own): it answers 200 at once and keeps, for each bench id in the
body, when it first saw it. Stock's `ordered` is a standard queue
(dramatiq-sqs has no FIFO): its group ids are not sent, and nothing is kept in order.

A message is done when its actor has seen it (the receiver got its POST, or `log` marked its start)
and every queue is empty (deleted): the end-to-end rate is accepted messages over first POST -> done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from subprocess import Popen
from typing import Any

from aiohttp import web

from bench import workers
from bench.api_load import Load, load, percentile, start_api
from bench.common import (
    DelayProxy,
    Processes,
    child_env,
    diff,
    free_port,
    log_payload,
    queue_count,
    tree_cpu_seconds,
    wait_for,
)
from bench.figures import ClosedLoopFigures
from bench.latency import read_marks
from bench.tables import table

#: The shipped message types, in the order the table lists them.
TYPES = ("log", "webhook", "ordered")

#: The default mix: a third of each.
DEFAULT_SHARES: dict[str, int] = {"log": 1, "webhook": 1, "ordered": 1}

#: The FIFO group ids `ordered` messages are spread over.
DEFAULT_GROUPS = 32

#: How often the bench checks for done while the workers drain.
POLL_SECONDS = 0.05

#: The runs of one mix scenario: (name, implementation, shares). The first two are compared; the
#: others are ours on other traffic, each compared with the first: `log` alone (the e2e scenario's
#: traffic), and the mix with `ordered`'s third sent as `webhook` (the same HTTP work, no FIFO).
RUNS: tuple[tuple[str, str, dict[str, int]], ...] = (
    ("ours", "ours", DEFAULT_SHARES),
    ("stock", "stock", DEFAULT_SHARES),
    ("ours log only", "ours", {"log": 1}),
    ("ours no FIFO", "ours", {"log": 1, "webhook": 2}),
)


def cycle(shares: dict[str, int]) -> list[str]:
    """One period of the mix, its types spread evenly (smooth weighted round robin): {a: 2, b: 1} -> a b a."""
    weights = {t: w for t, w in shares.items() if w > 0}
    if not weights:
        raise ValueError("a mix needs at least one type with a positive share")
    total = sum(weights.values())
    current = dict.fromkeys(weights, 0)
    out = []
    for _ in range(total):
        for t, w in weights.items():
            current[t] += w
        pick = max(current, key=lambda t: current[t])
        current[pick] -= total
        out.append(pick)
    return out


@dataclasses.dataclass(frozen=True)
class Mix:
    """The n-th request's envelope: its type by the mix's period, its bench id, its group if FIFO."""

    shares: dict[str, int]
    receiver: str
    tag: str
    groups: int = DEFAULT_GROUPS

    @property
    def period(self) -> list[str]:
        return cycle(self.shares)

    def type_of(self, n: int) -> str:
        period = self.period
        return period[n % len(period)]

    def ident(self, n: int) -> str:
        return f"{self.tag}{n}"

    def envelope(self, n: int) -> dict[str, Any]:
        kind, ident = self.type_of(n), self.ident(n)
        if kind == "log":
            return {"type": "log", "payload": log_payload(ident)}
        envelope: dict[str, Any] = {
            "type": kind,
            "payload": {"url": f"{self.receiver}/hook/{kind}", "body": {"bench_id": ident}},
        }
        if kind == "ordered":
            # One period per group in turn: consecutive `ordered` messages go to different groups.
            envelope["group_id"] = f"g{(n // len(self.period)) % self.groups}"
        return envelope

    def body_of(self, n: int) -> bytes:
        return json.dumps(self.envelope(n)).encode()


# -- the receiver ---------------------------------------------------------------------------------


class Tally:
    """What the receiver got: requests by path, and when it first saw each bench id."""

    def __init__(self) -> None:
        self.requests = 0
        self.by_path: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}

    def record(self, path: str, body: bytes, when: float) -> None:
        self.requests += 1
        self.by_path[path] += 1
        try:
            ident = json.loads(body).get("bench_id")
        except (ValueError, AttributeError):
            ident = None
        if isinstance(ident, str):
            self.first_seen.setdefault(ident, when)

    @property
    def duplicates(self) -> int:
        """Requests beyond the first of each bench id (retries, redeliveries), and requests without one."""
        return self.requests - len(self.first_seen)

    def summary(self) -> dict[str, Any]:
        return {"requests": self.requests, "distinct": len(self.first_seen), "by_path": dict(self.by_path)}


def receiver_app(tally: Tally) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        tally.record(request.path, await request.read(), time.time())
        return web.Response(status=200)

    async def summary(request: web.Request) -> web.Response:
        return web.json_response(tally.summary())

    async def seen(request: web.Request) -> web.Response:
        return web.json_response(tally.first_seen)

    app = web.Application()
    app.router.add_post("/hook/{kind}", hook)
    app.router.add_get("/_tally", summary)
    app.router.add_get("/_seen", seen)
    return app


async def _serve(port: int) -> None:
    runner = web.AppRunner(receiver_app(Tally()), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


class Receiver:
    """The receiver in a process of its own (so its work does not slow the load generator)."""

    def __init__(self, procs: Processes) -> None:
        self.port = free_port()
        self.process: Popen[bytes]
        self.process, log_path = procs.start(
            [sys.executable, "-m", "bench.mix", str(self.port)], env=child_env(""), log_name="mix-receiver"
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(
            lambda: "READY" in log_path.read_text(errors="replace") or self.process.poll() is not None,
            timeout=30,
            what="the webhook receiver",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"the webhook receiver did not start:\n{log_path.read_text(errors='replace')}")

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def summary(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("/_tally")
        return result

    def seen(self) -> dict[str, float]:
        result: dict[str, float] = self._get("/_seen")
        return result

    def close(self) -> None:
        Processes.stop(self.process, timeout=5)


# -- one run --------------------------------------------------------------------------------------


@dataclasses.dataclass
class MixRun(ClosedLoopFigures):
    """One API and one worker of the same implementation under one mix, and what went through them."""

    name: str
    impl: str
    rtt_ms: float
    shares: dict[str, int]
    clients: int
    processes: int
    threads: int
    load: Load
    accepted_by_type: Counter[str]
    started_at: float
    load_done_at: float
    done_at: float
    api_requests: Counter[str]
    worker_requests: Counter[str]
    cpu_seconds: dict[str, float]
    #: POST sent -> the actor saw it (`log`: its start mark; the others: the receiver got the POST), by type.
    latencies_ms: dict[str, list[float]]
    unseen: int
    receiver_requests: int
    receiver_duplicates: int
    error: str | None = None

    def _finished_at(self) -> float:
        return self.done_at

    def cpu_ms_per_message(self, role: str) -> float:
        return self.per_message(self.cpu_seconds.get(role, float("nan")) * 1000)

    def latency(self, kind: str, p: float) -> float:
        return percentile(self.latencies_ms.get(kind, []), p)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "impl": self.impl,
            "rtt_ms": self.rtt_ms,
            "shares": self.shares,
            "clients": self.clients,
            "worker": f"{self.processes} x {self.threads}",
            "accepted": self.accepted,
            "accepted_by_type": dict(self.accepted_by_type),
            "issued": self.load.issued,
            "statuses": {str(k): v for k, v in self.load.statuses.items()},
            "errors": dict(self.load.errors),
            "load_s": self.load.seconds,
            "rate": self.rate,
            "api_rate": self.api_rate,
            "lag_s": self.lag_seconds,
            "api_requests": dict(self.api_requests),
            "worker_requests": dict(self.worker_requests),
            "requests_per_msg": self.requests_per_message,
            "receives_per_msg": self.receives_per_message,
            "msgs_per_receive": self.messages_per_receive,
            **{f"{role}_cpu_ms_per_msg": self.cpu_ms_per_message(role) for role in self.cpu_seconds},
            "post_to_actor_ms": {
                kind: {"p50": self.latency(kind, 50), "p99": self.latency(kind, 99), "n": len(values)}
                for kind, values in self.latencies_ms.items()
            },
            "post_to_202_ms": {
                "p50": percentile(self.load.latencies_ms, 50),
                "p99": percentile(self.load.latencies_ms, 99),
            },
            "unseen": self.unseen,
            "receiver_requests": self.receiver_requests,
            "receiver_duplicates": self.receiver_duplicates,
            "error": self.error,
        }


def _queue_urls(client: Any, prefix: str) -> list[str]:
    """Every queue of the run's prefix but the dead-letter queues: what the workers consume."""
    urls = client.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    return [u for u in urls if "_dlq" not in u.rsplit("/", 1)[-1]]


def run(
    procs: Processes,
    reaper: workers.Reaper,
    client: Any,
    proxy: DelayProxy,
    receiver: Receiver,
    name: str,
    impl: str,
    prefix: str,
    *,
    shares: dict[str, int],
    clients: int,
    total: int,
    time_limit: float,
    processes: int,
    threads: int,
    server_pid: int,
    workdir: Path,
    drain_timeout: float,
    warmup: int = 30,
) -> MixRun:
    """Start a worker and an API of `impl`, warm them up with the mix, then time `total` POSTs of it until done."""
    worker = workers.start_worker(
        procs,
        proxy,
        impl,
        prefix,
        scenario="mix",
        shape=workers.MARKED,
        processes=processes,
        threads=threads,
        messages=total,
        workdir=workdir,
        marks=True,
    )
    assert worker.marks_path is not None
    marks_path = worker.marks_path
    api_tag = f"api-mix-{prefix}"
    api = None
    try:
        workers.wait_ready(worker)
        api, base = start_api(procs, proxy, impl, prefix, api_tag)
        urls = _queue_urls(client, prefix)

        def all_empty() -> bool:
            return all(queue_count(client, url) == 0 for url in urls)

        def seen_count(tag: str, kinds: set[str]) -> int:
            """How many accepted messages of `tag` their actor has seen (marks for log, receiver for the rest)."""
            count = 0
            if "log" in kinds:
                count += sum(1 for ident in read_marks(marks_path) if ident.startswith(tag))
            if kinds - {"log"}:
                count += receiver.summary()["distinct"] - receiver_before
            return count

        receiver_before = receiver.summary()["distinct"]
        warm = Mix(shares, receiver.url, f"{prefix}w")
        warm_sent: dict[int, float] = {}
        load(base + "/messages", 1, warmup, 10.0, body_of=warm.body_of, on_accepted=warm_sent.__setitem__)
        kinds = set(warm.period)
        wait_for(
            lambda: seen_count(warm.tag, kinds) >= len(warm_sent) and all_empty(),
            timeout=30,
            what="the warm-up messages to be processed",
        )
        receiver_before = receiver.summary()["distinct"]
        mix = Mix(shares, receiver.url, f"{prefix}m")
        sent: dict[int, float] = {}
        pids = {"api": api.pid, "worker": worker.process.pid, "sqs_server": server_pid, "proxy": proxy.pid}
        pids["receiver"] = receiver.process.pid
        api_before, worker_before = proxy.counts(api_tag), proxy.counts(worker.tag)
        cpu_before = {role: tree_cpu_seconds(pid) for role, pid in pids.items()}
        started_at = time.monotonic()
        burst = load(base + "/messages", clients, total, time_limit, body_of=mix.body_of, on_accepted=sent.__setitem__)
        load_done_at = time.monotonic()
        deadline = load_done_at + drain_timeout
        error = None
        # Seen first (cheap reads), then the queues (each depth read costs the SQS server CPU).
        while seen_count(mix.tag, kinds) < len(sent) or not all_empty():
            if time.monotonic() > deadline:
                error = f"not done {drain_timeout:.0f} s after the last answer;"
                break
            if worker.process.poll() is not None:
                raise RuntimeError(f"{impl} worker exited while draining:\n{worker.output()[-3000:]}")
            time.sleep(POLL_SECONDS)
        done_at = time.monotonic()
        cpu = {role: tree_cpu_seconds(pid) - cpu_before[role] for role, pid in pids.items()}
        api_requests = diff(proxy.counts(api_tag), api_before)
        worker_requests = diff(proxy.counts(worker.tag), worker_before)
        first_seen = {**{i: t for i, (t, _) in read_marks(marks_path).items()}, **receiver.seen()}
        latencies: dict[str, list[float]] = {kind: [] for kind in kinds}
        accepted_by_type: Counter[str] = Counter()
        unseen = 0
        for n, at in sent.items():
            kind = mix.type_of(n)
            accepted_by_type[kind] += 1
            seen_at = first_seen.get(mix.ident(n))
            if seen_at is None:
                unseen += 1
            else:
                latencies[kind].append((seen_at - at) * 1000)
        tally = receiver.summary()
        return MixRun(
            name,
            impl,
            proxy.rtt_ms,
            dict(shares),
            clients,
            processes,
            threads,
            burst,
            accepted_by_type,
            started_at,
            load_done_at,
            done_at,
            api_requests,
            worker_requests,
            cpu,
            latencies,
            unseen,
            receiver_requests=tally["requests"],
            receiver_duplicates=tally["requests"] - tally["distinct"],
            error=error,
        )
    finally:
        if api is not None:
            Processes.stop(api, timeout=15)
        workers.stop(worker, reaper)


# -- the scenario and its table -------------------------------------------------------------------


@dataclasses.dataclass
class MixFigures:
    """The mix scenario at one round-trip time: ours and stock on the mix, ours on `log` alone."""

    rtt_ms: float
    runs: dict[str, MixRun]

    def _value(self, name: str, read: Any) -> float | None:
        r = self.runs.get(name)
        return read(r) if r is not None else None

    def rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [
            ("msg/s (first POST -> every message done)", lambda r: r.rate),
            ("API accepted msg/s meanwhile", lambda r: r.api_rate),
            ("SQS requests/msg (API + worker)", lambda r: r.requests_per_message),
            ("  of which API requests/msg", lambda r: r.api_requests_per_message),
            ("  of which worker requests/msg", lambda r: r.worker_requests_per_message),
            ("receives/msg (all 3 queues, empty polls too)", lambda r: r.receives_per_message),
            ("msgs/receive", lambda r: r.messages_per_receive),
            ("API cpu ms/msg", lambda r: r.cpu_ms_per_message("api")),
            ("worker cpu ms/msg", lambda r: r.cpu_ms_per_message("worker")),
            ("SQS server cpu ms/msg", lambda r: r.cpu_ms_per_message("sqs_server")),
            ("proxy cpu ms/msg", lambda r: r.cpu_ms_per_message("proxy")),
            ("receiver cpu ms/msg (bench's)", lambda r: r.cpu_ms_per_message("receiver")),
            ("lag s (last 202 -> done)", lambda r: r.lag_seconds),
            ("POST -> 202 p50 ms (every type)", lambda r: percentile(r.load.latencies_ms, 50)),
            ("POST -> 202 p99 ms (every type)", lambda r: percentile(r.load.latencies_ms, 99)),
        ]
        for kind in TYPES:
            rows += [(f"{kind}: POST -> actor p{p} ms", _latency_of(kind, p)) for p in (50, 99)]
        rows += [
            ("accepted msgs", lambda r: float(r.accepted)),
            ("non-202 answers", lambda r: float(r.load.issued - r.accepted)),
            ("accepted, never seen", lambda r: float(r.unseen)),
            ("receiver: repeated POSTs", lambda r: float(r.receiver_duplicates)),
        ]
        return rows

    def render(self) -> str:
        (ours_name, _, _), (stock_name, _, _), *others = RUNS
        headers = [ours_name, stock_name, "ours/stock"]
        for name, _, _ in others:
            headers += [name, f"ours/({name})"]
        body = []
        for figure, read in self.rows():
            values = [self._value(name, read) for name, _, _ in RUNS]
            if all(v is None for v in values):
                continue
            ours, stock, *rest = values
            cells: list[Any] = [figure, ours, stock, _ratio(ours, stock)]
            for other in rest:
                cells += [other, _ratio(ours, other)]
            body.append(cells)
        first = self.runs.get("ours")
        c = (
            f"{first.clients} clients, the shipped worker ({first.processes} x {first.threads}, log marking its starts)"
            if first
            else ""
        )
        title = (
            f"mix at {self.rtt_ms:g} ms per SQS call: a third each of log, webhook, ordered (FIFO, "
            f"{DEFAULT_GROUPS} groups), {c}; stock's ordered is a standard queue (no FIFO in dramatiq-sqs); "
            "'ours log only': ours on log alone; 'ours no FIFO': ours with ordered's third sent as webhook"
        )
        return table(["figure", *headers], body, title)

    def detail_entries(self) -> list[tuple[str, Counter[str], int]]:
        entries = []
        for name, r in self.runs.items():
            entries.append((f"{self.rtt_ms:g} ms mix api {name}", r.api_requests, r.accepted))
            entries.append((f"{self.rtt_ms:g} ms mix worker {name}", r.worker_requests, r.accepted))
        return entries

    def notes(self) -> list[str]:
        return [f"mix {self.rtt_ms:g} ms {name}: {r.error}" for name, r in self.runs.items() if r.error]

    def as_dict(self) -> dict[str, Any]:
        return {"rtt_ms": self.rtt_ms, "runs": {name: r.as_dict() for name, r in self.runs.items()}}


def _latency_of(kind: str, p: float) -> Any:
    """A row's reader: the p-th percentile of POST -> actor for `kind`, None where the run had none of it."""
    return lambda r: r.latency(kind, p) if r.latencies_ms.get(kind) else None


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def scenario(
    procs: Processes,
    reaper: workers.Reaper,
    client: Any,
    proxy: DelayProxy,
    prefix_of: Any,
    config: dict[str, Any],
    *,
    rtt_index: int,
    server_pid: int,
    workdir: Path,
    log: Any,
    failed: Any,
) -> MixFigures:
    """Every run of RUNS at one round-trip time (order alternating with the RTT), one receiver for all."""
    receiver = Receiver(procs)
    runs: dict[str, MixRun] = {}
    try:
        order = RUNS if rtt_index % 2 == 0 else RUNS[::-1]
        for number, (name, impl, shares) in enumerate(order):
            try:
                r = run(
                    procs,
                    reaper,
                    client,
                    proxy,
                    receiver,
                    name,
                    impl,
                    prefix_of(impl, f"m{number}", rtt_index),
                    shares=shares,
                    clients=config["e2e_clients"],
                    total=config["e2e_messages"],
                    time_limit=config["e2e_seconds"],
                    processes=config["e2e_processes"],
                    threads=config["threads"],
                    server_pid=server_pid,
                    workdir=workdir,
                    drain_timeout=config["drain_timeout"],
                )
            except Exception as exc:  # one broken run must not hide the others
                failed(f"mix {proxy.rtt_ms:g} ms {name}", exc)
                continue
            runs[name] = r
            log(
                f"{proxy.rtt_ms:g} ms mix {name:13}: {r.accepted} msgs {dict(r.accepted_by_type)}, {r.rate:,.0f}/s, "
                f"{r.requests_per_message:.3f} SQS requests/msg, lag {r.lag_seconds:.2f} s"
            )
    finally:
        receiver.close()
    return MixFigures(proxy.rtt_ms, runs)


if __name__ == "__main__":
    asyncio.run(_serve(int(sys.argv[1])))
