"""Coalesces concurrent sends into SendMessageBatch calls; each caller waits for its own entry."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from api.payloads import offload_and_send
from queue_manager.payloads import wire
from queue_manager.payloads.offload import Offloader
from queue_manager.sqs import constants
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.errors import SQSOutcomeUnknown
from queue_manager.sqs.groups import next_batch, plan_resend
from queue_manager.sqs.pacing import Linger
from queue_manager.sqs.sending import SendResult

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
    #: The FIFO message group whose order this entry must keep; None on a standard queue.
    group: str | None = None


class Sender:
    """Batches sends per queue: a batch leaves at once when none is in flight for its queue,
    when it holds ten entries or would pass 1 MiB, when the queue's batches in flight have all
    been answered, or after `linger_seconds` at most. Under load the wait for an answer is what
    fills a batch; the linger only bounds it when SQS is slow to answer.

    A partial batch waits only when another message is expected within the linger (`pacing.Linger`:
    the last gap or the recent rate): a wait that brings no one saves no request and costs every
    message in it up to a round trip, so then the batch goes at once. Under load batches
    still leave full; at a trickle each message pays one round trip, no more.

    A 202 is answered only from a future that SQS's own answer resolved: nothing is
    acknowledged from this buffer.

    On a FIFO queue each group keeps its arrival order: a batch holds a group's entries in order,
    the group's next batch waits until SQS has answered the one before, a failed entry is sent
    again ahead of the rest of its group, and one that fails for good fails what waits behind it.
    """

    def __init__(
        self,
        broker: QMBroker,
        executor: Executor,
        *,
        linger_seconds: float = 0.013,
        max_waiting: int = 1000,
        offloader: Offloader | None = None,
        offload_executor: Executor | None = None,
    ) -> None:
        self.broker = broker
        #: Large messages: entries over the threshold have their body uploaded (on `offload_executor`) first.
        self.offloader = offloader
        self.offload_executor = offload_executor or executor
        self.executor = executor
        self.linger_seconds = linger_seconds
        self.max_waiting = max_waiting
        self.waiting = 0
        self._batches: dict[str, list[_Pending]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._in_flight: dict[str, int] = {}
        self._busy_groups: dict[str, set[str]] = {}
        #: Each queue's arrivals: whether a partial batch waits for the one in flight.
        self._lingers: dict[str, Linger] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called with the size of every batch sent, e.g. to export it as a metric.
        self.batch_listeners: list[Callable[[int], None]] = []
        #: Called with a queue's name and how many entries SQS accepted, after every batch (the console's rates).
        self.sent_listeners: list[Callable[[str, int], None]] = []
        #: Called with the seconds each answered SendMessageBatch took, from handing it to a send thread
        #: (a wait for a free one included) to SQS's answer: what a 202 waits for beyond the batching.
        self.send_time_listeners: list[Callable[[float], None]] = []

    async def send(self, queue_name: str, entry: dict[str, Any]) -> SendResult:
        """Send one prepared entry; returns SQS's result for it. Raises SQSUnavailable or Overloaded."""
        return await self.submit(queue_name, entry)

    def submit(self, queue_name: str, entry: dict[str, Any]) -> asyncio.Future[SendResult]:
        """Queue one prepared entry for sending; the future resolves with SQS's result for it.

        The send goes on whether or not the caller still waits (a caller that gives up has an
        outcome to record once SQS answers). Raises Overloaded when `max_waiting` sends are unresolved.
        """
        if self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} messages are already waiting for SQS; the limit is {self.max_waiting}.")
        if self.offloader is not None and self.offloader.needed(entry):
            return offload_then_submit(self, queue_name, entry)
        loop = asyncio.get_running_loop()
        group = entry.get("MessageGroupId") if self.broker.is_fifo(queue_name) else None
        pending = _Pending(entry, wire.message_size(entry), loop.create_future(), group)
        batch = self._batches.setdefault(queue_name, [])
        if batch and sum(p.size_bytes for p in batch) + pending.size_bytes > constants.MAX_BATCH_SIZE_BYTES:
            self._flush(queue_name)
            batch = self._batches.setdefault(queue_name, [])
        batch.append(pending)
        linger = self._lingers.get(queue_name)
        if linger is None:
            linger = self._lingers[queue_name] = Linger(self.linger_seconds)
        linger.arrived(loop.time())
        if not self._in_flight.get(queue_name) or not self._worth_holding(queue_name, batch):
            self._flush(queue_name)
        elif queue_name not in self._timers:
            self._timers[queue_name] = loop.call_later(self.linger_seconds, self._flush, queue_name)
        # Counted until SQS answers, not until the caller stops waiting: a send whose caller gave up
        # still holds a thread and a connection.
        self.waiting += 1
        pending.future.add_done_callback(self._resolved)
        return pending.future

    def _resolved(self, future: asyncio.Future[SendResult]) -> None:
        self.waiting -= 1

    def _worth_holding(self, queue_name: str, batch: list[_Pending]) -> bool:
        """Whether the entries that could go now should wait for the batch in flight (`pacing.Linger`)."""
        linger = self._lingers.get(queue_name)
        if linger is None:
            return False
        now = asyncio.get_running_loop().time()
        return linger.worth_waiting(now, self._ready(queue_name, batch), constants.MAX_BATCH_ENTRIES)

    def _ready(self, queue_name: str, batch: list[_Pending]) -> int:
        """How many waiting entries could go now (up to a full batch): not those of a busy group."""
        if not any(p.group for p in batch):
            return len(batch)
        ready, _ = next_batch(
            batch,
            self._busy_groups.get(queue_name, set()),
            group=lambda p: p.group,
            size=lambda p: 0,
            max_entries=constants.MAX_BATCH_ENTRIES,
            max_bytes=constants.MAX_BATCH_SIZE_BYTES,
        )
        return len(ready)

    def _flush(self, queue_name: str) -> None:
        timer = self._timers.pop(queue_name, None)
        if timer is not None:
            timer.cancel()
        busy = self._busy_groups.setdefault(queue_name, set())
        while True:
            # Entries of a group with a batch still unanswered wait for it; the rest may go now.
            batch, waiting = next_batch(
                self._batches.pop(queue_name, []),
                busy,
                group=lambda p: p.group,
                size=lambda p: p.size_bytes,
                max_entries=constants.MAX_BATCH_ENTRIES,
                max_bytes=constants.MAX_BATCH_SIZE_BYTES,
            )
            if waiting:
                self._batches[queue_name] = waiting
            if not batch:
                return
            busy.update(p.group for p in batch if p.group is not None)
            self._in_flight[queue_name] = self._in_flight.get(queue_name, 0) + 1
            task = asyncio.get_running_loop().create_task(self._send_batch(queue_name, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            if len(waiting) < constants.MAX_BATCH_ENTRIES:
                return

    async def _send_batch(self, queue_name: str, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        for listener in self.batch_listeners:
            listener(len(batch))
        groups = {p.group for p in batch if p.group is not None}
        try:
            for attempt in range(ENTRY_ATTEMPTS):
                handed = loop.time()
                try:
                    results = await loop.run_in_executor(
                        self.executor, self.broker.send_entries, queue_name, [p.entry for p in batch]
                    )
                except BaseException as exc:  # every waiter must hear of it, whatever it is
                    # Cancelled mid-send: the thread may still send it.
                    error = (
                        exc if isinstance(exc, Exception) else SQSOutcomeUnknown(f"the send was interrupted ({exc!r})")
                    )
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(error)
                    # Whether SQS has them or not, what waits of their groups was not sent: it must not go
                    # ahead of them (a client's retry of these would then land behind it).
                    self._fail_waiting(queue_name, {p.group for p in batch if p.group is not None})
                    return
                answered = loop.time() - handed
                for time_listener in self.send_time_listeners:
                    time_listener(answered)
                plan = plan_resend([p.group for p in batch], results, may_resend=attempt < ENTRY_ATTEMPTS - 1)
                resend = set(plan.resend)
                for index, (p, result) in enumerate(zip(batch, results, strict=True)):
                    if index not in resend and not p.future.done():
                        p.future.set_result(result)
                accepted = sum(1 for index, result in enumerate(results) if index not in resend and result.ok)
                for sent_listener in self.sent_listeners:
                    sent_listener(queue_name, accepted)
                if plan.overtaken:
                    logger.warning(
                        "SQS accepted later messages of a group on %r but failed %d earlier one(s); those are "
                        "answered as failed rather than sent again behind the later ones.",
                        queue_name,
                        len(plan.overtaken),
                    )
                if plan.failed_groups:
                    self._fail_waiting(queue_name, plan.failed_groups)
                if not resend:
                    return
                logger.warning("SQS failed %d entr(ies) on %r; sending them again.", len(resend), queue_name)
                batch = [batch[i] for i in plan.resend]
                await asyncio.sleep(ENTRY_RETRY_PAUSE_SECONDS * 2**attempt)
        finally:
            self._in_flight[queue_name] -= 1
            self._busy_groups.get(queue_name, set()).difference_update(groups)
            waiting = self._batches.get(queue_name)
            if waiting:
                if not self._in_flight[queue_name] or not self._worth_holding(queue_name, waiting):
                    self._flush(queue_name)
                elif queue_name not in self._timers:
                    self._timers[queue_name] = loop.call_later(self.linger_seconds, self._flush, queue_name)

    def _fail_waiting(self, queue_name: str, groups: set[str]) -> None:
        """Fail (unsent) what waits of groups whose earlier message SQS did not take: it would overtake it."""
        if not groups:
            return
        kept: list[_Pending] = []
        failed = 0
        for p in self._batches.get(queue_name, []):
            if p.group not in groups:
                kept.append(p)
                continue
            failed += 1
            if not p.future.done():
                p.future.set_result(
                    SendResult(
                        _message_id(p.entry),
                        False,
                        code="EarlierMessageFailed",
                        detail=f"not sent: an earlier message of group {p.group!r} was not accepted (or got no "
                        "answer); send the group's messages again in order",
                    )
                )
        if kept:
            self._batches[queue_name] = kept
        else:
            self._batches.pop(queue_name, None)
        if failed:
            logger.warning(
                "Failed %d waiting message(s) on %r behind an earlier message of their group that SQS did not take.",
                failed,
                queue_name,
            )

    async def close(self) -> None:
        """Send what is buffered and wait for every batch in flight."""
        for queue_name in list(self._batches):
            self._flush(queue_name)
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def offload_then_submit(sender: Sender, queue_name: str, entry: dict[str, Any]) -> asyncio.Future[SendResult]:
    """Large messages: upload an entry's body, then submit its pointer; the future resolves as `submit`'s.

    S3 failing resolves it with StorageUnavailable before anything is sent to SQS.
    """
    assert sender.offloader is not None
    loop = asyncio.get_running_loop()
    outer: asyncio.Future[SendResult] = loop.create_future()
    work = offload_and_send(sender.offloader, sender.offload_executor, sender.submit, queue_name, entry, outer)
    task = loop.create_task(work)
    sender._tasks.add(task)
    task.add_done_callback(sender._tasks.discard)
    return outer


def _message_id(entry: dict[str, Any]) -> str:
    return str(entry["MessageAttributes"][constants.ATTR_MESSAGE_ID]["StringValue"])
