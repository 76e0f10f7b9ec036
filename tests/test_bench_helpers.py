"""The bench's helpers: the open-loop scheduler, the percentile, the marks file, the load generator's client."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from bench.api_load import Load, load, percentile
from bench.http_post import PostPool
from bench.latency import FixedRate, open_loop, read_marks, read_receipts, schedule


def test_schedule_sends_at_a_steady_rate_for_a_bounded_time() -> None:
    # Given 200 msg/s for 1.5 s
    offsets = schedule(200, 1.5)

    # Then there are 300 sends, 5 ms apart, from 0
    assert len(offsets) == 300
    assert offsets[0] == 0.0
    assert all(abs((b - a) - 0.005) < 1e-9 for a, b in itertools.pairwise(offsets))
    # And nothing is scheduled for no rate or no time
    assert schedule(0, 5) == [] and schedule(200, 0) == []


async def test_open_loop_sends_on_time_while_earlier_sends_are_still_waiting() -> None:
    # Given 20 sends at 100/s, none of which answers until the last one has started
    started: list[float] = []
    all_started = asyncio.Event()
    clock = time.monotonic()

    async def held_send(i: int) -> None:
        started.append(time.monotonic() - clock)
        if len(started) == 20:
            all_started.set()
        await all_started.wait()

    # When the open loop runs (a loop that waited for each answer would never start the second send)
    lateness = await asyncio.wait_for(open_loop(schedule(100, 0.2), held_send), timeout=10)

    # Then every send started, in order, none before its time, and the lateness it reports is each
    # start's distance from its slot (bounded loosely: a shared CI core may be late, never by seconds)
    assert len(started) == 20 and len(lateness) == 20
    assert started == sorted(started)
    assert all(s >= i * 0.01 - 0.002 for i, s in enumerate(started))
    assert all(0.0 <= late < 1.0 for late in lateness)
    # And the loop returned only once every send had answered
    assert all_started.is_set()


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) != percentile([], 50)  # NaN


def test_read_marks_keeps_each_id_s_first_start(tmp_path: Path) -> None:
    # Given a marks file with a duplicate start (a redelivery) and a torn line
    path = tmp_path / "marks.txt"
    path.write_text("10.5 l1 100\n11.0 l2 101\n12.0 l1 101\n13.0 l3\n")

    # Then each id keeps its first start and its process, and the torn line is skipped
    assert read_marks(path) == {"l1": (10.5, "100"), "l2": (11.0, "101")}
    assert read_marks(tmp_path / "missing.txt") == {}


def test_read_receipts_gives_the_receive_of_each_id_s_first_start(tmp_path: Path) -> None:
    # Given marks where the worker noted when the receive returned and when SQS accepted the message
    # (two more fields), on some lines only
    path = tmp_path / "marks.txt"
    path.write_text("10.5 l1 100 10.25 10.0\n11.0 l2 101\n12.0 l1 101 11.5 11.0\n13.0 l3 100 12.75 12.5\n")

    # Then each id's first start keeps its times, and an id marked without them has none
    assert read_receipts(path) == {"l1": (10.25, 10.0), "l3": (12.75, 12.5)}
    assert read_marks(path) == {"l1": (10.5, "100"), "l2": (11.0, "101"), "l3": (13.0, "100")}


def test_a_fixed_rate_run_counts_its_latency_in_the_proxys_delay_and_in_its_own_sends_round_trips() -> None:
    # Given a run at 15 ms whose median message started 45 ms after its POST, and whose sends took 25 ms
    run = FixedRate(
        "ours", 15.0, 200, 5, 3, 3, Counter({202: 3}), Counter(), [40.0, 45.0, 60.0], [], [], 0, send_ms_mean=25.0
    )

    # Then its median is three of the proxy's delays and 1.8 of its sends' own round trips
    assert run.round_trips(50) == 3.0
    assert run.send_round_trips(50) == 1.8
    # And a run that saw no send (stock: no such metric) has no such figure
    assert math.isnan(dataclasses.replace(run, send_ms_mean=math.nan).send_round_trips(50))


@dataclasses.dataclass
class _Server:
    """A real aiohttp server on a free loopback port that answers by the request's number (its body's `n`)."""

    url: str
    bodies: list[bytes] = dataclasses.field(default_factory=list)
    peers: set[object] = dataclasses.field(default_factory=set)  # one (host, port) per connection it saw


_Answer = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


@contextlib.asynccontextmanager
async def _serving(answer: _Answer) -> AsyncIterator[_Server]:
    server = _Server("")

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.content_type == "application/json"
        body = await request.read()
        server.bodies.append(body)
        server.peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        return await answer(request, json.loads(body)["n"])

    app = web.Application()
    app.router.add_post("/messages", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/messages"
    try:
        yield server
    finally:
        await runner.cleanup()


def _numbered(n: int) -> bytes:
    return json.dumps({"type": "log", "payload": {"message": "bench"}, "n": n}).encode()


async def _run_load(url: str, clients: int, total: int) -> tuple[Load, dict[int, float]]:
    """The bench's load generator (its own event loop, in a thread) against `url`; what it got and its 202s."""
    accepted: dict[int, float] = {}
    result = await asyncio.to_thread(
        load, url, clients, total, 60.0, body_of=_numbered, on_accepted=accepted.__setitem__
    )
    return result, accepted


