"""When a partial batch waits: the adaptive send linger and receive gather (queue_manager/sqs/pacing.py).

The rules are pure and take the clock from the caller, so most tests here give them exact times. The
sender's tests run the real batcher against the real server, with SQS's answers held back (a slow SQS).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dramatiq
import pytest

from api.sender import Sender
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.pacing import ArrivalRate, Gathering, Linger, hold_seconds
from queue_manager.sqs.sending import SendResult
from tests.support import eventually

# -- the estimators ------------------------------------------------------------------------------


def test_a_steady_stream_s_rate_is_its_rate() -> None:
    # Given 200 arrivals a second for two seconds (ten windows)
    rate = ArrivalRate(0.1)
    for i in range(400):
        rate.note(i / 200)
    # Then the rate reads 200 a second, within the estimator's ripple
    assert rate.per_second(399 / 200) == pytest.approx(200, rel=0.03)


def test_a_rate_decays_to_nothing_in_silence_and_counts_a_burst_by_its_size() -> None:
    rate = ArrivalRate(0.1)
    assert rate.per_second(0.0) == 0.0
    # Given a burst of ten at once
    rate.note(1.0, 10)
    # Then it weighs as ten arrivals in the window, and silence decays it (e^-1 per window)
    assert rate.per_second(1.0) == pytest.approx(100)
    assert rate.per_second(1.1) == pytest.approx(100 / math.e)
    assert rate.per_second(2.0) < 0.01
    # And a clock read out of order never raises the rate
    assert rate.per_second(0.5) == pytest.approx(100)
    with pytest.raises(ValueError, match="window_seconds"):
        ArrivalRate(0)


def test_a_partial_batch_holds_only_as_long_as_the_rate_takes_to_fill_it_within_its_bound() -> None:
    # 4 missing at 200/s: 20 ms, within 50 ms
    assert hold_seconds(4, 200, 0.05) == pytest.approx(0.02)
    # 10 missing at 100/s: 100 ms, beyond 50 ms: go now
    assert hold_seconds(10, 100, 0.05) == 0.0
    # Nothing missing, no arrivals, or no time to wait: go now
    assert hold_seconds(0, 1000, 0.05) == 0.0
    assert hold_seconds(3, 0, 0.05) == 0.0
    assert hold_seconds(3, 1000, 0) == 0.0


# -- the send linger -----------------------------------------------------------------------------


def _linger_at(rate_per_second: float, *, most: float = 0.02) -> tuple[Linger, float]:
    """A queue's linger after a second of arrivals at `rate_per_second`, and the time of the last."""
    linger = Linger(most)
    now = 0.0
    for i in range(int(rate_per_second)):
        now = i / rate_per_second
        linger.arrived(now)
    return linger, now


def test_at_200_a_second_a_partial_send_waits_for_the_batch_in_flight() -> None:
    # Given 200 messages a second (5 ms apart) and a 20 ms linger: four join a batch meanwhile
    linger, now = _linger_at(200)
    # Then a partial batch waits; a full one never does
    assert linger.worth_waiting(now, ready=1, max_entries=10)
    assert linger.worth_waiting(now, ready=9, max_entries=10)
    assert not linger.worth_waiting(now, ready=10, max_entries=10)


def test_at_a_trickle_a_send_goes_at_once_beside_the_batch_in_flight() -> None:
    # Given 30 messages a second (33 ms apart) and a 20 ms linger: waiting brings no company
    linger, now = _linger_at(30)
    # Then it goes at once
    assert not linger.worth_waiting(now, ready=1, max_entries=10)
    # And after a pause a burst is seen at its second message: it waits
    linger.arrived(2.0)
    assert not linger.worth_waiting(2.0, ready=1, max_entries=10)
    linger.arrived(2.0)
    assert linger.worth_waiting(2.0, ready=2, max_entries=10)


def test_one_slow_gap_in_a_stream_does_not_send_its_message_alone() -> None:
    # Given 1,000 messages a second, then one that comes 30 ms after the one before (the host was busy)
    linger, now = _linger_at(1000)
    linger.arrived(now + 0.03)
    # Then the rate still says company comes within the linger: it waits
    assert linger.worth_waiting(now + 0.03, ready=1, max_entries=10)


def test_a_send_waits_only_for_company_within_the_linger() -> None:
    # Given messages 5 ms apart but a 1 ms linger: they would not join in time
    linger, now = _linger_at(200, most=0.001)
    assert not linger.worth_waiting(now, ready=1, max_entries=10)
    # And a linger of 0 never waits
    linger, now = _linger_at(2000, most=0.0)
    assert not linger.worth_waiting(now, ready=1, max_entries=10)


# -- the receive gather --------------------------------------------------------------------------


def _gathering_at(rate_per_second: float, *, window: float = 0.05, each: int = 3) -> tuple[Gathering, float]:
    """A consumer's gathering after receives of `each` messages at `rate_per_second` for two seconds."""
    gathering = Gathering(window)
    step = each / rate_per_second
    now = 0.0
    for i in range(int(2 / step)):
        now = i * step
        gathering.after_receive(now, each, 10)
    return gathering, now


