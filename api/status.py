"""Message status in the API: what it records once SQS accepted a message, and GET /messages/{id}.

Recording never delays a 202: the events go to the process's StatusWriter, written in the
background. Reading folds the message's events (`queue_manager.state.status`).

A FIFO send SQS deduplicated is answered with the MessageId of the message that stands. This
process remembers the SQS MessageIds it got in the last five minutes (SQS's deduplication window)
and records `deduplicated` with the id that stands when one comes back for another of our messages.
For sends another API process made, each FIFO send also records its SQS MessageId under an alias
(`sqs:<queue>:<MessageId>`), and a read of a FIFO message still `accepted` looks there: if another
message was recorded first, this one was deduplicated.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from aiohttp import web

from api import keys, problems
from queue_manager import tracing
from queue_manager.sqs.sending import SendResult
from queue_manager.state import status as fold
from queue_manager.state.base import (
    ACCEPTED,
    DEAD_LETTERED,
    DEDUPLICATED,
    DELAYED,
    FAILED,
    REDRIVEN,
    StatusEvent,
    StoreUnavailable,
)
from schemas import Violation

#: The longest `?wait=` a status read may hold the request.
MAX_WAIT_SECONDS: Final = 30.0

#: How often a waiting read looks at the store again.
WAIT_POLL_SECONDS: Final = 0.1


class InvalidQuery(problems.Unprocessable):
    """Raised for a query parameter out of its range (422), as the dead-letter endpoints' invalid requests."""

    slug, title = "invalid-request", "Invalid Request"


def trace_id(request: web.Request) -> str | None:
    """The trace id a message is recorded with: its request's span's with tracing on, else the request's
    W3C `traceparent`, if it holds a valid one."""
    traced = tracing.current_trace_id()
    if traced is not None:
        return traced
    header = request.headers.get("traceparent")
    return None if header is None else tracing.trace_id_of(header.lower())


def location(message_id: str) -> str:
    """Where a message's status is read."""
    return f"/messages/{message_id}"


def record_accepted(
    app: web.Application,
    message_type: str,
    message_id: str,
    result: SendResult,
    *,
    delay_seconds: int,
    trace: str | None,
) -> None:
    """Record that SQS accepted a message (or, on FIFO, dropped it as a duplicate); never raises, never waits."""
    writer = app[keys.STATUS_WRITER]
    if writer is None:
        return
    broker = app[keys.BROKER]
    queue = broker.sqs_queue_name(message_type)
    now = time.time()
    detail: dict[str, Any] = {"trace_id": trace} if trace else {}
    if broker.is_fifo(message_type) and result.sqs_message_id:
        stands = app[keys.SENT_IDS].standing(queue, result.sqs_message_id, message_id)
        if stands is not None:
            detail["stands"] = stands
            writer.add(StatusEvent(message_id, DEDUPLICATED, now, type=message_type, queue=queue, detail=detail))
            return
        alias = fold.sqs_alias(queue, result.sqs_message_id)
        writer.add(
            StatusEvent(alias, ACCEPTED, now, detail={"message_id": message_id}, key=f"{now:017.6f}#{message_id}")
        )
        detail["sqs_message_id"] = result.sqs_message_id
    kind = ACCEPTED
    if delay_seconds > 0:
        kind, detail["until"] = DELAYED, now + delay_seconds
    writer.add(StatusEvent(message_id, kind, now, type=message_type, queue=queue, detail=detail))


#: How long a redrive or a delete waits for its status events to be written before it answers.
RECORDED_WAIT_SECONDS = 1.0


async def recorded(app: web.Application) -> None:
    """Wait (a little, at most) until this process's status events so far are written: an operator's
    redrive or delete then answers with its history already readable, before a worker's next events."""
    writer = app[keys.STATUS_WRITER]
    if writer is not None:
        await asyncio.to_thread(writer.flush, RECORDED_WAIT_SECONDS)


def record_redriven(app: web.Application, message_type: str, message_ids: list[str], *, at: float) -> None:
    """Record that these messages went back from the dead-letter queue to their queue, in a move that began `at`."""
    writer = app[keys.STATUS_WRITER]
    if writer is None:
        return
    queue = app[keys.BROKER].sqs_queue_name(message_type)
    for message_id in message_ids:
        if fold.is_message_id(message_id):
            writer.add(StatusEvent(message_id, REDRIVEN, at, type=message_type, queue=queue))


def record_deleted(app: web.Application, message_type: str, message_ids: list[str]) -> None:
    """Record that these dead letters were deleted for good: nothing more will happen to them (`failed`)."""
    writer = app[keys.STATUS_WRITER]
    if writer is None:
        return
    now = time.time()
    queue = app[keys.BROKER].sqs_queue_name(message_type)
    for message_id in message_ids:
        if fold.is_message_id(message_id):
            writer.add(
                StatusEvent(message_id, FAILED, now, type=message_type, queue=queue, detail={"reason": "deleted"})
            )


