"""The `log` message type: writes the payload to the worker's log."""

from __future__ import annotations

import logging
from typing import Any

from broker import message_type

logger = logging.getLogger("queue_manager.log")

#: Log levels by the names the schema allows.
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


@message_type("log", throws=())
def log(payload: dict[str, Any]) -> None:
    """Write `message` at `level` with `fields`, as one JSON line."""
    # One structured record: the message as its text, its fields as a field of their own (the
    # message id, type and attempt are added by the StructuredLogs middleware).
    logger.log(
        LEVELS[payload.get("level", "info")], "%s", payload["message"], extra={"fields": payload.get("fields", {})}
    )
