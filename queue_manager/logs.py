"""Logging for both halves: one line per event, JSON when not on a terminal, with message context.

Every record logged while a worker thread handles a message carries `message_id`, `type`,
`attempt` and `queue`, so one message can be followed from the POST to its result.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The fields a message's log records carry.
CONTEXT_FIELDS = ("message_id", "type", "attempt", "queue")

#: The human format (dramatiq's, so both halves read alike on a terminal).
TEXT_FORMAT = "[%(asctime)s] [PID %(process)d] [%(threadName)s] [%(name)s] [%(levelname)s] %(message)s"

#: The message being handled by this thread, if any.
message_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "qm_message_context", default=None
)


#: Set by queue_manager.tracing while tracing is on: the current span's `trace_id` and `span_id`,
#: or None outside any span. None costs nothing.
trace_fields: Callable[[], dict[str, str] | None] | None = None


class MessageContextFilter(logging.Filter):
    """Adds the current message's fields (and, with tracing on, the current span's ids) to every
    record that does not set them itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = message_context.get()
        if context:
            for key, value in context.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        if trace_fields is not None:
            ids = trace_fields()
            if ids:
                for key, value in ids.items():
                    if not hasattr(record, key):
                        setattr(record, key, value)
        return True


def formatter(log_format: str) -> logging.Formatter:
    """JSON for `json`, text for `text`; `auto` picks text when stderr is a terminal."""
    if log_format == "auto":
        log_format = "text" if os.isatty(2) else "json"
    if log_format == "text":
        return logging.Formatter(TEXT_FORMAT)
    return JsonFormatter(
        "%(asctime)s %(levelname)s %(name)s %(process)d %(threadName)s %(message)s",
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "threadName": "thread",
                       "process": "pid"},
    )  # fmt: skip


#: The loggers of queue-manager's own code, which QM_LOG_LEVEL sets (libraries stay at INFO).
OWN_LOGGERS = ("api", "actors", "broker", "queue_manager", "queue_manager.log")

#: Library loggers held above INFO: botocore's "Found credentials in environment variables." came
#: once per process on every start and says nothing a user acts on.
QUIET_LOGGERS = {"botocore.credentials": logging.WARNING}


def quiet_libraries() -> None:
    """Hold the QUIET_LOGGERS at their level."""
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


# At import, not only in configure(): a worker process builds its boto3 session (and botocore logs
# where it found credentials) before its logging is set up.
quiet_libraries()


def configure(log_format: str, *, level: str = "INFO") -> None:
    """Log to stderr in `log_format` (the API's set-up)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.addFilter(MessageContextFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    set_level(level)


def reformat(log_format: str, *, level: str = "INFO") -> None:
    """Give the handlers already on the root logger our format and context (a worker process's set-up)."""
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setFormatter(formatter(log_format))
        handler.addFilter(MessageContextFilter())
    set_level(level)


def set_level(level: str) -> None:
    """Set the level of queue-manager's own loggers; DEBUG adds one line per message."""
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    quiet_libraries()
