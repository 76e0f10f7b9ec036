"""Request handlers: thin, typed, and raising Problems for everything a client can get wrong."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
from typing import Any

from aiohttp import web

from api import keys, problems
from api.ingest import Prepared, prepare, submit
from api.schemas import MAX_BATCH_BODY_BYTES, MAX_MESSAGE_BODY_BYTES, batch_violations
from queue_manager.sqs import constants

logger = logging.getLogger(__name__)

#: Media types accepted for a message body.
JSON_TYPES = ("application/json",)

#: Why /queues answers oldest_age_seconds as null: no SQS call that leaves messages alone tells it.
OLDEST_AGE_NOTE = (
    "null: SQS's GetQueueAttributes does not report the age of the oldest message (CloudWatch's "
    "ApproximateAgeOfOldestMessage metric does), and receiving messages to find it would disturb them."
)


async def post_message(request: web.Request) -> web.Response:
    """Validate one envelope, send it to SQS, answer 202 once SQS has it."""
    document = await read_json(request, limit_bytes=MAX_MESSAGE_BODY_BYTES)
    prepared = prepare(request.app, document, header_key=request.headers.get("Idempotency-Key"))
    answer, replayed = await submit(request.app, prepared)
    headers = {"Idempotent-Replayed": "true"} if replayed else {}
    return web.json_response(answer, status=202, headers=headers)


async def post_batch(request: web.Request) -> web.Response:
    """Validate up to 100 envelopes one by one, send the valid ones; 202 if all went, else 207."""
    document = await read_json(request, limit_bytes=MAX_BATCH_BODY_BYTES)
    errors = batch_violations(document)
    if errors:
        raise problems.Unprocessable("The batch is not valid.", errors=errors)
    results: list[dict[str, Any] | None] = [None] * len(document["messages"])
    sends: dict[int, Prepared] = {}
    for index, envelope in enumerate(document["messages"]):
        try:
            sends[index] = prepare(request.app, envelope)
        except problems.Problem as problem:
            results[index] = _entry_failure(index, problem)
    outcomes = await asyncio.gather(*(submit(request.app, p) for p in sends.values()), return_exceptions=True)
    for index, outcome in zip(sends, outcomes, strict=True):
        if isinstance(outcome, problems.Problem):
            results[index] = _entry_failure(index, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            answer, _ = outcome
            results[index] = {"index": index, "status": 202, **answer}
    everything_sent = all(r is not None and r["status"] == 202 for r in results)
    return web.json_response({"results": results}, status=202 if everything_sent else 207)


def _entry_failure(index: int, problem: problems.Problem) -> dict[str, Any]:
    result: dict[str, Any] = {"index": index, "status": problem.status, "detail": problem.detail}
    if problem.errors is not None:
        result["errors"] = [v.as_dict() for v in problem.errors]
    if "Retry-After" in problem.headers:
        result["retry_after"] = int(problem.headers["Retry-After"])
    return result


async def read_json(request: web.Request, *, limit_bytes: int) -> Any:
    if request.content_type not in JSON_TYPES and not request.content_type.endswith("+json"):
        raise problems.UnsupportedMediaType(
            f"The body must be application/json, not {request.content_type or 'unspecified'}."
        )
    too_large = problems.PayloadTooLarge(
        f"The request body is larger than {limit_bytes} bytes, the most {request.path} accepts "
        "(a message must fit in SQS's 1 MiB once base64-encoded)."
    )
    if request.content_length is not None and request.content_length > limit_bytes:
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:  # a body without Content-Length, past client_max_size
        raise too_large from None
    if len(raw) > limit_bytes:
        raise too_large
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise problems.BadRequest(f"The body is not UTF-8: {exc.reason} at byte {exc.start}.") from None
    except json.JSONDecodeError as exc:
        raise problems.BadRequest(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    except RecursionError:
        raise problems.BadRequest("The body is not valid JSON: it nests too deeply.") from None
    except NotJSONNumber as exc:
        raise problems.BadRequest(f"The body is not valid JSON: {exc}.") from None
    except ValueError:  # int() refuses integers longer than sys.get_int_max_str_digits()
        raise problems.BadRequest(
            f"The body is not valid JSON: an integer has more than {sys.get_int_max_str_digits()} digits."
        ) from None


class NotJSONNumber(ValueError):
    """Raised for NaN, Infinity or a number past a double's range: Python reads them, JSON has none."""


def _reject_constant(token: str) -> Any:
    raise NotJSONNumber(f"{token} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJSONNumber(f"the number {text} is out of range")
    return value


async def list_schemas(request: web.Request) -> web.Response:
    registry = request.app[keys.REGISTRY]
    return web.json_response(
        {
            "types": [
                {"type": t, "schema": f"/schemas/{t}", "title": registry.schema(t).get("title", t)}
                for t in registry.types
            ]
        }
    )


async def get_schema(request: web.Request) -> web.Response:
    registry = request.app[keys.REGISTRY]
    message_type = request.match_info["type"]
    if message_type not in registry:
        raise problems.NotFound(f"No message type {message_type!r}; known: {', '.join(registry.types)}.")
    return web.json_response(registry.schema(message_type), content_type="application/schema+json")


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document, built at start-up from the message schemas."""
    return web.json_response(request.app[keys.OPENAPI])


async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics: requests, latency, send batch sizes, SQS errors and requests by action."""
    body = request.app[keys.METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


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
                    "oldest_age_seconds": None,
                    "dead_letter": {
                        "name": broker.sqs_queue_name(t) + constants.DEAD_LETTER_SUFFIX,
                        **d["dead_letter"],
                        "oldest_age_seconds": None,
                    },
                }
                for t, d in zip(registry.types, depths, strict=True)
            ],
            "notes": {"oldest_age_seconds": OLDEST_AGE_NOTE},
        }
    )
