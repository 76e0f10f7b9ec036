"""`dramatiq actors bench.marks`: the shipped actors, with `log` marking when it starts each message.

The shipped `log` actor keeps its name, queue and options; only its body is wrapped, to append
"<time.time()> <bench id> <pid> <received> <accepted>" to BENCH_MARKS first and then run the shipped
body. `<received>` is the `time.time()` at which the receive that brought the message returned (the
consumer's `_receive` and `_accept` are wrapped to note it per bench id: a few microseconds a message,
on the receiver thread), `<accepted>` the message's `SentTimestamp`, when SQS took it (milliseconds;
the bench's SQS server runs on the same host and clock). Everything else is `dramatiq actors` as shipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from actors import log as shipped
from bench.actors import MARK_FIELD, mark_start
from queue_manager.sqs.consumer import QMConsumer
from queue_manager.sqs.message import SQSMessage

_shipped_body: Callable[[dict[str, Any]], None] = shipped.log.fn
_shipped_receive = QMConsumer._receive
_shipped_accept = QMConsumer._accept

#: When each receiver thread's last receive returned.
_returned = threading.local()
#: Bench id -> when the receive that brought it returned and when SQS accepted it (popped when its actor starts).
_received: dict[str, tuple[float, float | None]] = {}


def _timed_receive(self: QMConsumer, most: int, *, wait_seconds: int) -> list[dict[str, Any]]:
    messages = _shipped_receive(self, most, wait_seconds=wait_seconds)
    _returned.at = time.time()
    return messages


def _noted_accept(self: QMConsumer, sqs_message: dict[str, Any]) -> SQSMessage | None:
    message = _shipped_accept(self, sqs_message)
    if message is not None and message.actor_name == "log" and message.args:
        payload = message.args[0]
        ident = payload.get("fields", {}).get(MARK_FIELD) if isinstance(payload, dict) else None
        if ident is not None:
            sent = message.sqs_system_attributes.get("SentTimestamp")
            accepted = int(sent) / 1000 if sent is not None else None
            _received[str(ident)] = (getattr(_returned, "at", time.time()), accepted)
    return message


def _marked_log(payload: dict[str, Any]) -> None:
    ident = payload.get("fields", {}).get(MARK_FIELD)
    received, accepted = _received.pop(str(ident), (None, None)) if ident is not None else (None, None)
    mark_start(payload, received=received, accepted=accepted)
    _shipped_body(payload)


QMConsumer._receive = _timed_receive  # type: ignore[method-assign]
QMConsumer._accept = _noted_accept  # type: ignore[method-assign]
shipped.log.fn = _marked_log
