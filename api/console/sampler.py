"""The console's shared depth poller: one GetQueueAttributes per queue per interval, whatever the viewers.

Every open console tab polls `/console/overview`; they all read this sampler's last sample, and only
the sampler calls SQS: one `GetQueueAttributes` per queue and dead-letter queue per interval
(`QM_CONSOLE_SAMPLE_SECONDS`, 2 s), and only while someone watches (a request in the last
WATCH_SECONDS). With no viewer it makes no request at all. It keeps a ring of the last
WINDOW_SECONDS (15 minutes) of samples per type for the console's chart, in this API process's
memory and, given a path (in QM_STATE_DIR), on disk across a restart.

Rates: messages in per second are those this API process sent and SQS accepted (the Sender tells
it); messages out per second (processed or dead-lettered) are what came in less what the queue
grew by, from the depth deltas. Behind several API processes each counts its own sends, so a
process's rates are its share of the input; a redrive's messages are not counted in.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from aiohttp import web

from queue_manager.reports import ReportStore
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.errors import logged, public

logger = logging.getLogger(__name__)

#: How much history the chart shows.
WINDOW_SECONDS = 15 * 60

#: How long after its last request a viewer still counts as watching.
WATCH_SECONDS = 30.0

#: The span rates are measured over (the newest sample against the newest one at least this old).
RATE_SPAN_SECONDS = 10.0

#: How long a viewer that has the newest sample waits for the next one, in intervals.
WAIT_FOR_NEWER_INTERVALS = 3

#: Samples further apart than this many intervals are a gap (nobody watched): no rate across it.
GAP_INTERVALS = 3


@dataclasses.dataclass(frozen=True)
class Point:
    """One sample of one type: its queue's and dead-letter queue's counts, and the sends counted so far."""

    at: float
    queue: dict[str, int]
    dead_letter: dict[str, int]
    sent: int


def _total(counts: dict[str, int]) -> int:
    return counts.get("visible", 0) + counts.get("in_flight", 0) + counts.get("delayed", 0)


def _row(p: Point) -> list[float]:
    """A chart point: at, visible, in flight, delayed, dead letters visible."""
    return [
        round(p.at, 3),
        p.queue.get("visible", 0),
        p.queue.get("in_flight", 0),
        p.queue.get("delayed", 0),
        p.dead_letter.get("visible", 0),
    ]


class DepthSampler:
    """Sample every type's depths while watched, keep 15 minutes of them, and answer every viewer from them.

    Parameters:
      broker: The API's broker (its client and queue URLs).
      executor: Where the blocking SQS calls run.
      types: The message types.
      interval_seconds: The time between samples.
      reports: The worker reports (the oldest wait), or None.
      history_path: Where the history is kept across a restart (QM_STATE_DIR), or None.
    """

    def __init__(
        self,
        broker: QMBroker,
        executor: Executor,
        types: list[str],
        *,
        interval_seconds: float,
        reports: ReportStore | None = None,
        history_path: Path | None = None,
    ) -> None:
        self.broker = broker
        self.executor = executor
        self.types = list(types)
        self.interval_seconds = interval_seconds
        self.reports = reports
        capacity = int(WINDOW_SECONDS / interval_seconds) + 1
        self.history: dict[str, collections.deque[Point]] = {t: collections.deque(maxlen=capacity) for t in types}
        self.sent: dict[str, int] = dict.fromkeys(types, 0)
        self.samples_taken = 0
        self.error: str | None = None
        self.oldest_wait: dict[str, float | None] = dict.fromkeys(types)
        self.history_path = history_path
        self._watched_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sampled = asyncio.Event()  # set once this run of the poller has a sample
        self._next = asyncio.Event()  # set (and replaced) at every sample or failed attempt

    def count_sent(self, queue_name: str, accepted: int) -> None:
        """Count messages SQS accepted from this process (a Sender listener)."""
        if queue_name in self.sent:
            self.sent[queue_name] += accepted

    async def overview(self, *, after: float | None = None) -> dict[str, Any]:
        """The latest sample of every type, with rates and history; starts sampling if nobody watched.

        With `after` (the `sampled_at` a viewer has), waits up to WAIT_FOR_NEWER_INTERVALS intervals
        for a newer sample: the viewer sees each sample as it is taken, without polling faster.
        """
        self._watched_at = time.monotonic()
        if self._task is None or self._task.done():
            self._sampled.clear()
            self._task = asyncio.create_task(self._run(), name="qm-console-sampler")
        newest = self._newest_at()
        if not self._sampled.is_set() or (after is not None and newest is not None and newest <= after):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._next.wait(), timeout=self.interval_seconds * WAIT_FOR_NEWER_INTERVALS)
        return self.snapshot()

    def _newest_at(self) -> float | None:
        return max((h[-1].at for h in self.history.values() if h), default=None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.save()

    def save(self) -> None:
        """Keep the history (the last 15 minutes) in `history_path`, whole or not at all."""
        if self.history_path is None:
            return
        document = {t: [dataclasses.asdict(p) for p in points] for t, points in self.history.items()}
        aside = self.history_path.with_suffix(".tmp")
        try:
            self.history_path.parent.mkdir(parents=True, exist_ok=True)
            aside.write_text(json.dumps(document))
            aside.replace(self.history_path)
        except OSError as exc:
            logger.warning("Could not keep the console's history in %s: %s.", self.history_path, exc)

    def load(self) -> None:
        """Take back the history a previous run kept, the points of the last 15 minutes only."""
        if self.history_path is None or not self.history_path.exists():
            return
        oldest = time.time() - WINDOW_SECONDS
        try:
            document = json.loads(self.history_path.read_text())
            for message_type, points in document.items():
                if message_type in self.history:
                    self.history[message_type].extend(
                        Point(float(p["at"]), dict(p["queue"]), dict(p["dead_letter"]), int(p["sent"]))
                        for p in points
                        if float(p["at"]) >= oldest
                    )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                "Could not read the console's history in %s (%s); starting without it.", self.history_path, exc
            )
        # Sends are counted per process from zero: a rate never spans the restart.
        for points in self.history.values():
            kept = [dataclasses.replace(p, sent=0) for p in points]
            points.clear()
            points.extend(kept)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while time.monotonic() - self._watched_at < WATCH_SECONDS:
            started = loop.time()
            await self._sample(loop)
            self._sampled.set()
            self._next.set()
            self._next = asyncio.Event()
            await asyncio.sleep(max(0.0, self.interval_seconds - (loop.time() - started)))

    async def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        # Sends counted before the depths are read: each is then in this sample's depth too (or in a later one),
        # never counted as sent while its queue does not show it yet (that would read as a message gone out).
        sent = dict(self.sent)
        try:
            depths = await asyncio.gather(
                *(loop.run_in_executor(self.executor, self.broker.depths, t) for t in self.types)
            )
        except Exception as exc:  # SQS down: keep the history, say why there is no new sample
            error = f"Could not read queue depths: {public(exc)}"
            if error != self.error:  # once per outage, not every interval
                logger.warning("The console could not read queue depths: %s.", logged(exc))
            self.error = error
            return
        now = time.time()
        for message_type, depth in zip(self.types, depths, strict=True):
            point = Point(now, depth["queue"], depth.get("dead_letter", {}), sent[message_type])
            self.history[message_type].append(point)
        self.samples_taken += 1
        self.error = None
        if self.reports is not None:
            try:
                fresh = await loop.run_in_executor(self.executor, self.reports.fresh)
            except OSError:
                fresh = []
            for message_type in self.types:
                waits = [
                    q.oldest_wait_seconds
                    for report in fresh
                    if (q := report.queues.get(message_type)) is not None and q.oldest_wait_seconds is not None
                ]
                self.oldest_wait[message_type] = max(waits) if waits else None

    def snapshot(self) -> dict[str, Any]:
        """What the console shows: per type, the newest counts, the rates and the chart's points."""
        types = []
        for message_type in self.types:
            points = list(self.history[message_type])
            newest = points[-1] if points else None
            rates = self._rates(points)
            types.append(
                {
                    "type": message_type,
                    "queue": self.broker.sqs_queue_name(message_type),
                    "dead_letter_queue": self.broker.dead_letter_queue_name(message_type),
                    "fifo": self.broker.is_fifo(message_type),
                    "counts": newest.queue if newest else None,
                    "dead_letter_counts": newest.dead_letter if newest else None,
                    **rates,
                    "oldest_wait_seconds": self.oldest_wait.get(message_type),
                    "history": [_row(p) for p in points],
                }
            )
        return {
            "sampled_at": self._newest_at(),
            "interval_seconds": self.interval_seconds,
            "window_seconds": WINDOW_SECONDS,
            "error": self.error,
            "history_columns": ["at", "visible", "in_flight", "delayed", "dead_letter_visible"],
            "types": types,
        }

    def _rates(self, points: list[Point]) -> dict[str, float | None]:
        none: dict[str, float | None] = dict.fromkeys(("in_per_second", "out_per_second", "dead_lettered_per_second"))
        if len(points) < 2:
            return none
        newest = points[-1]
        older = None
        later = newest
        for point in reversed(points[:-1]):
            if later.at - point.at > GAP_INTERVALS * self.interval_seconds:
                break  # nobody watched in between: the counts across the gap say nothing of a rate
            older = later = point
            if newest.at - point.at >= RATE_SPAN_SECONDS:
                break
        if older is None:
            return none
        span = newest.at - older.at
        if span <= 0:
            return none
        came_in = (newest.sent - older.sent) / span
        grew = (_total(newest.queue) - _total(older.queue)) / span
        dead_lettered = (_total(newest.dead_letter) - _total(older.dead_letter)) / span
        return {
            "in_per_second": round(came_in, 2),
            "out_per_second": round(max(0.0, came_in - grew), 2),
            "dead_lettered_per_second": round(max(0.0, dead_lettered), 2),
        }


#: The console's depth sampler, shared by every viewer.
SAMPLER = web.AppKey("qm.console_sampler", DepthSampler)
