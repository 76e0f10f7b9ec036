"""The SQS consumer: receives only what free threads can run, acks in batches, retries in place.

A consumer is built by the broker's `consumer_class` from a `ConsumerContext`: the queue, and the
shared parts of its process (clients, acks, capacity) and settings it needs, nothing more.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import dramatiq
from botocore.exceptions import BotoCoreError, ClientError

from queue_manager.sqs import constants, fifo
from queue_manager.sqs.acks import Acks, Lease
from queue_manager.sqs.capacity import Capacity, Thresholds
from queue_manager.sqs.message import (
    SYSTEM_ATTRIBUTE_NAMES,
    SQSMessage,
    UndecodableBody,
    decode,
    describe_failure,
    receive_count,
)
from queue_manager.sqs.pacing import Gathering
from queue_manager.sqs.queues import QueueUrls, is_fifo_name
from queue_manager.sqs.quickstop import wait_shortened_at_stop
from queue_manager.sqs.workload import Workload

logger = logging.getLogger(__name__)

#: How long a consumer with no free thread waits before it lets Dramatiq look around.
CAPACITY_WAIT_SECONDS = 1.0

#: The shortest `next()` waits for a message, so that a consumer given no timeout does not spin.
MIN_HANDOUT_WAIT_SECONDS = 0.1

#: How long `next()` waits for a message once the worker is stopping.
STOPPING_HANDOUT_WAIT_SECONDS = 0.05

#: The most receives one queue keeps in flight in one process.
MAX_RECEIVERS = 8

#: How long a receiver that joins a busy queue waits before it looks again for room for a whole receive.
JOINING_RECEIVER_WAIT_SECONDS = 0.005

#: How long closing waits for a busy receive in flight beyond its long-poll wait.
RECEIVE_JOIN_MARGIN_SECONDS = 5.0

#: The longest pause after SQS failed to answer a receive.
MAX_ERROR_BACKOFF_SECONDS = 10.0

#: The long-poll wait of a receive that holds reserved threads: short, so that a queue that
#: has just emptied hands its threads back quickly and then waits idle without holding any.
BUSY_WAIT_SECONDS = 1


#: Decodes a body: (queue name, body, attributes, system attributes, SQS message id) in, the message out.
BodyDecoder = Callable[[str, str, dict[str, Any], dict[str, Any], str], dramatiq.Message[Any]]


@dataclasses.dataclass(frozen=True)
class ConsumerContext:
    """What a consumer of one queue is given: the queue, its process's shared parts, its settings.

    Parameters:
      queue_name: The Dramatiq queue.
      urls: Its SQS URL and its dead-letter queue's (empty without one).
      prefetch: The most messages it holds, those in progress included.
      timeout_ms: How long `next()` waits for a message.
      receive_client: The SQS client of receives (its read timeout covers a long poll).
      client: The SQS client of other calls (copies to the dead-letter queue).
      acks: The process's batched deletes, visibility changes and heartbeat.
      capacity: The process's free threads, shared by its consumers.
      stopping: Set when the worker stops: receive nothing more, hand back what arrives.
      visibility_timeout_seconds: How long a receive hides a message before the heartbeat extends it.
      idle_wait_seconds: The long-poll wait of an idle queue (1-20 s).
      receive_linger_seconds: How long a receive waits for more threads to free once one has.
      receive_gather_seconds: The longest a receive that came back part-full lets messages gather before the
        next one, when the queue's rate would fill a receive within it (else the next goes at once).
      time_limit_ms: The time limit of an actor, by name (the heartbeat holds its messages that long).
      workload: The process's record of what it holds, per queue (for /scaling and the gauges).
    """

    queue_name: str
    urls: QueueUrls
    prefetch: int
    timeout_ms: int
    receive_client: Any
    client: Any
    acks: Acks
    capacity: Capacity
    stopping: threading.Event
    visibility_timeout_seconds: int
    idle_wait_seconds: int
    receive_linger_seconds: float
    receive_gather_seconds: float
    time_limit_ms: Callable[[str], int]
    workload: Workload = dataclasses.field(default_factory=Workload)
    #: Decodes a body another way than `message.decode` (large messages: a stand-in for an S3 pointer).
    decode_body: BodyDecoder | None = None


class QMConsumer(dramatiq.Consumer):
    """Consumes one queue for one process, sharing its threads and acks with the others.

    Receives run on receiver threads of their own, so that a busy queue keeps as many receives in
    flight as it takes to fill the free threads (one per ten), and Dramatiq's consumer thread only
    hands out what they brought. An idle queue has one receiver long-polling for one message.

    The consumer holds at most `prefetch` messages, those in progress included (Dramatiq's
    meaning of a queue's prefetch): a receive asks for no more than the room left. `next()`
    waits up to `timeout_ms` for a message; an idle queue long-polls `idle_wait_seconds`.
    """

    #: The system attributes every receive asks for.
    system_attribute_names: tuple[str, ...] = SYSTEM_ATTRIBUTE_NAMES

    #: Whether this queue's full receives grow the process's lookahead to a whole receive.
    grows_lookahead = True

    def __init__(self, context: ConsumerContext) -> None:
        self.context = context
        self.queue_name = context.queue_name
        self.queue_url = context.urls.url
        self.dead_letter_url = context.urls.dead_letter_url
        self.acks = context.acks
        self.capacity = context.capacity
        self.workload = context.workload
        self.workload.declare(self.queue_name)
        self.prefetch = max(1, context.prefetch)
        #: Messages received and not yet acknowledged, rejected or released, and receives' room.
        self.held = 0
        self.handout_wait_seconds = max(context.timeout_ms / 1000, MIN_HANDOUT_WAIT_SECONDS)
        self.idle_wait_seconds = context.idle_wait_seconds
        self.busy_wait_seconds = min(BUSY_WAIT_SECONDS, self.idle_wait_seconds)
        self.buffer: deque[SQSMessage] = deque()
        self.idle = True
        self.full = False
        self.errors = 0
        #: Wakes Dramatiq's consumer thread and idle receivers: messages arrived, the queue's state changed.
        mutex = threading.RLock()
        self._cond = threading.Condition(mutex)
        #: Receivers waiting for prefetch room (same lock), woken only once the room they need is there.
        self._room = Thresholds(threading.Condition(mutex))
        self._closed = False
        self._receivers: list[threading.Thread] = []
        #: Receivers in an idle long poll, and in a busy receive (a short poll for reserved threads).
        self._idle_polls: set[int] = set()
        self._busy_receives = 0
        #: Whether a part-full receive lets messages gather before the next (under `_cond`).
        self._gathering = Gathering(context.receive_gather_seconds)

    def __iter__(self) -> QMConsumer:
        return self

    def __next__(self) -> dramatiq.MessageProxy | None:
        if not self._receivers:
            self._start_receivers()
        with self._cond:
            # A stopping worker waits for this thread too: it answers at once, but for a moment's
            # wait for what a busy receive in flight brings (not a spin while the worker drains).
            # The stop shortens a wait under way as well (`wake`): Dramatiq joins this thread after
            # its worker threads, and a wait begun before the stop could hold it up to a second.
            wait_shortened_at_stop(
                self._cond,
                lambda: self.buffer or self._closed,
                self.handout_wait_seconds,
                self.context.stopping.is_set,
                STOPPING_HANDOUT_WAIT_SECONDS,
            )
            return self.buffer.popleft() if self.buffer else None

    def wake(self) -> None:
        """Wake Dramatiq's consumer thread if it waits here (the worker is stopping)."""
        with self._cond:
            self._cond.notify_all()

    def _start_receivers(self) -> None:
        # One receiver per ten threads and busy lookahead (a receive brings at most ten), at least
        # one. The first receives whenever there is room; the others join only while receives come
        # back full, and only for a whole receive (`_receive_once`), so that a busy queue's next
        # receive is in flight while the last one's messages run: a receive's round trip, not the
        # threads, bounded a process's rate (one receive at a time: 10 messages per 40-60 ms under load).
        beyond = self.capacity.busy_lookahead if self.grows_lookahead else 0
        count = max(1, min(MAX_RECEIVERS, math.ceil((self.capacity.threads + beyond) / constants.MAX_RECEIVE_MESSAGES)))
        for index in range(count):
            thread = threading.Thread(
                target=self._receive_loop, args=(index,), name=f"qm-receive-{self.queue_name}-{index}", daemon=True
            )
            self._receivers.append(thread)
            thread.start()

    def _receive_loop(self, index: int) -> None:
        while not self._closed:
            try:
                self._receive_once(index)
            except Exception:  # a receiver must outlive any one failure
                logger.exception("Receiving from %r failed unexpectedly; trying again.", self.queue_name)
                time.sleep(1.0)

    def _take_room(self, most: int, linger_seconds: float = 0.0, ahead: int = 0) -> int:
        """Wait until this consumer holds fewer than its prefetch, then claim up to `most` of the room.

        Once there is room, wait up to `linger_seconds` more for room for `most`, so that a busy
        queue's receive is not cut short by messages that are about to finish.

        `ahead` (a busy receive's) is the room it counts on freeing while in flight (`Capacity.ahead`).
        Such a receive waits, as `Capacity.reserve` does, until the room beyond its prefetch's share of
        the threads is free but for `ahead`, and claims up to `ahead` beyond the room there is: else it
        would go out early for the one or two messages free at that moment and hold the receiver while
        the messages held ready run out.
        """
        with self._cond:
            want = min(most, self.prefetch)
            need = 1 if ahead <= 0 else max(1, min(want, self.prefetch - self.capacity.threads + 1) - ahead)
            if not self._wait_room(need, CAPACITY_WAIT_SECONDS):
                return 0
            if linger_seconds > 0:
                self._wait_room(max(1, want - ahead), linger_seconds)
            if self._closed:
                return 0
            n = max(0, min(most, self.prefetch - self.held + ahead))
            self.held += n
            return n

    def _wait_room(self, need: int, timeout_seconds: float) -> bool:
        """Wait (holding the lock) until `need` of the prefetch is free, or the timeout; whether it is."""
        deadline = time.monotonic() + timeout_seconds
        return self._room.wait(need, lambda: self.prefetch - self.held, deadline, lambda: self._closed)

    def _give_room(self, n: int) -> None:
        if n <= 0:
            return
        with self._cond:
            self.held = max(self.held - n, 0)
            self._room.notify(self.prefetch - self.held)

    def _receive_once(self, index: int) -> None:
        if self.context.stopping.is_set():
            time.sleep(0.1)
            return
        if index and not self.full:
            # More receivers join only while receives come back full: a trickle is gathered by one.
            with self._cond:
                self._cond.wait(CAPACITY_WAIT_SECONDS)
            return
        room = (
            self._take_room(1)
            if self.idle
            else self._take_room(
                constants.MAX_RECEIVE_MESSAGES,
                self.context.receive_linger_seconds,
                ahead=self.capacity.finishing_during_receive(),
            )
        )
        if not room:
            return
        if self.idle:
            # An idle queue waits with no thread reserved, asking for one message, so a quiet
            # queue never holds threads another queue could use.
            reserved, most = 0, 1
        else:
            reserved = most = self.capacity.reserve(
                room,
                timeout_seconds=CAPACITY_WAIT_SECONDS,
                linger_seconds=self.context.receive_linger_seconds,
                whole_thread=True,
            )
            self._give_room(room - most)
            if index and 0 < most < constants.MAX_RECEIVE_MESSAGES:
                # A joining receiver goes out for a whole receive or not at all: two receivers sharing
                # the room that frees made receives of three messages on average.
                self.capacity.release(most)
                self._give_room(most)
                with self._cond:
                    self._cond.wait(JOINING_RECEIVER_WAIT_SECONDS)
                return
            if not most:
                return
        idle = self.idle
        with self._cond:
            if idle:
                self._idle_polls.add(index)
            else:
                self._busy_receives += 1
        asked = time.monotonic()
        try:
            received = self._receive(most, wait_seconds=self.idle_wait_seconds if idle else self.busy_wait_seconds)
        except (BotoCoreError, ClientError) as exc:
            self._receive_done(index, idle)
            self.capacity.release(reserved)
            self._give_room(most)
            self.errors += 1
            pause = min(2.0 ** (self.errors - 1), MAX_ERROR_BACKOFF_SECONDS)
            logger.warning("Receiving from %r failed (%s); trying again in %.1f s.", self.queue_name, exc, pause)
            time.sleep(pause)
            return
        self._receive_done(index, idle)
        if not idle and len(received) >= most:
            # A full receive came back without waiting for messages: its time is the round trip.
            self.capacity.note_receive(time.monotonic() - asked)
        self.errors = 0
        self._give_room(most - len(received))
        if reserved > len(received):
            self.capacity.release(reserved - len(received))
        elif len(received) > reserved:
            self.capacity.take(len(received) - reserved)
        if self._closed:
            # What a receive brings while the worker stops still runs, up to the close (a stop
            # waits for busy receives, not idle polls); what an idle poll brings after the close is
            # handed back: SQS counted the receive (the redrive policy's spare receives cover it).
            if received:
                self.acks.release_now(self.queue_url, (m["ReceiptHandle"] for m in received))
                self.capacity.release(len(received))
                self._give_room(len(received))
            return
        accepted = [m for m in (self._accept(r) for r in received) if m is not None]
        with self._cond:
            self.buffer.extend(accepted)
            was_full, self.full = self.full, bool(received) and len(received) >= most
            was_idle, self.idle = self.idle, not received
            if was_full != self.full and self.grows_lookahead:
                # A full receive means a backlog: the process may hold one receive beyond its threads.
                self.capacity.set_busy(self, self.full)
            if accepted or was_idle != self.idle or was_full != self.full:
                self._cond.notify_all()
            # A part-full receive lets messages gather before the next one (fewer, fuller receives) only
            # while this queue's rate would fill a receive in the gather window; at a slower rate the wait
            # would save little and cost every message, so the next receive goes at once and waits at
            # SQS, which answers a long poll as soon as a message is there.
            gather = self._gathering.after_receive(time.monotonic(), len(received), most)
            if gather:
                self._cond.wait(gather)

    def _receive_done(self, index: int, idle: bool) -> None:
        # No notify: nothing waits on these counts (a stop polls `drained`), and the messages the
        # receive brought wake Dramatiq's consumer thread once they are in the buffer.
        with self._cond:
            if idle:
                self._idle_polls.discard(index)
            else:
                self._busy_receives -= 1

    def drained(self) -> bool:
        """Whether nothing received waits here to run and no busy receive is in flight (for a stop)."""
        with self._cond:
            return not self.buffer and not self._busy_receives

    def _receive(self, most: int, *, wait_seconds: int) -> list[dict[str, Any]]:
        response = self.context.receive_client.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=most,
            WaitTimeSeconds=min(wait_seconds, constants.MAX_WAIT_TIME_SECONDS),
            VisibilityTimeout=self.context.visibility_timeout_seconds,
            MessageSystemAttributeNames=list(self.system_attribute_names),
            MessageAttributeNames=["All"],
            **self._receive_options(),
        )
        messages: list[dict[str, Any]] = response.get("Messages", [])
        return messages

    def _receive_options(self) -> dict[str, Any]:
        """More ReceiveMessage parameters, for one receive (botocore's retries of it included)."""
        return {}

    def _accept(self, sqs_message: dict[str, Any]) -> SQSMessage | None:
        now = time.monotonic()
        receipt = sqs_message["ReceiptHandle"]
        body = sqs_message.get("Body", "")
        attributes = sqs_message.get("MessageAttributes", {})
        system_attributes = sqs_message.get("Attributes", {})
        count = receive_count(system_attributes)
        try:
            if self.context.decode_body is None:
                decoded = decode(body)
            else:  # large messages (S3): a pointer's body is fetched later, on the worker thread
                decoded = self.context.decode_body(
                    self.queue_name, body, attributes, system_attributes, sqs_message.get("MessageId", "")
                )
        except UndecodableBody as exc:
            logger.error(
                "Message %r on %r cannot be decoded (%s); dead-lettering it.",
                sqs_message.get("MessageId"),
                self.queue_name,
                exc,
            )
            self.capacity.release(1)
            self._give_room(1)
            self._dead_letter(receipt, body, attributes, count, f"undecodable body: {exc}", system_attributes)
            return None
        time_limit_ms = self.context.time_limit_ms(decoded.actor_name)
        self.acks.track(
            Lease(
                queue_url=self.queue_url,
                receipt_handle=receipt,
                received_at=now,
                visible_until=now + self.context.visibility_timeout_seconds,
                hold_until=now + time_limit_ms / 1000 + self.context.visibility_timeout_seconds,
            )
        )
        # A first attempt's wait counts from its send; a later one's would include its backoff.
        sent_at = decoded.message_timestamp / 1000 if count == 1 else None
        self.workload.received(self.queue_name, receipt, sent_at=sent_at)
        return SQSMessage(
            decoded,
            queue_url=self.queue_url,
            receipt_handle=receipt,
            receive_count=count,
            body=body,
            attributes=attributes,
            system_attributes=system_attributes,
            sqs_message_id=sqs_message.get("MessageId"),
        )

    def ack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, SQSMessage)
        self.acks.delete(message.sqs_queue_url, message.sqs_receipt_handle)
        self.workload.let_go((message.sqs_receipt_handle,))
        self.capacity.finish(1)
        self._give_room(1)

    def nack(self, message: dramatiq.MessageProxy) -> None:
        assert isinstance(message, SQSMessage)
        self.capacity.finish(1)
        self._give_room(1)
        delay_ms = message.options.pop(constants.RETRY_DELAY_OPTION, None)
        if delay_ms is not None:
            seconds = max(0, min(int(delay_ms) // 1000, constants.MAX_HIDE_SECONDS))
            self.acks.change_visibility(message.sqs_queue_url, message.sqs_receipt_handle, seconds)
            self.workload.backing_off(message.sqs_receipt_handle, seconds)
            return
        self.workload.let_go((message.sqs_receipt_handle,))
        reason = message.options.pop(constants.DEAD_LETTER_REASON_OPTION, None) or describe_failure(message)
        self._dead_letter(
            message.sqs_receipt_handle,
            message.sqs_body,
            message.sqs_attributes,
            message.sqs_receive_count,
            reason,
            message.sqs_system_attributes,
        )

    def _dead_letter(
        self,
        receipt: str,
        body: str,
        attributes: dict[str, Any],
        receive_count: int,
        reason: str,
        system_attributes: dict[str, Any] | None = None,
    ) -> bool:
        """Copy a message to the dead-letter queue, then delete it; False if it stays put (the copy failed)."""
        self.acks.untrack(receipt)
        if not self.dead_letter_url:
            logger.warning(
                "Deleted a failed message from %r after %d receive(s), as there is no dead-letter queue: %s.",
                self.queue_name,
                receive_count,
                reason,
            )
            self.acks.delete(self.queue_url, receipt)
            return True
        attrs = {k: v for k, v in attributes.items() if not k.startswith("qm-error")}
        attrs[constants.ATTR_ERROR] = {"DataType": "String", "StringValue": reason[:1000] or "unknown"}
        attrs[constants.ATTR_RECEIVE_COUNT] = {"DataType": "Number", "StringValue": str(receive_count)}
        attrs[constants.ATTR_SOURCE_QUEUE] = {"DataType": "String", "StringValue": self.queue_name}
        # A FIFO dead-letter queue needs the group and deduplication ids; a fair queue's keeps its group.
        group = fifo.dead_letter_fields(system_attributes or {}, body, fifo=is_fifo_name(self.dead_letter_url))
        try:
            self.context.client.send_message(
                QueueUrl=self.dead_letter_url, MessageBody=body, MessageAttributes=attrs, **group
            )
        except (BotoCoreError, ClientError) as exc:
            logger.error(
                "Could not dead-letter a message on %r (%s); it stays on the queue and returns after its timeout.",
                self.queue_name,
                exc,
            )
            return False
        logger.warning(
            "Dead-lettered a message from %r after %d receive(s): %s.", self.queue_name, receive_count, reason
        )
        self.acks.delete(self.queue_url, receipt)
        return True

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        handles = [m.sqs_receipt_handle for m in messages if isinstance(m, SQSMessage)]
        self.workload.let_go(handles)
        if handles:
            self.acks.release_now(self.queue_url, handles)
            self.capacity.release(len(handles))
            self._give_room(len(handles))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            self._room.cond.notify_all()
        self.capacity.set_busy(self, False)
        for index, thread in enumerate(self._receivers):
            # A busy receive returns within its short wait: it is waited for. An idle long poll is
            # not (a stop would wait up to 20 s for it): the daemon thread hands back whatever it
            # brings while the process lives; after that, SQS shows it again after its visibility
            # timeout.
            with self._cond:
                polling_idle = index in self._idle_polls
            if not polling_idle:
                thread.join(timeout=self.busy_wait_seconds + RECEIVE_JOIN_MARGIN_SECONDS)
        with self._cond:
            buffered, self.buffer = list(self.buffer), deque()
        self.requeue(buffered)
        self.acks.flush()
