"""Message status from the worker: each attempt's start and outcome, as status events.

`started` before an attempt runs; `succeeded` after it returned; at the nack, `retry_scheduled` (with
its error and delay) or `dead_lettered` (with the reason and error), as the retry middleware decided.
Attempts are numbered as the worker numbers them (SQS's receive count, or one more for a FIFO retry
in place). Events go to a StatusWriter: buffered, written in the background, never waited for.

Not seen here, so not recorded by the worker: a body that cannot be decoded (it has no message id),
and a message SQS's redrive policy moves to the dead-letter queue after crash loops (no worker sees
that receive); the dead-letter listing records the latter when it shows it.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import dramatiq
from dramatiq.logging import get_logger

from queue_manager.sqs.constants import DEAD_LETTER_REASON_OPTION, RETRY_DELAY_OPTION
from queue_manager.sqs.message import attempt, describe_failure
from queue_manager.state.base import DEAD_LETTERED, RETRY_SCHEDULED, STARTED, SUCCEEDED, StatusEvent
from queue_manager.state.writer import StatusWriter

#: The longest error text an event carries.
MAX_ERROR_CHARS = 1000


class MessageStatus(dramatiq.Middleware):
    """Records when each attempt starts and how it ends, for GET /messages/{id}.

    Parameters:
      writer: Where events go; None records nothing (status off).
    """

    def __init__(self, *, writer: StatusWriter | None = None) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.writer = writer

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Counted in the master's metrics when they are on (WorkerMetrics set the directory at process boot).
        if self.writer is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR") and self.writer.on_outcome is None:
            from prometheus_client import Counter

            writes = Counter("qm_status_writes", "Status events by outcome: written, dropped, failed.", ["outcome"])
            requests = Counter("qm_status_store_writes", "Write requests to the status store.")
            self.writer.on_outcome = lambda outcome, n: writes.labels(outcome).inc(n)
            self.writer.on_request = requests.inc

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if self.writer is not None:
            self._add(message, STARTED, {})

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if self.writer is not None and exception is None and not message.failed:
            self._add(message, SUCCEEDED, {})

    def before_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # The retry middleware's decision is still in the options here (the consumer's nack takes it out).
        if self.writer is None:
            return
        error = describe_failure(message)[:MAX_ERROR_CHARS]
        delay_ms = message.options.get(RETRY_DELAY_OPTION)
        if delay_ms is not None:
            self._add(message, RETRY_SCHEDULED, {"error": error, "delay_ms": int(delay_ms)})
        else:
            reason = str(message.options.get(DEAD_LETTER_REASON_OPTION) or error)[:MAX_ERROR_CHARS]
            self._add(message, DEAD_LETTERED, {"reason": reason, "error": error})

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        # After the consumers closed and the acks flushed: the last outcomes are in the buffer.
        if self.writer is not None:
            self.writer.close()

    def _add(self, message: dramatiq.MessageProxy, kind: str, detail: dict[str, Any]) -> None:
        assert self.writer is not None
        self.writer.add(
            StatusEvent(message.message_id, kind, time.time(), attempt(message), type=message.actor_name, detail=detail)
        )