def record_dead_letters(app: web.Application, message_type: str, letters: list[dict[str, Any]]) -> None:
    """Record dead letters a peek found that no worker dead-lettered: SQS's redrive policy moved them.

    Those carry no `qm-error` attribute. The event's key is fixed per dead letter (its SQS MessageId),
    so peeking again writes the same event, which the store keeps once.
    """
    writer = app[keys.STATUS_WRITER]
    if writer is None:
        return
    now = time.time()
    queue = app[keys.BROKER].sqs_queue_name(message_type)
    for letter in letters:
        message_id = letter.get("id")
        if letter.get("error") is not None or not isinstance(message_id, str) or not fold.is_message_id(message_id):
            continue
        reason = "the queue's redrive policy: received maxReceiveCount times without an outcome (crash loop)"
        writer.add(
            StatusEvent(
                message_id,
                DEAD_LETTERED,
                now,
                type=message_type,
                queue=queue,
                detail={"reason": reason},
                key=f"policy#{letter.get('sqs_message_id')}",
            )
        )


async def get_message(request: web.Request) -> web.Response:
    """A message's status document; `?wait=N` (≤ 30 s) answers once it changes or is final."""
    message_id = request.match_info["id"]
    if not fold.is_message_id(message_id):
        raise problems.NotFound(
            f"No message {message_id[:100]!r}: message ids are lower-case UUIDs, as POST /messages answers them."
        )
    wait = _wait(request)
    app = request.app
    if app[keys.STATUS_STORE] is None:
        raise problems.NotFound(
            f"No status for message {message_id!r}: message status is off here (QM_STATUS=off, or no QM_STATE_DIR)."
        )
    document = await _read(app, message_id, flush_first=True)
    deadline = asyncio.get_running_loop().time() + wait
    while wait and (document is None or document["state"] not in fold.FINAL_STATES):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(WAIT_POLL_SECONDS, remaining))
        later = await _read(app, message_id)
        if document is None and later is None:
            continue
        if document is None or later is None or _changed(document, later):
            document = later
            break
    if document is None:
        raise problems.NotFound(f"No message {message_id!r} is known here.")
    retention_seconds = app[keys.SETTINGS].status_retention_seconds
    if time.time() - document.pop("_first_at") > retention_seconds:
        raise problems.Gone(
            f"Message {message_id!r} was accepted more than QM_STATUS_RETENTION_SECONDS "
            f"({retention_seconds} s) ago; its status is no longer kept."
        )
    return web.json_response(document)


def _changed(before: dict[str, Any], after: dict[str, Any]) -> bool:
    def mark(d: dict[str, Any]) -> tuple[Any, ...]:
        return d["state"], d["attempts"], len(d["events"]), d.get("events_omitted"), d["stale"]

    return mark(before) != mark(after)


async def _read(app: web.Application, message_id: str, *, flush_first: bool = False) -> dict[str, Any] | None:
    store = app[keys.STATUS_STORE]
    writer = app[keys.STATUS_WRITER]
    assert store is not None

    def work() -> dict[str, Any] | None:
        events = store.read(message_id)
        if not events and flush_first and writer is not None:
            # Just accepted here, its event still in this process's buffer: write it, then look again.
            writer.flush(timeout=1.0)
            events = store.read(message_id)
        document = fold.fold(
            message_id, events, now=time.time(), stale=writer is not None and writer.missed(message_id)
        )
        if document is None:
            return None
        document["_first_at"] = min(e.at for e in events)
        sqs_id = next((e.detail.get("sqs_message_id") for e in events if e.kind == ACCEPTED), None)
        if document["state"] == "accepted" and document["queue"] and sqs_id:
            stands = fold.standing(message_id, store.read(fold.sqs_alias(document["queue"], str(sqs_id))))
            if stands is not None:
                document.update(state="deduplicated", stands=stands)
        return document

    try:
        return await asyncio.get_running_loop().run_in_executor(app[keys.EXECUTOR], work)
    except StoreUnavailable as exc:
        raise problems.ServiceUnavailable(
            f"The status store cannot be read now: {exc}", retry_after_seconds=problems.RETRY_AFTER_READ_SECONDS
        ) from None


def _wait(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_SECONDS:
        message = f"must be a number of seconds from 0 to {MAX_WAIT_SECONDS:g}, not {raw[:50]!r}"
        raise InvalidQuery(f"The wait {message}.", errors=[Violation("/wait", "maximum", message)])
    return wait
