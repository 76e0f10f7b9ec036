"""Dead-letter handlers: peek at a type's dead-letter queue (filtered), redrive and delete, each an audit event.

The SQS work is in `sqs.deadletters`; these handlers check the request, run it in the executor,
and log who did what.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from api import access, keys, problems, status
from api.bodies import read_json
from queue_manager.sqs import constants, deadletters
from queue_manager.sqs.errors import SQSUnavailable, logged, public
from queue_manager.sqs.queues import QueueMissing
from schemas import Validator, Violation, same_dialect, violations

logger = logging.getLogger(__name__)

#: One line per dead-letter action: who (an API key's name, never the key), what, queue, count.
audit_logger = logging.getLogger("queue_manager.audit")

#: The number of dead letters a peek shows when the request does not say.
DEFAULT_PEEK_LIMIT = 10


#: The largest body of a redrive request.
MAX_REDRIVE_BODY_BYTES = 256 * 1024

#: The request body of POST /queues/{name}/redrive: `{}` moves everything.
REDRIVE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:queue-manager:schema:redrive",
    "title": "Redrive request",
    "type": "object",
    "properties": {
        "ids": {
            "type": "array",
            "minItems": 1,
            "maxItems": deadletters.MAX_REDRIVE_MESSAGES,
            "uniqueItems": True,
            "items": {"type": "string", "minLength": 1, "maxLength": 255},
            "description": "Message ids to move (qm-message-id, or the SQS message id); absent means all.",
        }
    },
    "additionalProperties": False,
}

_REDRIVE = Validator(same_dialect(REDRIVE_SCHEMA))

#: The request body of POST /queues/{name}/dead-letters/delete: the ids to delete (never "all").
DELETE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:queue-manager:schema:dead-letter-delete",
    "title": "Dead-letter delete request",
    "type": "object",
    "properties": {"ids": REDRIVE_SCHEMA["properties"]["ids"]},
    "required": ["ids"],
    "additionalProperties": False,
}

_DELETE = Validator(same_dialect(DELETE_SCHEMA))

#: The largest age a listing's filter takes: SQS keeps a message 14 days at most.
MAX_AGE_FILTER_SECONDS = 14 * 86400

T = TypeVar("T")


class InvalidRequest(problems.Unprocessable):
    """Raised for a query parameter or body that breaks its rules (422)."""

    slug, title = "invalid-request", "Invalid Request"


async def list_dead_letters(request: web.Request) -> web.Response:
    """Show up to `limit` dead letters of a type, filtered if asked; every one stays on the dead-letter queue.

    With a filter (`error`, `id`, `older_than_seconds`, `newer_than_seconds`) up to `scan` dead
    letters (default and most: 1,000) are looked at, and the answer also gives the ids of every
    match (`matched_ids`): what a redrive or delete of the filtered set acts on.
    """
    who = caller(request)
    message_type = _known_type(request)
    matches = _filter(request)
    scan = _int_query(request, "scan", 1, deadletters.MAX_SCAN_MESSAGES)
    with_payload = request.query.get("payload", "false").lower() in ("1", "true", "yes")
    filtered = matches is not None or scan is not None
    limit = _limit(request, high=deadletters.MAX_SCAN_MESSAGES if filtered else deadletters.MAX_PEEK_MESSAGES)
    looked_at = (scan or deadletters.MAX_SCAN_MESSAGES) if filtered else limit
    broker = request.app[keys.BROKER]

    def work() -> list[deadletters.DeadLetter]:
        urls = broker.ensure_queue(message_type)
        return broker.dead_letters.peek(urls.dead_letter_url, limit=looked_at, with_payload=with_payload)

    items = await _run(request, work, "read the dead-letter queue")
    listed = [i.as_dict() for i in items]
    # Dead letters no worker recorded (SQS's redrive policy moved them) get their status here.
    status.record_dead_letters(request.app, message_type, listed)
    queue = broker.dead_letter_queue_name(message_type)
    _audit(who, "peek", queue, len(items))
    chosen = [i for i in items if matches is None or matches(i)]
    if filtered:  # newest first, as a console lists them
        chosen.sort(key=lambda i: i.sent_timestamp_ms or 0, reverse=True)
    answer: dict[str, Any] = {
        "type": message_type,
        "queue": queue,
        "count": min(limit, len(chosen)),
        "messages": [_shown(request, i) for i in chosen[:limit]],
    }
    if filtered:
        answer.update(scanned=len(items), matched=len(chosen), matched_ids=[i.id or i.sqs_message_id for i in chosen])
    return web.json_response(answer)


async def delete_dead_letters(request: web.Request) -> web.Response:
    """Delete the listed dead letters of a type for good; each is received and checked before it is deleted."""
    who = caller(request)
    message_type = _known_type(request)
    document = await _read_body(request)
    errors = violations(_DELETE, document)
    if errors:
        raise InvalidRequest("The delete request is not valid.", errors=errors)
    ids: list[str] = document["ids"]
    broker = request.app[keys.BROKER]

    def work() -> deadletters.DeleteResult:
        urls = broker.ensure_queue(message_type)
        return broker.dead_letters.delete(urls.dead_letter_url, ids)

    result = await _run(request, work, "delete from the dead-letter queue")
    _audit(who, "delete", broker.dead_letter_queue_name(message_type), result.deleted)
    status.record_deleted(request.app, message_type, result.ids)
    await status.recorded(request.app)
    return web.json_response(result.as_dict())


def _filter(request: web.Request) -> Callable[[deadletters.DeadLetter], bool] | None:
    """The listing's filter from its query (all given conditions must hold), or None without one."""
    error = request.query.get("error", "").strip().lower()
    wanted_id = request.query.get("id", "").strip().lower()
    older = _int_query(request, "older_than_seconds", 0, MAX_AGE_FILTER_SECONDS)
    newer = _int_query(request, "newer_than_seconds", 0, MAX_AGE_FILTER_SECONDS)
    if not (error or wanted_id or older is not None or newer is not None):
        return None
    now_ms = time.time() * 1000

    def matches(item: deadletters.DeadLetter) -> bool:
        if error and error not in (item.error or "").lower():
            return False
        if wanted_id and not any(wanted_id in (x or "").lower() for x in (item.id, item.sqs_message_id)):
            return False
        age = None if item.sent_timestamp_ms is None else (now_ms - item.sent_timestamp_ms) / 1000
        if older is not None and (age is None or age < older):
            return False
        return newer is None or (age is not None and age <= newer)

    return matches


