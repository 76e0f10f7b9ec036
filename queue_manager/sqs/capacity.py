"""The count of worker threads free to take a message, shared by a process's consumers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Thresholds:
    """Threads waiting on `cond` for a count to reach the least each of them needs.

    `notify` wakes them only once the smallest need is met, not on every change of the count:
    each wake-up costs the woken thread the GIL, and a busy worker changes its counts on every
    message. Call both holding `cond`.
    """

    def __init__(self, cond: threading.Condition) -> None:
        self.cond = cond
        self._needs: list[int] = []

    def wait(
        self, need: int, available: Callable[[], int], deadline: float, stop: Callable[[], bool] = lambda: False
    ) -> bool:
        """Wait until `available()` reaches `need`, `stop()` holds or `deadline` passes; whether it reached it."""
        while available() < need and not stop():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._needs.append(need)
            try:
                self.cond.wait(remaining)
            finally:
                self._needs.remove(need)
        return not stop()

    def notify(self, available: int) -> None:
        """Wake the waiters if `available` meets the smallest need among them."""
        if self._needs and available >= min(self._needs):
            self.cond.notify_all()


class Capacity:
    """Counts messages held by this process against the worker threads that can run them.

    The lookahead (messages held ready beyond the threads) adapts: while any queue of the process
    is busy (its receives come back full) it is `busy_lookahead`, so the next receive overlaps the
    work of the last; otherwise it is `lookahead`, and receives ask only for free threads.
    """

    #: The weight of the newest sample in the completion-rate and receive-time averages.
    SMOOTHING = 0.2

    def __init__(self, total: int = 10) -> None:
        #: The time between two finished messages, and how long a busy receive takes (moving averages).
        self.finish_interval_seconds = 0.0
        self.receive_seconds = 0.0
        self._last_finish = 0.0
        self.threads = total
        self.total = total
        #: Of the total, the slots beyond the threads (messages held ready for the next free thread).
        self.lookahead = 0
        self.idle_lookahead = 0
        self.busy_lookahead = 0
        self.held = 0
        self._busy: set[object] = set()
        self._cond = threading.Condition()
        #: Reserves waiting for free slots: a release wakes them only once the slots they need are free.
        self._waiting = Thresholds(self._cond)

    def set_threads(self, threads: int, lookahead: int = 0, busy_lookahead: int | None = None) -> None:
        """Size the count to a worker's threads plus the messages it may hold ready beyond them.

        `busy_lookahead` (at least `lookahead`; by default the same) applies while a queue is busy.
        """
        with self._cond:
            self.threads = threads
            self.idle_lookahead = lookahead
            self.busy_lookahead = max(lookahead, busy_lookahead if busy_lookahead is not None else lookahead)
            self._resize()

    def set_busy(self, queue: object, busy: bool) -> None:
        """Say whether `queue` is busy (its receives come back full): the lookahead follows."""
        with self._cond:
            if busy == (queue in self._busy):
                return
            if busy:
                self._busy.add(queue)
            else:
                self._busy.discard(queue)
            self._resize()

    def _resize(self) -> None:
        self.lookahead = self.busy_lookahead if self._busy else self.idle_lookahead
        self.total = self.threads + self.lookahead
        self._cond.notify_all()

    def free(self) -> int:
        with self._cond:
            return max(self.total - self.held, 0)

    def note_receive(self, seconds: float) -> None:
        """Record how long a busy receive took, for `ahead`."""
        with self._cond:
            self.receive_seconds += self.SMOOTHING * (seconds - self.receive_seconds)

    def ahead(self) -> int:
        """Slots a receive may count on freeing before it returns: the messages that finish meanwhile.

        Only within the lookahead, so a process never holds more than a receive beyond its threads
        plus what finishes during one (call holding the condition).
        """
        if self.finish_interval_seconds <= 0:
            return 0
        return min(self.lookahead, int(self.receive_seconds / self.finish_interval_seconds))

    def finishing_during_receive(self) -> int:
        """`ahead`, for a consumer sizing its own room (its prefetch) the way `reserve` sizes the slots."""
        with self._cond:
            return self.ahead()

    def reserve(
        self, most: int, *, timeout_seconds: float, linger_seconds: float = 0.0, whole_thread: bool = False
    ) -> int:
        """Wait until a slot is free, then reserve up to `most` slots and return how many.

        After the first slot frees, wait up to `linger_seconds` more for others to free, so
        one receive can fill more threads. With `whole_thread`, wait until a thread is free, not
        only a lookahead slot, or until all of `most` fits in the lookahead: a busy queue's receive
        then waits for work to finish rather than fetching one message ahead between full
        receives, while a lookahead of a whole receive lets the next one overlap the work of the
        last. A whole-thread receive also counts on the slots that free while it is in flight
        (`ahead`), so it goes out early enough that no thread waits for it. Returns 0 on timeout.
        """
        deadline = time.monotonic() + timeout_seconds
        want = min(most, self.total)
        with self._cond:
            ahead = self.ahead() if whole_thread else 0
            first = max(1, min(self.lookahead + 1, want) - ahead) if whole_thread else 1
            if not self._wait_free(first, deadline):
                return 0
            if linger_seconds > 0:
                self._wait_free(max(1, want - ahead), time.monotonic() + linger_seconds)
            n = min(most, self.total - self.held + ahead)
            self.held += n
            return n

    def _wait_free(self, need: int, deadline: float) -> bool:
        """Wait (holding the condition) until `need` slots are free or `deadline`; whether they are."""
        return self._waiting.wait(need, lambda: self.total - self.held, deadline)

    def take(self, n: int) -> None:
        """Count `n` messages as held even if no thread is free (bounded over-commit)."""
        with self._cond:
            self.held += n

    def finish(self, n: int = 1) -> None:
        """Release the slots of `n` messages a thread has finished (acked or nacked), timing them for `ahead`."""
        with self._cond:
            now = time.monotonic()
            if self._last_finish:
                interval = min((now - self._last_finish) / n, 1.0)  # an idle spell is not a rate
                self.finish_interval_seconds += self.SMOOTHING * (interval - self.finish_interval_seconds)
            self._last_finish = now
        self.release(n)

    def release(self, n: int = 1) -> None:
        with self._cond:
            self.held = max(self.held - n, 0)
            self._waiting.notify(self.total - self.held)