async def test_load_counts_every_answer_by_status_and_reuses_its_connections() -> None:
    # Given a server that answers 400 to every 5th request, 503 to every 7th and 202 to the rest
    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=400 if n % 5 == 0 else 503 if n % 7 == 0 else 202, text="{}")

    async with _serving(answer) as server:
        # When 4 clients send 200 requests
        before = time.time()
        result, accepted = await _run_load(server.url, 4, 200)

    # Then every request reached the server once, each with its own body
    assert sorted(server.bodies) == sorted(_numbered(n) for n in range(200))
    # And every answer is counted by status, the 202s as accepted with a latency each
    wanted = {n for n in range(200) if n % 5 and n % 7}
    assert result.issued == 200 and not result.errors
    assert result.statuses == Counter({202: len(wanted), 400: 40, 503: 200 - len(wanted) - 40})
    assert result.accepted == len(result.latencies_ms) == len(wanted)
    # And on_accepted got each accepted request's number and when it was sent
    assert accepted.keys() == wanted
    assert all(before <= sent <= time.time() for sent in accepted.values())
    # And the 4 clients kept their connections: the server saw no more than 4
    assert 1 <= len(server.peers) <= 4


async def test_load_reconnects_when_the_server_closes_after_each_answer() -> None:
    # Given a server that closes the connection after every answer (and says so: Connection: close)
    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        response = web.Response(status=202)
        response.force_close()
        return response

    async with _serving(answer) as server:
        result, accepted = await _run_load(server.url, 3, 30)

    # Then every request was answered, each on a connection of its own
    assert result.accepted == 30 and not result.errors and accepted.keys() == set(range(30))
    assert len(server.bodies) == 30 and len(server.peers) == 30


async def test_load_reads_chunked_answers() -> None:
    # Given a server that answers in chunks
    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        response = web.StreamResponse(status=202)
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b'{"id": ')
        await response.write(b'"%d"}' % n)
        await response.write_eof()
        return response

    async with _serving(answer) as server:
        result, _ = await _run_load(server.url, 2, 40)

    # Then every answer was read whole (a byte left unread would spoil the next answer on that connection)
    assert result.accepted == 40 and not result.errors
    assert len(server.peers) <= 2


async def test_load_counts_a_connection_dropped_mid_answer_as_an_error_and_goes_on() -> None:
    # Given a server that drops the connection halfway through its answer to request 3
    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        if n != 3:
            return web.Response(status=202)
        response = web.StreamResponse(status=202)
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()
        return response

    async with _serving(answer) as server:
        result, accepted = await _run_load(server.url, 2, 20)

    # Then that request is one error, and the others were all accepted (its client reconnected)
    assert result.issued == 20
    assert result.errors == Counter({"IncompleteReadError": 1})
    assert result.accepted == 19 and accepted.keys() == set(range(20)) - {3}
    assert len(server.peers) == 3


async def test_a_pool_opens_a_connection_per_post_in_flight_and_reuses_them() -> None:
    # Given a server that holds every answer until 5 requests are waiting at once
    waiting = asyncio.Event()
    arrived = 0

    async def answer(request: web.Request, n: int) -> web.StreamResponse:
        nonlocal arrived
        arrived += 1
        if arrived == 5:
            waiting.set()
        await waiting.wait()
        return web.Response(status=202 if n else 400)

    async with _serving(answer) as server:
        pool = PostPool(server.url)
        try:
            # When 5 POSTs go at once (none can be answered before the fifth arrives), then 5 more, one by one
            first = await asyncio.wait_for(asyncio.gather(*(pool.post(_numbered(n)) for n in range(5))), timeout=10)
            then = [await pool.post(_numbered(n)) for n in range(5, 10)]
        finally:
            pool.close()

    # Then each got its answer, the first 5 on 5 connections, and the next ones on those same connections
    assert first == [400, 202, 202, 202, 202] and then == [202] * 5
    assert pool.connects == 5 and len(server.peers) == 5


def test_status_cost_pools_its_pairs_of_runs() -> None:
    from types import SimpleNamespace

    from bench.status import StatusCost

    def run(accepted: int, seconds: float, cpu_seconds: float) -> SimpleNamespace:
        return SimpleNamespace(
            rtt_ms=15.0,
            accepted=accepted,
            rate=accepted / seconds,
            api_cpu_seconds=cpu_seconds / 2,
            worker_cpu_seconds=cpu_seconds / 2,
        )

    # Given two pairs of runs, status on against off: the first pair even, the second 0.8x (a noisy pair)
    cost = StatusCost(
        ons=[run(3000, 6.0, 6.0), run(3000, 7.5, 6.6)],
        offs=[run(3000, 6.0, 6.0), run(3000, 6.0, 6.0)],
        store_writes=60,
        messages=3000,
        idle_writes=0,
    )
    # Then the ratios are those of the runs together (6000 messages in 13.5 s against 12 s; 12.6 against 12 s of CPU)
    assert abs(cost.rate_ratio - 12.0 / 13.5) < 1e-9
    assert abs(cost.cpu_ratio - 12.6 / 12.0) < 1e-9
    # And the pooled throughput (0.89x) misses its target while neither the CPU nor the idle writes do
    assert cost.missed() == ["status throughput 0.89x of off (>= 0.9)"]
    assert "each pair: 1.00x, 0.80x" in cost.lines()[0]
