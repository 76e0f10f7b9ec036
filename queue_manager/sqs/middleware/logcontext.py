"""Structured worker logs: each record says which message, type, attempt and queue it is about."""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import dramatiq
from dramatiq.logging import get_logger

from queue_manager import logs

#: When the current thread started its message.
_started: contextvars.ContextVar[float | None] = contextvars.ContextVar("qm_message_started", default=None)

#: The log format when the settings say nothing: JSON unless stderr is a terminal.
DEFAULT_LOG_FORMAT = "auto"


class StructuredLogs(dramatiq.Middleware):
    """Formats a worker process's logs and tags every record with the message being handled.

    Parameters:
      log_format: `json`, `text` or `auto` (text on a terminal, else JSON).
      log_level: The level of queue-manager's own loggers; DEBUG logs every message processed.
    """

    def __init__(self, *, log_format: str = DEFAULT_LOG_FORMAT, log_level: str = "INFO") -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.log_format = log_format
        self.log_level = log_level

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        logs.reformat(self.log_format, level=self.log_level)

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        logs.message_context.set(
            {
                "message_id": message.message_id,
                "type": message.actor_name,
                "attempt": int(getattr(message, "sqs_receive_count", 1)),
                # The SQS queue's name (`qm_webhook`), as the API and the status documents name it.
                "queue": _sqs_queue_name(message),
            }
        )
        _started.set(time.monotonic())

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        elapsed_ms = (time.monotonic() - (_started.get() or time.monotonic())) * 1000
        if exception is None:
            # One line per message costs more CPU than the rest of the ack path: DEBUG, not INFO.
            self.logger.debug("Processed message %r in %.1f ms.", message.message_id, elapsed_ms)
        else:
            self.logger.info(
                "Attempt at message %r failed after %.1f ms: %s.", message.message_id, elapsed_ms,
                type(exception).__name__,
            )  # fmt: skip

    def after_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        logs.message_context.set(None)

    def after_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        logs.message_context.set(None)


def _sqs_queue_name(message: dramatiq.MessageProxy) -> str:
    """The name of the SQS queue a message came from (the last part of its URL), else its Dramatiq queue."""
    url = getattr(message, "sqs_queue_url", None)
    return url.rsplit("/", 1)[-1] if url else message.queue_name
