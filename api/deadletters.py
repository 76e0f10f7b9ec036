"""Dead-letter handlers: peek at a type's dead-letter queue and redrive it, each an audit event.

The SQS work is in `sqs.deadletters`; these handlers check the request, run it in the executor,
and log who did what.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError

from api import keys, problems
from api.bodies import read_json
from api.middlewares import bearer_token, key_position
from queue_manager.sqs import constants, deadletters
from queue_manager.sqs.errors import SQSUnavailable, logged, public
from queue_manager.sqs.queues import QueueMissing
from schemas import Validator, Violation, same_dialect, violations

logger = logging.getLogger(__name__)

#: One line per dead-letter action: who (an API key's position, never the key), what, queue, count.
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

T = TypeVar("T")


class InvalidRequest(problems.Unprocessable):
    """Raised for a query parameter or body that breaks its rules (422)."""

    slug, title = "invalid-request", "Invalid Request"


async def list_dead_letters(request: web.Request) -> web.Response:
    """Show up to `limit` dead letters of a type; every one stays on the dead-letter queue."""
    who = caller(request)
    message_type = _known_type(request)
    limit = _limit(request)
    broker = request.app[keys.BROKER]

    def work() -> list[deadletters.DeadLetter]:
        urls = broker.ensure_queue(message_type)
        return broker.dead_letters.peek(urls.dead_letter_url, limit=limit)

    items = await _run(request, work, "read the dead-letter queue")
    queue = broker.dead_letter_queue_name(message_type)
    _audit(who, "peek", queue, len(items))
    return web.json_response(
        {"type": message_type, "queue": queue, "count": len(items), "messages": [_shown(request, i) for i in items]}
    )


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

    result = await _run(request, work, "redrive the dead-letter queue")
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


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_PEEK_LIMIT
    high = deadletters.MAX_PEEK_MESSAGES
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
    """Who sent the request: `key#<n>`, the position of its API key in the configured list, or anonymous.

    Raises 401 for a malformed Authorization header (the auth middleware has refused it already).
    """
    accepted = request.app[keys.API_KEYS]
    position = key_position(bearer_token(request), accepted) if accepted else None
    return "anonymous" if position is None else f"key#{position}"


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
