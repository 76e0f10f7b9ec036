"""The consumer of a FIFO queue: each message group runs one message at a time, in order.

SQS hands a group to one receiver at a time: while any of its messages is in flight (received and
neither deleted nor visible again), no receiver gets another of that group. One receive may bring
several messages of a group, though, and a process runs many threads; so this consumer lets one
message of each group out to the threads and holds the rest, hidden by the heartbeat, until that
one is done. Other groups run in parallel.

A failed message is retried here, in place: it stays in flight (hidden for its backoff, so a
crash does not retry it early), the rest of its group stays held behind it, and it runs again
after the backoff as attempt n + 1. Releasing the rest to SQS instead would raise their receive
counts without an attempt, and the redrive policy would dead-letter them unrun. A message that
goes to the dead-letter queue lets its group go on, as SQS does.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from typing import Any

import dramatiq

from queue_manager.sqs import constants, fifo
from queue_manager.sqs.consumer import ConsumerContext, QMConsumer
from queue_manager.sqs.groups import GroupGate
from queue_manager.sqs.message import SQSMessage, describe_failure

logger = logging.getLogger(__name__)


class FifoConsumer(QMConsumer):
    """Consumes one FIFO queue for one process: one message per group at a time, retries in place."""

    system_attribute_names = QMConsumer.system_attribute_names + fifo.SYSTEM_ATTRIBUTES

    #: A group runs one message at a time: what a FIFO queue holds beyond its threads mostly waits
    #: behind its group, kept from every other worker, so its receives do not grow the lookahead.
    grows_lookahead = False

    def __init__(self, context: ConsumerContext) -> None:
        super().__init__(context)
        self.gate: GroupGate[SQSMessage] = GroupGate()
        self._lock = threading.Lock()
        self._retrying: dict[str, tuple[SQSMessage, threading.Timer]] = {}

    def _receive_options(self) -> dict[str, Any]:
        # A receive whose answer is lost (a dropped connection, a 5xx) leaves what it took in flight,
        # blocking those groups for a visibility timeout. botocore's retry carries the same
        # parameters, so with an attempt id SQS hands the retry those same messages instead.
        return {"ReceiveRequestAttemptId": uuid.uuid4().hex}

    def _accept(self, sqs_message: dict[str, Any]) -> SQSMessage | None:
        message = super()._accept(sqs_message)
        if message is None:
            return None
        if self.gate.admit(message.group_id, message):
            logger.debug("Message %r of group %r may run now.", message.message_id, message.group_id)
            return message
        logger.debug("Holding message %r behind the running one of its group %r.", message.message_id, message.group_id)
        # Its group has a message out: it waits its turn without a thread (it still counts against
        # the consumer's prefetch), kept hidden meanwhile (the heartbeat stops at SQS's 12 h limit).
        self.capacity.release(1)
        self.acks.hold(message.sqs_receipt_handle, math.inf)
        self.workload.blocked(message.sqs_receipt_handle)
        return None

    def ack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, SQSMessage)
        group = message.group_id
        after = self.gate.done(group)
        # With nothing of the group left here, SQS keeps the group blocked until this delete lands.
        self.acks.delete(message.sqs_queue_url, message.sqs_receipt_handle, soon=group is not None and not after)
        self.workload.let_go((message.sqs_receipt_handle,))
        self.capacity.finish(1)
        self._give_room(1)
        if after is not None:
            self._start(after)

    def nack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, SQSMessage)
        self.capacity.finish(1)  # its thread is free; while it waits to retry it is still held here
        delay_ms = message.options.pop(constants.RETRY_DELAY_OPTION, None)
        if delay_ms is not None:
            self._retry_later(message, int(delay_ms))
            return
        self._give_room(1)
        self.workload.let_go((message.sqs_receipt_handle,))
        group = message.group_id
        reason = message.options.pop(constants.DEAD_LETTER_REASON_OPTION, None) or describe_failure(message)
        dead = self._dead_letter(
            message.sqs_receipt_handle,
            message.sqs_body,
            message.sqs_attributes,
            message.sqs_receive_count,
            reason,
            message.sqs_system_attributes,
        )
        if dead:
            after = self.gate.done(group)
            if after is not None:
                self._start(after)
            return
        # It stays on SQS and comes back after its timeout; what is held behind it goes back too,
        # and SQS keeps it behind (the group stays blocked while this one is in flight).
        self._release(self.gate.release(group))

    def _retry_later(self, message: SQSMessage, delay_ms: int) -> None:
        """Keep a failed message in flight for its backoff, then run it again here, its group still held."""
        delay_seconds = max(0.0, delay_ms / 1000)
        hidden = min(math.ceil(delay_seconds) + self.context.visibility_timeout_seconds, constants.MAX_HIDE_SECONDS)
        self.acks.defer(message.sqs_queue_url, message.sqs_receipt_handle, hidden)
        until = time.monotonic() + delay_seconds + self._hold_seconds(message)
        self.acks.hold(message.sqs_receipt_handle, until)
        timer = threading.Timer(delay_seconds, self._retry_now, args=(message,))
        timer.daemon = True
        with self._lock:
            if self._closed:
                self.workload.let_go((message.sqs_receipt_handle,))
                return
            self.workload.backing_off(message.sqs_receipt_handle, delay_seconds)
            self._retrying[message.sqs_receipt_handle] = (message, timer)
        timer.start()

    def _retry_now(self, message: SQSMessage) -> None:
        with self._lock:
            if self._closed or self._retrying.pop(message.sqs_receipt_handle, None) is None:
                return
        # The attempt number goes up: SQS did not hand it out again, this process runs it again.
        self.workload.received(self.queue_name, message.sqs_receipt_handle, sent_at=None)
        self._start(message.next_attempt())

    def _start(self, message: SQSMessage) -> None:
        """Let a held message out to the worker threads."""
        if self.context.stopping.is_set() or self._closed:
            self._release([message, *self.gate.release(message.group_id)])
            return
        self.capacity.take(1)
        self.workload.blocked(message.sqs_receipt_handle, False)
        self.acks.hold(message.sqs_receipt_handle, time.monotonic() + self._hold_seconds(message))
        # Dramatiq's consumer thread waits on this condition for what to hand out: it goes at once.
        with self._cond:
            self.buffer.append(message)
            self._cond.notify_all()

    def _hold_seconds(self, message: SQSMessage) -> float:
        return self.context.time_limit_ms(message.actor_name) / 1000 + self.context.visibility_timeout_seconds

    def _release(self, messages: list[SQSMessage]) -> None:
        """Hand held messages (no thread, but prefetch room) back to SQS at once."""
        self.workload.let_go(m.sqs_receipt_handle for m in messages)
        if messages:
            logger.debug("Handing back %d held message(s) on %r.", len(messages), self.queue_name)
            self.acks.release_now(self.queue_url, (m.sqs_receipt_handle for m in messages))
            self._give_room(len(messages))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            retrying, self._retrying = list(self._retrying.values()), {}
        for message, timer in retrying:
            # It stays hidden for its backoff (its group with it), then any worker retries it.
            timer.cancel()
            self.acks.untrack(message.sqs_receipt_handle)
            self.workload.let_go((message.sqs_receipt_handle,))
        self._give_room(len(retrying))
        super().close()  # stops the receivers: nothing joins the gate after this
        self._release(self.gate.release_all())
        self.acks.flush()
