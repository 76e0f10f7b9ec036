"""The `ordered` message type: a webhook on a FIFO queue, POSTed in order within each group."""

from __future__ import annotations

from typing import Any

from actors.webhook import post
from broker import message_type


@message_type("ordered")  # a FIFO queue: schemas/ordered.json says "x-qm-queue": "fifo"
def ordered(payload: dict[str, Any]) -> None:
    """POST `body` to `url` as `webhook` does; the messages of one group_id go one at a time, in order."""
    post(payload)
