"""Request handlers: thin, typed, and raising Problems for everything a client can get wrong."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import dramatiq
from aiohttp import web

from api import keys, problems
from api.schemas import envelope_violations
from api.sender import Overloaded
from schemas import Violation
from schemas.checks import PAYLOAD_CHECKS
from sqs import constants
from sqs.errors import MessageTooLarge, SQSUnavailable

logger = logging.getLogger(__name__)

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_SECONDS = 1

#: Media types accepted for a message body.
JSON_TYPES = ("application/json",)


async def post_message(request: web.Request) -> web.Response:
    """Validate one envelope, send it to SQS, answer 202 once SQS has it."""
    document = await _read_json(request)
    message_type, payload, delay_seconds = _validate(request.app, document)
    settings = request.app[keys.SETTINGS]
    broker = request.app[keys.BROKER]
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=message_type, actor_name=message_type, args=(payload,), kwargs={}, options={}
    )
    try:
        entry = broker.build_entry(message, delay_seconds * 1000)
    except MessageTooLarge as exc:
        raise problems.PayloadTooLarge(
            f"The message is {exc.size_bytes} bytes once encoded for SQS (base64 of its JSON); the limit is "
            f"{exc.limit_bytes} bytes, about {constants.MAX_ENCODED_JSON_BYTES} bytes of JSON."
        ) from None
    try:
        result = await request.app[keys.SENDER].send(message_type, entry)
    except (SQSUnavailable, Overloaded) as exc:
        logger.warning("Could not send message %r: %s", message.message_id, exc)
        raise problems.ServiceUnavailable(
            f"SQS did not accept the message: {exc}", retry_after_seconds=RETRY_AFTER_SECONDS
        ) from None
    if not result.ok:
        logger.warning("SQS refused message %r: %s %s.", message.message_id, result.code, result.detail)
        raise problems.ServiceUnavailable(
            f"SQS did not accept the message: {result.code}: {result.detail}", retry_after_seconds=RETRY_AFTER_SECONDS
        )
    logger.info("Accepted message %r of type %r.", message.message_id, message_type)
    return web.json_response(
        {"id": message.message_id, "type": message_type, "queue": settings.queue_name(message_type)}, status=202
    )


async def _read_json(request: web.Request) -> Any:
    if request.content_type not in JSON_TYPES and not request.content_type.endswith("+json"):
        raise problems.UnsupportedMediaType(
            f"The body must be application/json, not {request.content_type or 'unspecified'}."
        )
    raw = await request.read()
    try:
        return json.loads(raw)
    except UnicodeDecodeError as exc:
        raise problems.BadRequest(f"The body is not UTF-8: {exc.reason} at byte {exc.start}.") from None
    except json.JSONDecodeError as exc:
        raise problems.BadRequest(f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except RecursionError:
        raise problems.BadRequest("The body is not valid JSON: it nests too deeply.") from None


def _validate(app: web.Application, document: Any) -> tuple[str, Any, int]:
    errors = envelope_violations(document)
    if errors:
        raise problems.Unprocessable("The envelope is not valid.", errors=errors)
    registry = app[keys.REGISTRY]
    message_type = document["type"]
    if message_type not in registry:
        raise problems.Unprocessable(
            f"Unknown message type {message_type!r}.",
            errors=[Violation("/type", "enum", f"{message_type!r} is not one of {registry.types}")],
        )
    payload = document["payload"]
    errors = registry.validate(message_type, payload)
    check = PAYLOAD_CHECKS.get(message_type)
    if not errors and check is not None:
        errors = check(payload, app[keys.SETTINGS].webhook_allowed_hosts)
    if errors:
        raise problems.Unprocessable(f"The payload is not a valid {message_type!r} message.", errors=errors)
    return message_type, payload, int(document.get("delay_seconds", 0))


async def list_schemas(request: web.Request) -> web.Response:
    registry = request.app[keys.REGISTRY]
    return web.json_response(
        {"types": [{"type": t, "schema": f"/schemas/{t}", "title": registry.schema(t).get("title", t)} for t in registry.types]}
    )


async def get_schema(request: web.Request) -> web.Response:
    registry = request.app[keys.REGISTRY]
    message_type = request.match_info["type"]
    if message_type not in registry:
        raise problems.NotFound(f"No message type {message_type!r}; known: {', '.join(registry.types)}.")
    return web.json_response(registry.schema(message_type), content_type="application/schema+json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when SQS answers and every queue and dead-letter queue exists."""
    broker = request.app[keys.BROKER]
    registry = request.app[keys.REGISTRY]
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(request.app[keys.EXECUTOR], _check_queues, broker, registry.types)
    except Exception as exc:  # any failure means not ready; the reason goes to the client
        raise problems.ServiceUnavailable(f"Not ready: {type(exc).__name__}: {exc}", retry_after_seconds=5) from None
    return web.json_response({"status": "ready", "queues": [broker.sqs_queue_name(t) for t in registry.types]})


def _check_queues(broker: Any, types: list[str]) -> None:
    for message_type in types:
        urls = broker.ensure_queue(message_type)
        for url in (urls.url, urls.dead_letter_url):
            broker.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])


async def list_queues(request: web.Request) -> web.Response:
    """Approximate visible, in-flight and delayed counts of every queue and its dead-letter queue."""
    broker = request.app[keys.BROKER]
    registry = request.app[keys.REGISTRY]
    loop = asyncio.get_running_loop()
    try:
        depths = await asyncio.gather(
            *(loop.run_in_executor(request.app[keys.EXECUTOR], broker.depths, t) for t in registry.types)
        )
    except Exception as exc:  # SQS down, a queue missing: the client gets a 503 that says which
        raise problems.ServiceUnavailable(f"Could not read queue depths: {exc}", retry_after_seconds=5) from None
    return web.json_response(
        {
            "queues": [
                {
                    "type": t,
                    "name": broker.sqs_queue_name(t),
                    **d["queue"],
                    "dead_letter": {"name": broker.sqs_queue_name(t) + constants.DEAD_LETTER_SUFFIX, **d["dead_letter"]},
                }
                for t, d in zip(registry.types, depths, strict=True)
            ]
        }
    )