def test_at_100_a_second_a_part_full_receive_is_followed_by_the_next_at_once() -> None:
    # Given a process receiving 100 messages a second: a receive of 10 would take 100 ms to fill
    gathering, now = _gathering_at(100)
    # Then a part-full receive does not hold the next within a 50 ms gather window
    assert gathering.after_receive(now + 0.03, 3, 10) == 0.0


def test_at_400_a_second_a_part_full_receive_gathers_until_a_receive_would_be_full() -> None:
    # Given a process receiving 400 messages a second: ten arrive in 25 ms
    gathering, now = _gathering_at(400)
    wait = gathering.after_receive(now + 0.0075, 3, 10)
    # Then the next receive waits about as long as ten take to arrive, within the 50 ms window
    assert wait == pytest.approx(0.025, rel=0.1)
    assert wait <= 0.05


def test_full_and_empty_receives_never_gather_and_a_zero_window_turns_gathering_off() -> None:
    gathering, now = _gathering_at(2000)
    assert gathering.after_receive(now + 0.001, 10, 10) == 0.0  # a backlog: go on at once
    assert gathering.after_receive(now + 0.002, 0, 10) == 0.0  # nothing came: the long poll waits at SQS
    off, now = _gathering_at(2000, window=0.0)
    assert off.after_receive(now + 0.001, 3, 10) == 0.0


# -- the sender, on a real broker with SQS's answers held back ------------------------------------


class HeldAnswers:
    """Wraps a broker's `send_entries` so that each call waits until `answer` is set (a slow SQS), and
    records each call's size as it starts."""

    def __init__(self, broker: QMBroker) -> None:
        self.original = broker.send_entries
        self.answer = threading.Event()
        self.sizes: list[int] = []
        self.lock = threading.Lock()
        broker.send_entries = self.send_entries  # type: ignore[method-assign]

    def send_entries(self, queue_name: str, entries: list[dict[str, Any]]) -> list[SendResult]:
        with self.lock:
            self.sizes.append(len(entries))
        self.answer.wait(10)
        return self.original(queue_name, entries)


@pytest.fixture
def lane(broker: Callable[..., QMBroker]) -> QMBroker:
    qm = broker()
    qm.declare_queue("lane")
    qm.ensure_queue("lane")
    return qm


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=16)
    yield pool
    pool.shutdown(wait=True)


def _entry(broker: QMBroker, n: int) -> dict[str, Any]:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="lane", actor_name="lane", args=(n,), kwargs={}, options={}
    )
    return broker.build_entry(message, None)


async def _answered_once(sender: Sender, broker: QMBroker, held: HeldAnswers) -> None:
    """One send answered; then answers are held back again."""
    held.answer.set()
    await sender.send("lane", _entry(broker, 0))
    held.answer.clear()


async def test_a_lone_message_goes_at_once_beside_a_batch_in_flight(
    lane: QMBroker, executor: ThreadPoolExecutor
) -> None:
    # Given a sender whose batch is in flight (SQS holding its answer), at a trickle
    held = HeldAnswers(lane)
    sender = Sender(lane, executor, linger_seconds=0.02)
    await _answered_once(sender, lane, held)
    first = sender.submit("lane", _entry(lane, 1))
    await eventually(lambda: held.sizes == [1, 1], timeout=5, what="the first batch in flight")
    # When a second message arrives before that batch is answered, but further apart than the linger
    await asyncio.sleep(0.05)
    second = sender.submit("lane", _entry(lane, 2))
    # Then it is sent at once, beside it, rather than waiting for company that is not coming
    await eventually(lambda: held.sizes == [1, 1, 1], timeout=5, what="the second message sent at once")
    held.answer.set()
    assert all(r.ok for r in await asyncio.gather(first, second))


async def test_a_stream_waits_for_the_batch_in_flight_and_leaves_in_full_batches(
    lane: QMBroker, executor: ThreadPoolExecutor
) -> None:
    # Given a sender whose SQS answers are held back, and 45 messages arriving at once
    # (a long linger, so a busy test host's pauses between two arrivals are well within it)
    held = HeldAnswers(lane)
    sender = Sender(lane, executor, linger_seconds=0.5)
    await _answered_once(sender, lane, held)
    entries = [_entry(lane, n) for n in range(1, 46)]
    futures = [sender.submit("lane", e) for e in entries]
    # Then the first goes at once and the rest, closer together than the linger, wait for the batch
    # in flight and leave ten at a time
    await eventually(lambda: held.sizes.count(10) == 4, timeout=5, what="full batches")
    assert held.sizes[:6] == [1, 1, 10, 10, 10, 10]  # the warm-up, the first, four full
    # And the last four go once SQS answers, and every message is accepted
    held.answer.set()
    results = await asyncio.gather(*futures)
    assert all(r.ok for r in results)
    assert held.sizes == [1, 1, 10, 10, 10, 10, 4]
