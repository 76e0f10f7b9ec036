"""StatusWriter: status events buffered in memory and written by one background thread, best effort.

`add` never blocks and never raises: the API's 202 and the worker's ack never wait for the store.
A thread flushes the buffer every interval (the worker's ack flush interval, so a status write costs
at most one store request per interval, like the acks) or as soon as a whole batch waits, one
`write` call per batch of at most the backend's `max_batch_events` (25 for DynamoDB's
BatchWriteItem), and once more on `close`.

What cannot be written is dropped, never retried into an unbounded backlog: a full buffer drops the
new event, a failed write drops its batch. Each outcome is counted per event (`written`, `dropped`
for a full buffer, `failed` for a store error) through `on_outcome` (the Prometheus counter
`qm_status_writes_total{outcome}`). The ids of messages whose events were dropped are remembered
(a bounded set): `missed(id)` tells this process's reader at once, and once the store takes writes
again the writer stores a `stale` marker for each, so every reader's answer says `"stale": true`.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

from queue_manager.state.base import STALE, StatusEvent, StatusEvents

logger = logging.getLogger(__name__)

#: The batch when the backend does not say (DynamoDB's BatchWriteItem takes 25 items).
DEFAULT_BATCH_EVENTS: Final = 25

#: The most message ids remembered as stale before their markers are written.
MAX_STALE_IDS: Final = 10_000

#: The outcomes counted per event.
OUTCOMES: Final = ("written", "dropped", "failed")

#: At most one log line per this many seconds about failing writes.
LOG_INTERVAL_SECONDS: Final = 30.0


class StatusWriter:
    """Buffers status events and writes them in batches from a thread of its own.

    Parameters:
      store: The backend. It is first called at the first flush, on the writer's thread, which starts
        at the first event: an unused writer (the API's broker never processes a message) costs nothing.
      flush_interval_seconds: The longest an event waits in the buffer.
      max_buffered: Events held at most; beyond, new ones are dropped and counted.
      on_outcome: Called with (outcome, number of events) for every flush and drop.
      on_request: Called once per `write` call made to the store (with SQLite, one commit).
    """

    def __init__(
        self,
        store: StatusEvents,
        *,
        flush_interval_seconds: float,
        max_buffered: int,
        on_outcome: Callable[[str, int], None] | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.flush_interval_seconds = flush_interval_seconds
        self.max_buffered = max_buffered
        self.on_outcome = on_outcome
        self.on_request = on_request
        #: `write` calls made to the store, successful or not.
        self.requests = 0
        self.store = store
        self.batch_events = max(1, int(getattr(store, "max_batch_events", DEFAULT_BATCH_EVENTS)))
        self._buffer: collections.deque[StatusEvent] = collections.deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closing = False
        self._closed = False
        self._writing = False  # a batch has left the buffer and is being written
        self._stale: dict[str, None] = {}  # insertion-ordered set of ids whose events were dropped
        self._marked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._last_log = 0.0
        #: Events by outcome, as counted (for tests and the benchmark).
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def add(self, event: StatusEvent) -> None:
        """Buffer one event for the next flush; drops it (counted) when the buffer is full or the writer closed."""
        with self._cond:
            if self._pid != os.getpid():  # a forked child: the parent's thread is not here
                self._reset_after_fork()
            if self._closed or len(self._buffer) >= self.max_buffered:
                self._drop([event])
                return
            self._buffer.append(event)
            if self._thread is None:
                self._start()
            elif len(self._buffer) >= self.batch_events:
                self._cond.notify()

    def missed(self, message_id: str) -> bool:
        """Whether this writer dropped events of the message (its status may be behind)."""
        with self._cond:
            return message_id in self._stale or message_id in self._marked

    def flush(self, timeout: float = 10.0) -> None:
        """Write what is buffered now and wait for it (at most `timeout` seconds)."""
        with self._cond:
            if self._thread is None or not (self._buffer or self._writing):
                return
            self._cond.notify_all()
            deadline = time.monotonic() + timeout
            while (self._buffer or self._writing) and time.monotonic() < deadline:
                self._cond.wait(0.01)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is buffered, then stop the thread (waits at most `timeout` seconds)."""
        with self._cond:
            if self._closed:
                return
            self._closing = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            self._closed = True
            left = list(self._buffer)
            self._buffer.clear()
            if left:
                self._drop(left)
        try:
            self.store.close()
        except Exception:  # closing must not fail a shutdown
            logger.exception("Could not close the status store.")

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="qm-status-writer", daemon=True)
        self._thread.start()

    def _reset_after_fork(self) -> None:
        self._pid = os.getpid()
        self._thread = None
        self._buffer.clear()
        self._cond = threading.Condition()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closing and len(self._buffer) < self.batch_events:
                    self._cond.wait(self.flush_interval_seconds)
                if not self._buffer and not self._stale:
                    if self._closing:
                        return
                    continue
                batch = [self._buffer.popleft() for _ in range(min(self.batch_events, len(self._buffer)))]
                markers = self._markers(len(batch))
                last = self._closing and not self._buffer
                self._writing = True
            self._write(batch, markers)
            with self._cond:
                self._writing = False
                self._cond.notify_all()  # flush() waiters
            if last:
                return

    def _markers(self, batch_size: int) -> list[StatusEvent]:
        """Stale markers to write with the next batch, as room allows (called under the lock)."""
        room = self.batch_events - batch_size
        markers: list[StatusEvent] = []
        now = time.time()
        while self._stale and len(markers) < room:
            message_id = next(iter(self._stale))
            del self._stale[message_id]
            markers.append(StatusEvent(message_id, STALE, now, key=f"stale#{now:017.6f}"))
        return markers

    def _write(self, batch: list[StatusEvent], markers: list[StatusEvent]) -> None:
        self.requests += 1
        if self.on_request is not None:
            try:
                self.on_request()
            except Exception:  # a metric must never break the writer
                logger.exception("Could not count a status store request.")
        try:
            self.store.write(batch + markers)
        except Exception as exc:  # StoreUnavailable, or a backend's bug: never let it stop the thread
            with self._cond:
                self._count("failed", len(batch))
                self._remember(e.message_id for e in batch + markers)
            now = time.monotonic()
            if now - self._last_log >= LOG_INTERVAL_SECONDS:
                self._last_log = now
                logger.warning("Could not write %d status event(s); they are dropped: %s.", len(batch), exc)
            return
        with self._cond:
            self._count("written", len(batch))
            for marker in markers:
                self._marked[marker.message_id] = None
                if len(self._marked) > MAX_STALE_IDS:
                    self._marked.popitem(last=False)

    def _drop(self, events: list[StatusEvent]) -> None:
        """Count dropped events and remember their messages (called under the lock)."""
        self._count("dropped", len(events))
        self._remember(e.message_id for e in events)

    def _remember(self, message_ids: Iterable[str]) -> None:
        for message_id in message_ids:
            if message_id in self._stale:
                continue
            if len(self._stale) >= MAX_STALE_IDS:
                # Full: the oldest id goes unmarked (its answer may then not say stale).
                del self._stale[next(iter(self._stale))]
            self._stale[message_id] = None

    def _count(self, outcome: str, n: int) -> None:
        if n <= 0:
            return
        self.counts[outcome] += n
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome, n)
            except Exception:  # a metric must never break the writer
                logger.exception("Could not count status writes.")
