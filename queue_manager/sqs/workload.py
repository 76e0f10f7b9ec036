"""What one worker process holds, per queue: messages waiting for a thread, running, backing off, blocked.

SQS sees a received message only as "not visible"; the process that holds it knows why. The
consumer records what it receives, hands back and defers (a retry in place hides the message for
its backoff); a middleware records when a worker thread starts and finishes one. `snapshot()`
turns that into counts, the oldest wait and recent processing times, for /scaling and the gauges.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable

#: Processing times kept per queue for the median: the most recent ones.
RECENT_TIMES = 64

#: How long a message's wait (enqueue to start) still counts towards the oldest wait once it started.
WAIT_WINDOW_SECONDS = 10.0


@dataclasses.dataclass
class _Held:
    queue: str
    #: When it was sent (wall clock, seconds), for a first attempt; None for a retry or redelivery,
    #: whose wait since the send includes a backoff or a crash.
    sent_at: float | None
    #: When a worker thread started it (monotonic), while one runs it.
    started_at: float | None = None
    #: Whether it waits behind the running message of its FIFO group (no thread can take it yet).
    blocked: bool = False


@dataclasses.dataclass(frozen=True)
class QueueLoad:
    """One queue's figures in one process.

    Parameters:
      held: Received and not started, ready for a thread.
      running: Held by a worker thread now.
      backing_off: Failed attempts this process hid for their backoff (retries in place) that
        are not due yet: not work for any thread until then.
      blocked: Received FIFO messages waiting behind the running message of their group: only
        that group's turn frees them, not another thread.
      oldest_wait_seconds: The longest a first attempt held here has waited since it was sent, or
        waited before it started in the last WAIT_WINDOW_SECONDS; None when there is none.
      recent_seconds: The latest processing times (at most RECENT_TIMES), oldest first.
    """

    held: int = 0
    running: int = 0
    backing_off: int = 0
    oldest_wait_seconds: float | None = None
    recent_seconds: tuple[float, ...] = ()
    blocked: int = 0

    @property
    def p50_seconds(self) -> float | None:
        return statistics.median(self.recent_seconds) if self.recent_seconds else None


class Workload:
    """The messages one worker process holds, by receipt, and what it does with them (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        #: Receipt → (queue, when its backoff ends on the monotonic clock).
        self._backing_off: dict[str, tuple[str, float]] = {}
        self._times: dict[str, deque[float]] = {}
        #: (queue, when it started, how long it had waited), for the oldest wait.
        self._waits: deque[tuple[str, float, float]] = deque(maxlen=4 * RECENT_TIMES)
        self._queues: set[str] = set()

    def declare(self, queue: str) -> None:
        """Report this queue even while nothing happens on it."""
        with self._lock:
            self._queues.add(queue)

    def received(self, queue: str, receipt: str, *, sent_at: float | None) -> None:
        """A message is held here, not started (a FIFO retry due again counts too: it leaves its backoff)."""
        with self._lock:
            self._queues.add(queue)
            self._backing_off.pop(receipt, None)
            self._held[receipt] = _Held(queue, sent_at)

    def blocked(self, receipt: str, blocked: bool = True) -> None:
        """A held message waits behind its FIFO group (True), or may go to a thread now (False)."""
        with self._lock:
            held = self._held.get(receipt)
            if held is not None:
                held.blocked = blocked

    def started(self, receipt: str) -> None:
        """A worker thread starts it."""
        now = time.monotonic()
        with self._lock:
            held = self._held.get(receipt)
            if held is None:
                return
            held.started_at = now
            if held.sent_at is not None:
                self._waits.append((held.queue, now, max(time.time() - held.sent_at, 0.0)))

    def finished(self, receipt: str, *, measured: bool = True) -> None:
        """A worker thread is done with it; it stays held until acked, dead-lettered or deferred.

        `measured`: whether its run counts among the processing times (not for a skipped message).
        """
        now = time.monotonic()
        with self._lock:
            held = self._held.get(receipt)
            if held is None or held.started_at is None:
                return
            seconds, held.started_at = now - held.started_at, None
            if measured:
                times = self._times.get(held.queue)
                if times is None:
                    times = self._times[held.queue] = deque(maxlen=RECENT_TIMES)
                times.append(seconds)

    def backing_off(self, receipt: str, seconds: float) -> None:
        """A failed attempt is hidden for its backoff: no longer held for a thread until `seconds` pass."""
        with self._lock:
            held = self._held.pop(receipt, None)
            if held is not None:
                self._backing_off[receipt] = (held.queue, time.monotonic() + max(seconds, 0.0))

    def let_go(self, receipts: Iterable[str]) -> None:
        """Messages this process no longer holds: acknowledged, dead-lettered or handed back."""
        with self._lock:
            for receipt in receipts:
                self._held.pop(receipt, None)
                self._backing_off.pop(receipt, None)

    def running(self) -> int:
        """Messages held by a worker thread now, over every queue."""
        with self._lock:
            return sum(1 for held in self._held.values() if held.started_at is not None)

    def snapshot(self) -> dict[str, QueueLoad]:
        """Each queue's figures now; backoffs that are due are forgotten (SQS shows them as visible again)."""
        now, wall = time.monotonic(), time.time()
        with self._lock:
            for receipt in [r for r, (_, until) in self._backing_off.items() if until <= now]:
                del self._backing_off[receipt]
            # Per queue: held, running, backing off, blocked.
            counts: dict[str, list[int]] = {q: [0, 0, 0, 0] for q in self._queues}
            oldest: dict[str, float] = {}
            for held in self._held.values():
                running = held.started_at is not None
                row = counts.setdefault(held.queue, [0, 0, 0, 0])
                row[1 if running else 3 if held.blocked else 0] += 1
                if not running and held.sent_at is not None:
                    oldest[held.queue] = max(oldest.get(held.queue, 0.0), wall - held.sent_at)
            for queue, _ in self._backing_off.values():
                counts.setdefault(queue, [0, 0, 0, 0])[2] += 1
            for queue, at, waited in self._waits:
                if now - at <= WAIT_WINDOW_SECONDS:
                    oldest[queue] = max(oldest.get(queue, 0.0), waited)
            return {
                queue: QueueLoad(
                    held=row[0],
                    running=row[1],
                    backing_off=row[2],
                    blocked=row[3],
                    oldest_wait_seconds=round(oldest[queue], 3) if queue in oldest else None,
                    recent_seconds=tuple(self._times.get(queue, ())),
                )
                for queue, row in sorted(counts.items())
            }
