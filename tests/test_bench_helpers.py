"""The bench's pure helpers: the open-loop scheduler, the percentile, the marks file."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import time
from collections import Counter
from pathlib import Path

from bench.api_load import percentile
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
