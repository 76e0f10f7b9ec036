"""Dead-letter handlers: peek at a type's dead-letter queue and redrive it, each an audit event.

The SQS work is in `sqs.deadletters`; these handlers check the request, run it in the executor,
and log who did what.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from botocore.exceptions import BotoCoreError, ClientError
from jsonschema import Draft202012Validator

from api import keys, problems
from api.handlers import read_json
from queue_manager.sqs import constants, deadletters
from queue_manager.sqs.admin import QueueMissing
from queue_manager.sqs.errors import SQSUnavailable
from schemas import Violation, violations

logger = logging.getLogger(__name__)

#: One line per dead-letter action: who (an API key's position, never the key), what, queue, count.
audit_logger = logging.getLogger("queue_manager.audit")

#: The number of dead letters a peek shows when the request does not say.
DEFAULT_PEEK_LIMIT = 10

#: Seconds a client is asked to wait after SQS trouble.
RETRY_AFTER_SECONDS = 5

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

_REDRIVE = Draft202012Validator(REDRIVE_SCHEMA)

T = TypeVar("T")


class InvalidRequest(problems.Unprocessable):
    """Raised for a query parameter or body that breaks its rules (422)."""

    slug, title = "invalid-request", "Invalid Request"


async def list_dead_letters(request: web.Request) -> web.Response:
    """Show up to `limit` dead letters of a type; every one stays on the dead-letter queue."""
    message_type = _known_type(request)
    limit = _limit(request)
    broker = request.app[keys.BROKER]

    def work() -> list[deadletters.DeadLetter]:
        urls = broker.ensure_queue(message_type)
        return deadletters.peek(broker.client, urls.dead_letter_url, limit=limit)

    items = await _run(request, work, "read the dead-letter queue")
    queue = broker.sqs_queue_name(message_type) + constants.DEAD_LETTER_SUFFIX
    _audit(request, "peek", queue, len(items))
    return web.json_response(
        {"type": message_type, "queue": queue, "count": len(items), "messages": [i.as_dict() for i in items]}
    )


async def redrive(request: web.Request) -> web.Response:
    """Move a type's dead letters (all, or the listed ids) back to its queue."""
    message_type = _known_type(request)
    document = await _read_body(request)
    errors = violations(_REDRIVE, document)
    if errors:
        raise InvalidRequest("The redrive request is not valid.", errors=errors)
    ids: list[str] | None = document.get("ids")
    broker = request.app[keys.BROKER]

    def work() -> deadletters.RedriveResult:
        urls = broker.ensure_queue(message_type)
        return deadletters.redrive(broker.client, urls.dead_letter_url, urls.url, ids=ids)

    result = await _run(request, work, "redrive the dead-letter queue")
    _audit(
        request,
        "redrive",
        broker.sqs_queue_name(message_type) + constants.DEAD_LETTER_SUFFIX,
        result.moved,
        method=result.method,
    )
    return web.json_response(result.as_dict())


def _known_type(request: web.Request) -> str:
    registry = request.app[keys.REGISTRY]
    name = request.match_info["name"]
    if name not in registry:
        raise problems.NotFound(f"No message type {name!r}; known: {', '.join(registry.types)}.")
    return name


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
        logger.warning("Could not %s: %s.", what, exc)
        raise problems.ServiceUnavailable(f"Could not {what}: {exc}", retry_after_seconds=RETRY_AFTER_SECONDS) from None


def caller(request: web.Request) -> str:
    """Who sent the request: `key#<n>`, the position of its API key in the configured list, or anonymous."""
    accepted = request.app[keys.SETTINGS].accepted_api_keys()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    supplied = token.strip().encode()
    if not accepted or scheme.lower() != "bearer" or not supplied:
        return "anonymous"
    position = -1
    for index, key in enumerate(accepted):
        # Compare with every key, as the auth middleware does, so timing says nothing.
        if hmac.compare_digest(supplied, key.encode()) and position < 0:
            position = index
    return f"key#{position}" if position >= 0 else "anonymous"


def _audit(request: web.Request, what: str, queue: str, count: int, **more: str) -> None:
    who = caller(request)
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
