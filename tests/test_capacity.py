"""The per-process count of free worker threads: what a reserve waits for, and what wakes it."""

from __future__ import annotations

import threading

from queue_manager.sqs.capacity import Capacity
from tests.support import wait_for


class CountingCapacity(Capacity):
    """A Capacity that counts how often a waiting reserve is woken, and how often it is notified
    (counted at once, in the notifying thread: a wake-up follows whenever the woken thread runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.wakeups = 0
        self.notifications = 0
        wait, notify = self._cond.wait, self._cond.notify

        def counted(timeout: float | None = None) -> bool:
            woken = wait(timeout)
            self.wakeups += 1
            return woken

        def counted_notify(n: int = 1) -> None:  # notify_all calls it too
            self.notifications += 1
            notify(n)

        self._cond.wait = counted  # type: ignore[method-assign]
        self._cond.notify = counted_notify  # type: ignore[method-assign]


def _waiting_for(capacity: Capacity) -> list[int]:
    """The free slots each waiting reserve needs (a reserve notes its need, holding the lock, before it waits)."""
    with capacity._cond:
        return list(capacity._waiting._needs)


def _reserve_later(capacity: Capacity, **kwargs: object) -> tuple[threading.Thread, list[int]]:
    """Start `capacity.reserve(**kwargs)` in a thread; return once it waits for free slots."""
    got: list[int] = []
    thread = threading.Thread(target=lambda: got.append(capacity.reserve(**kwargs)), daemon=True)  # type: ignore[arg-type]
    thread.start()
    wait_for(lambda: _waiting_for(capacity), timeout=5, interval=0.001, what="the reserve to wait")
    return thread, got


def test_a_lingering_reserve_takes_every_slot_freed_while_it_lingers() -> None:
    capacity = Capacity()
    capacity.set_threads(10, lookahead=1)
    capacity.take(11)
    thread, got = _reserve_later(capacity, most=10, timeout_seconds=5, linger_seconds=2, whole_thread=True)
    for _ in range(10):
        capacity.release(1)
    thread.join(timeout=5)
    assert got == [10]
    assert capacity.held == 11


def test_a_whole_thread_reserve_does_not_take_the_lookahead_slot_alone() -> None:
    capacity = Capacity()
    capacity.set_threads(10, lookahead=1)
    capacity.take(11)
    thread, got = _reserve_later(capacity, most=10, timeout_seconds=0.3, whole_thread=True)
    capacity.release(1)  # only the lookahead slot is free: no thread is
    thread.join(timeout=5)
    assert got == [0]
    assert capacity.held == 10


def test_releases_short_of_what_a_reserve_needs_do_not_wake_it() -> None:
    capacity = CountingCapacity()
    capacity.set_threads(10, lookahead=0)
    capacity.take(10)
    thread, got = _reserve_later(capacity, most=10, timeout_seconds=5, linger_seconds=5, whole_thread=True)
    assert capacity.wakeups == 0
    capacity.release(1)  # the first free slot: it wakes and starts lingering for ten
    wait_for(lambda: _waiting_for(capacity) == [10], timeout=5, interval=0.001, what="the reserve to linger")
    assert capacity.wakeups == 1
    notified = capacity.notifications
    for _ in range(8):
        capacity.release(1)  # nine free in all: still short of ten
    assert capacity.notifications == notified
    capacity.release(1)
    thread.join(timeout=5)
    assert got == [10]
    # Once for its first slot and once for the tenth: a wake-up by any of the eight between would
    # have been counted before the join returned
    assert capacity.wakeups == 2


def test_the_lookahead_grows_to_a_whole_receive_only_while_a_queue_is_busy() -> None:
    # Given 10 threads, a lookahead of 1, and 10 while busy
    capacity = Capacity()
    capacity.set_threads(10, lookahead=1, busy_lookahead=10)
    assert capacity.total == 11
    # When one of two queues comes back full, then the other too, then both part-full again
    capacity.set_busy("a", True)
    busy_one = capacity.total
    capacity.set_busy("b", True)
    capacity.set_busy("a", False)
    still_busy = capacity.total
    capacity.set_busy("b", False)
    # Then the process holds one receive beyond its threads while any queue is busy, one message otherwise
    assert (busy_one, still_busy, capacity.total) == (20, 20, 11)
    assert capacity.lookahead == 1


def test_a_busy_lookahead_below_the_lookahead_is_the_lookahead() -> None:
    capacity = Capacity()
    capacity.set_threads(4, lookahead=3, busy_lookahead=0)
    capacity.set_busy("a", True)
    assert capacity.total == 7


def test_a_whole_thread_reserve_counts_on_what_finishes_during_a_receive() -> None:
    # Given 10 threads all busy, a lookahead of 10 holding 4 messages, messages finishing every 5 ms
    # and receives taking 20 ms
    capacity = Capacity()
    capacity.set_threads(10, lookahead=10)
    capacity.take(14)
    capacity.finish_interval_seconds = 0.005
    capacity.note_receive(0.1)
    capacity.receive_seconds = 0.02
    # When a busy queue's receive asks for a whole receive
    got = capacity.reserve(10, timeout_seconds=0.5, whole_thread=True)
    # Then it goes now (6 slots free, 4 more free while it is in flight) and asks for all ten
    assert capacity.ahead() == 4
    assert got == 10
    assert capacity.held == 24


def test_without_timings_a_whole_thread_reserve_waits_for_the_whole_receive() -> None:
    capacity = Capacity()
    capacity.set_threads(10, lookahead=10)
    capacity.take(14)
    assert capacity.ahead() == 0
    assert capacity.reserve(10, timeout_seconds=0.05, whole_thread=True) == 0
