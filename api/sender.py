"""Coalesces concurrent sends into SendMessageBatch calls; each caller waits for its own entry."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from queue_manager.sqs import constants
from queue_manager.sqs.broker import QMBroker, SendResult
from queue_manager.sqs.errors import SQSUnavailable

logger = logging.getLogger(__name__)

#: Attempts for an entry SQS failed and called retryable.
ENTRY_ATTEMPTS = 3

#: The pause before the first re-send of failed entries; it doubles after each.
ENTRY_RETRY_PAUSE_SECONDS = 0.05


class Overloaded(RuntimeError):
    """Raised when more sends are waiting than the API allows: answer 503 and shed load."""


@dataclasses.dataclass
class _Pending:
    entry: dict[str, Any]
    size_bytes: int
    future: asyncio.Future[SendResult]


class Sender:
    """Batches sends per queue: a batch leaves at once when none is in flight for its queue,
    when it holds ten entries or would pass 1 MiB, or after `linger_seconds`.

    A 202 is answered only from a future that SQS's own answer resolved: nothing is
    acknowledged from this buffer.
    """

    def __init__(
        self, broker: QMBroker, executor: Executor, *, linger_seconds: float = 0.002, max_waiting: int = 1000
    ) -> None:
        self.broker = broker
        self.executor = executor
        self.linger_seconds = linger_seconds
        self.max_waiting = max_waiting
        self.waiting = 0
        self._batches: dict[str, list[_Pending]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called with the size of every batch sent, e.g. to export it as a metric.
        self.batch_listeners: list[Callable[[int], None]] = []

    async def send(self, queue_name: str, entry: dict[str, Any]) -> SendResult:
        """Send one prepared entry; returns SQS's result for it. Raises SQSUnavailable or Overloaded."""
        if self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} messages are already waiting for SQS; the limit is {self.max_waiting}.")
        loop = asyncio.get_running_loop()
        pending = _Pending(entry, len(entry["MessageBody"]), loop.create_future())
        batch = self._batches.setdefault(queue_name, [])
        if batch and sum(p.size_bytes for p in batch) + pending.size_bytes > constants.MAX_BATCH_SIZE_BYTES:
            self._flush(queue_name)
            batch = self._batches.setdefault(queue_name, [])
        batch.append(pending)
        if len(batch) >= constants.MAX_BATCH_ENTRIES or not self._in_flight.get(queue_name):
            self._flush(queue_name)
        elif queue_name not in self._timers:
            self._timers[queue_name] = loop.call_later(self.linger_seconds, self._flush, queue_name)
        self.waiting += 1
        try:
            return await pending.future
        finally:
            self.waiting -= 1

    def _flush(self, queue_name: str) -> None:
        timer = self._timers.pop(queue_name, None)
        if timer is not None:
            timer.cancel()
        batch = self._batches.pop(queue_name, [])
        if not batch:
            return
        self._in_flight[queue_name] = self._in_flight.get(queue_name, 0) + 1
        task = asyncio.get_running_loop().create_task(self._send_batch(queue_name, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, queue_name: str, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.batch_listeners:
            listener(len(batch))
        try:
            for attempt in range(ENTRY_ATTEMPTS):
                try:
                    results = await loop.run_in_executor(
                        self.executor, self.broker.send_entries, queue_name, [p.entry for p in batch]
                    )
                except BaseException as exc:  # every waiter must hear of it, whatever it is
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(exc if isinstance(exc, Exception) else SQSUnavailable(str(exc)))
                    return
                retry = []
                for p, result in zip(batch, results, strict=True):
                    if result.ok or not result.retryable or attempt == ENTRY_ATTEMPTS - 1:
                        if not p.future.done():
                            p.future.set_result(result)
                    else:
                        retry.append(p)
                if not retry:
                    return
                logger.warning("SQS failed %d entr(ies) on %r; sending them again.", len(retry), queue_name)
                batch = retry
                await asyncio.sleep(ENTRY_RETRY_PAUSE_SECONDS * 2**attempt)
        finally:
            self._in_flight[queue_name] -= 1
            if self._batches.get(queue_name) and not self._in_flight[queue_name]:
                self._flush(queue_name)

    async def close(self) -> None:
        """Send what is buffered and wait for every batch in flight."""
        for queue_name in list(self._batches):
            self._flush(queue_name)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
