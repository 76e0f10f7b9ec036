"""The parts of a quick worker stop that need no server: the work queue's waits, and what they read of Dramatiq.

The stops themselves, with real `dramatiq` processes, are in tests/test_stops.py.
"""

from __future__ import annotations

import signal
import threading
import time
from queue import Empty

import dramatiq.cli
import pytest

from queue_manager.sqs import quickstop
from queue_manager.sqs.quickstop import StoppingWorkQueue


def timed_get(queue: StoppingWorkQueue, timeout: float) -> tuple[object, float]:
    """What a get brought (Empty if nothing) and the seconds it took."""
    started = time.monotonic()
    try:
        item: object = queue.get(timeout=timeout)
    except Empty:
        item = Empty
    return item, time.monotonic() - started


def test_an_idle_wait_lasts_its_timeout_until_the_worker_stops() -> None:
    # Given the queue of a running worker
    queue = StoppingWorkQueue()
    # When a thread waits for work on an empty queue
    item, took = timed_get(queue, 0.3)
    # Then it waits its whole timeout, as Dramatiq's queue does (no more wake-ups while idle)
    assert item is Empty and took >= 0.29


def test_the_stop_ends_a_wait_under_way_and_shortens_the_next() -> None:
    # Given a thread waiting 5 s for work
    queue = StoppingWorkQueue()
    outcome: list[tuple[object, float]] = []
    waiter = threading.Thread(target=lambda: outcome.append(timed_get(queue, 5.0)))
    waiter.start()
    time.sleep(0.1)
    # When the worker stops
    queue.stop_waiting()
    waiter.join(timeout=5)
    # Then the wait ends at once, empty, and later waits are short too
    assert outcome and outcome[0][0] is Empty and outcome[0][1] < 1.0, outcome
    item, took = timed_get(queue, 5.0)
    assert item is Empty and took < 1.0


def test_a_waiting_thread_gets_work_put_later_and_a_stopping_queue_still_hands_out_in_order() -> None:
    # Given a thread waiting for work
    queue = StoppingWorkQueue()
    got: list[tuple[object, float]] = []
    waiter = threading.Thread(target=lambda: got.append(timed_get(queue, 5.0)))
    waiter.start()
    time.sleep(0.1)
    # When work is put, it gets it at once
    queue.put((3, "c"))
    waiter.join(timeout=5)
    assert got and got[0][0] == (3, "c") and got[0][1] < 1.0, got
    # And a stopping queue hands out what it holds, lowest first, without waiting
    queue.stop_waiting()
    queue.put((2, "b"))
    queue.put((1, "a"))
    assert queue.get(timeout=1) == (1, "a")
    assert queue.get(timeout=1) == (2, "b")


def test_the_stop_signal_handler_is_chained_only_in_a_dramatiq_worker_process() -> None:
    # Given the handlers of this (pytest) process, which are not the CLI's worker handlers
    before = {s: signal.getsignal(s) for s in quickstop.STOP_SIGNALS}
    # When a worker boots here
    chained = quickstop.chain_signal_handlers(object())
    # Then nothing changes
    assert chained is False
    assert {s: signal.getsignal(s) for s in quickstop.STOP_SIGNALS} == before


def test_the_dramatiq_cli_still_has_what_the_quick_stop_reads() -> None:
    # The quick stop recognises the CLI's worker loop by these names; if an upgrade renames them, a
    # stop falls back to the CLI's own loop (slower, still correct) and this test says why.
    code = dramatiq.cli.worker_process.__code__
    names = set(code.co_varnames) | set(code.co_cellvars)
    assert {"worker", "broker", "args", "logging_pipe", "running"} <= names
    parser = dramatiq.cli.make_argument_parser()
    assert isinstance(parser.parse_args(["actors"]).worker_shutdown_timeout, int)
    termhandler = [c for c in code.co_consts if getattr(c, "co_name", None) == "termhandler"]
    assert termhandler, "the worker process's signal handler is no longer `termhandler`"


@pytest.mark.parametrize("value", [None, object()])
def test_a_worker_without_dramatiq_s_queue_is_left_alone(value: object) -> None:
    class Bare:
        work_queue = value

    bare = Bare()
    quickstop.use_stopping_work_queue(bare)
    quickstop.stop_waiting(bare)
    assert bare.work_queue is value
