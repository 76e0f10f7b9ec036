"""The consumer of a queue SQS cannot set up yet: said once, waited for quietly, then consumed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import dramatiq
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from dramatiq.logging import get_logger

from queue_manager.sqs.queues import QueueMissing

#: Why a queue may not be set up yet, and may be later: no credentials, no endpoint, SQS refusing
#: or throttling, or a queue queue-manager may not create and nobody has created yet.
NOT_YET = (BotoCoreError, ClientError, QueueMissing)

#: The wait before the second try to set up a queue; it doubles after each failure.
FIRST_RETRY_SECONDS = 1.0

#: The longest wait between two tries.
MAX_RETRY_SECONDS = 30.0

#: How long `next()` waits once the worker stops (Dramatiq's consumer thread then sees it must stop).
STOPPING_WAIT_SECONDS = 0.05


class PendingConsumer(dramatiq.Consumer):
    """Stands in for a queue's consumer until the queue can be set up, then hands over to it.

    Dramatiq's consumer thread logs any error of `broker.consume` as CRITICAL with its traceback
    and calls it again every 3 s, forever. This says once, as a WARNING, why the queue cannot be
    consumed yet, then tries `connect` again with backoff (each failure at DEBUG), answering no
    message meanwhile so that the worker stops as promptly as ever.

    Parameters:
      queue_name: The Dramatiq queue.
      sqs_name: Its SQS name, for the log.
      error: Why it cannot be set up now.
      connect: Sets the queue up and returns its consumer; raises one of NOT_YET while it cannot.
      stopping: Set when the worker stops: no more tries.
      timeout_ms: How long `next()` waits when there is nothing to hand out.
    """

    def __init__(
        self,
        *,
        queue_name: str,
        sqs_name: str,
        error: Exception,
        connect: Callable[[], dramatiq.Consumer],
        stopping: threading.Event,
        timeout_ms: int,
    ) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.queue_name = queue_name
        self.sqs_name = sqs_name
        self.connect = connect
        self.stopping = stopping
        self.timeout_ms = timeout_ms
        self.consumer: dramatiq.Consumer | None = None
        self.retry_seconds = FIRST_RETRY_SECONDS
        self.next_try = time.monotonic() + self.retry_seconds
        # botocore reads credentials once, when the broker's client is made: retrying cannot find them.
        hint = (
            " AWS credentials are read at start: set them and restart the worker."
            if isinstance(error, NoCredentialsError)
            else ""
        )
        self.logger.warning(
            "Cannot consume queue %r yet (%s: %s); trying again quietly until SQS can be reached.%s",
            sqs_name,
            type(error).__name__,
            error,
            hint,
            extra={"queue": queue_name},
        )

    def __next__(self) -> dramatiq.MessageProxy | None:
        if self.consumer is not None:
            return next(self.consumer)
        if not self.stopping.is_set() and time.monotonic() >= self.next_try:
            try:
                self.consumer = self.connect()
            except NOT_YET as exc:
                self.retry_seconds = min(self.retry_seconds * 2, MAX_RETRY_SECONDS)
                self.next_try = time.monotonic() + self.retry_seconds
                self.logger.debug("Queue %r still cannot be set up: %s.", self.queue_name, exc)
            else:
                self.logger.info("Queue %r is set up; consuming it.", self.sqs_name)
                return next(self.consumer)
        if self.stopping.is_set():
            time.sleep(STOPPING_WAIT_SECONDS)
        else:
            # Until the next try, at most the consumer's timeout; a stop ends the wait at once.
            self.stopping.wait(min(self.timeout_ms / 1000, max(0.0, self.next_try - time.monotonic())))
        return None

    def ack(self, message: dramatiq.MessageProxy) -> None:
        assert self.consumer is not None, "a message was acked before its queue was consumed"
        self.consumer.ack(message)

    def nack(self, message: dramatiq.MessageProxy) -> None:
        assert self.consumer is not None, "a message was nacked before its queue was consumed"
        self.consumer.nack(message)

    def requeue(self, messages: Iterable[dramatiq.MessageProxy]) -> None:
        if self.consumer is not None:
            self.consumer.requeue(messages)

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
