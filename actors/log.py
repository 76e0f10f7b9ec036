"""The `log` message type: writes the payload to the worker's log."""

from __future__ import annotations

import json
import logging
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from broker import settings

logger = logging.getLogger("queue_manager.log")

#: Log levels by the names the schema allows.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@dramatiq.actor(
    actor_name="log",
    queue_name="log",
    max_retries=settings.max_retries,
    min_backoff=settings.min_backoff_ms,
    max_backoff=settings.max_backoff_ms,
    time_limit=settings.time_limit_ms,
    throws=(),
)
def log(payload: dict[str, Any]) -> None:
    """Write `message` at `level` with `fields`, as one JSON line."""
    current = CurrentMessage.get_current_message()
    record = {
        "message_id": current.message_id if current else None,
        "message": payload["message"],
        "fields": payload.get("fields", {}),
    }
    logger.log(LEVELS[payload.get("level", "info")], "%s", json.dumps(record, sort_keys=True, default=str))