def _int_query(request: web.Request, name: str, low: int, high: int) -> int | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value, keyword = low - 1, "type"
    else:
        keyword = "minimum" if value < low else "maximum"
    if not low <= value <= high:
        message = f"must be an integer between {low} and {high}, not {raw!r}"
        raise InvalidRequest(f"The {name} {message}.", errors=[Violation(f"/{name}", keyword, message)])
    return value


async def redrive(request: web.Request) -> web.Response:
    """Move a type's dead letters (all, or the listed ids) back to its queue."""
    # Everything that can refuse the request runs before the move: nothing may fail once messages moved.
    who = caller(request)
    message_type = _known_type(request)
    document = await _read_body(request)
    errors = violations(_REDRIVE, document)
    if errors:
        raise InvalidRequest("The redrive request is not valid.", errors=errors)
    ids: list[str] | None = document.get("ids")
    broker = request.app[keys.BROKER]

    def work() -> deadletters.RedriveResult:
        urls = broker.ensure_queue(message_type)
        return broker.dead_letters.redrive(urls.dead_letter_url, urls.url, ids=ids)

    # Recorded as of the start of the move: a worker may start a message moved back before this answers.
    moving_since = time.time()
    result = await _run(request, work, "redrive the dead-letter queue")
    status.record_redriven(request.app, message_type, result.ids, at=moving_since)
    await status.recorded(request.app)
    _audit(
        who,
        "redrive",
        broker.dead_letter_queue_name(message_type),
        result.moved,
        method=result.method,
    )
    return web.json_response(result.as_dict())


def _shown(request: web.Request, item: deadletters.DeadLetter) -> dict[str, Any]:
    """A dead letter as listed; one whose body is in S3 (large messages) also says where to download it."""
    shown = item.as_dict()
    if item.payload_location is not None and item.id is not None:
        shown["payload_url"] = f"/queues/{request.match_info['name']}/dead-letters/{item.id}/payload"
    return shown


def _known_type(request: web.Request) -> str:
    """The message type a path names: by the type, or by its queue's or dead-letter queue's name (GET /queues)."""
    registry = request.app[keys.REGISTRY]
    broker = request.app[keys.BROKER]
    name = request.match_info["name"]
    for message_type in registry.types:
        if name in (message_type, broker.sqs_queue_name(message_type), broker.dead_letter_queue_name(message_type)):
            return message_type
    queues = ", ".join(broker.sqs_queue_name(t) for t in registry.types)
    raise problems.NotFound(
        f"No message type or queue {name!r}; known: {', '.join(registry.types)} "
        f"(queues {queues} and their {constants.DEAD_LETTER_SUFFIX})."
    )


def _limit(request: web.Request, *, high: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PEEK_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
        keyword = "type"
    else:
        keyword = "minimum" if limit < 1 else "maximum"
    if not 1 <= limit <= high:
        message = f"must be an integer between 1 and {high}, not {raw!r}"
        raise InvalidRequest(f"The limit {message}.", errors=[Violation("/limit", keyword, message)])
    return limit


async def _read_body(request: web.Request) -> Any:
    """The JSON body, where an empty one means `{}`."""
    if request.content_length == 0 or (request.content_length is None and not request.body_exists):
        return {}
    # The same 400, 413 and 415 problems as the message endpoints.
    return await read_json(request, limit_bytes=MAX_REDRIVE_BODY_BYTES)


async def _run(request: web.Request, work: Callable[[], T], what: str) -> T:
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(request.app[keys.EXECUTOR], work)
    except (BotoCoreError, ClientError, SQSUnavailable, QueueMissing) as exc:
        logger.warning("Could not %s: %s.", what, logged(exc))
        raise problems.ServiceUnavailable(
            f"Could not {what}: {public(exc)}", retry_after_seconds=problems.RETRY_AFTER_READ_SECONDS
        ) from None


def caller(request: web.Request) -> str:
    """Who sent the request: its API key's name (`key#<n>` for a bare key: its position), or anonymous."""
    return access.caller(request).name


def _audit(who: str, what: str, queue: str, count: int, **more: str) -> None:
    details = "".join(f" {k}={v}" for k, v in more.items())
    audit_logger.info(
        "who=%s what=%s queue=%s count=%d%s.",
        who,
        what,
        queue,
        count,
        details,
        extra={"audit": {"who": who, "what": what, "queue": queue, "count": count, **more}},
    )
