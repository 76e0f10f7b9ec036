"""Request handlers: thin, typed, and raising Problems for everything a client can get wrong."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from api import keys, problems, status
from api.bodies import read_json
from api.ingest import Prepared, prepare, submit
from api.payloads import batch_body_limit, message_body_limit
from api.schemas import MAX_BATCH_BODY_BYTES, MAX_MESSAGE_BODY_BYTES, batch_violations
from queue_manager import scaling as scaling_figures
from queue_manager.reports import ProcessReport
from queue_manager.sqs.errors import logged, public
from queue_manager.sqs.queues import queue_arn
from schemas.envelopes import fifo_group, waiting_detail

logger = logging.getLogger(__name__)

#: Why /queues answers oldest_age_seconds as null: no SQS call that leaves messages alone tells it.
OLDEST_AGE_NOTE = (
    "null: SQS's GetQueueAttributes does not report the age of the oldest message (CloudWatch's "
    "ApproximateAgeOfOldestMessage metric does), and receiving messages to find it would disturb them."
)


async def post_message(request: web.Request) -> web.Response:
    """Validate one envelope, send it to SQS, answer 202 once SQS has it."""
    settings = request.app[keys.SETTINGS]
    # Large messages: a large body waits for its turn before it is read (QM_PAYLOAD_CONCURRENCY).
    async with request.app[keys.LARGE_BODIES].turn(request.content_length):
        document = await read_json(request, limit_bytes=message_body_limit(settings, MAX_MESSAGE_BODY_BYTES))
        prepared = prepare(request.app, document, header_key=request.headers.get("Idempotency-Key"))
        del document
        answer, replayed = await submit(request.app, prepared, trace=status.trace_id(request))
    headers = {"Location": status.location(answer["id"])}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.json_response(answer, status=202, headers=headers)


async def post_batch(request: web.Request) -> web.Response:
    """Validate up to 100 envelopes one by one, send the valid ones; 202 if all went, else 207.

    A valid entry behind one of its FIFO group that is not sent is not sent either: 424.
    """
    settings = request.app[keys.SETTINGS]
    async with request.app[keys.LARGE_BODIES].turn(request.content_length):
        return await _post_batch(
            request, await read_json(request, limit_bytes=batch_body_limit(settings, MAX_BATCH_BODY_BYTES))
        )


async def _post_batch(request: web.Request, document: Any) -> web.Response:
    errors = batch_violations(document)
    if errors:
        raise problems.Unprocessable("The batch is not valid.", errors=errors)
    results: list[dict[str, Any] | None] = [None] * len(document["messages"])
    sends: dict[int, Prepared] = {}
    # A FIFO group's first entry that is not sent: sending what follows it would put that ahead of
    # it once the client fixes and resends it, so the rest of the group waits too (SQS does the same).
    refused: dict[tuple[str, str], int] = {}
    is_fifo = request.app[keys.BROKER].is_fifo
    for index, envelope in enumerate(document["messages"]):
        group = fifo_group(envelope, is_fifo)
        try:
            prepared = prepare(request.app, envelope)
        except problems.Problem as problem:
            results[index] = _entry_failure(index, problem)
            if group is not None:
                refused.setdefault(group, index)
            continue
        if group is not None and group in refused:
            results[index] = _entry_failure(index, _waiting(group, refused[group]))
            continue
        sends[index] = prepared
    trace = status.trace_id(request)
    outcomes = await asyncio.gather(
        *(submit(request.app, p, trace=trace) for p in sends.values()), return_exceptions=True
    )
    for index, outcome in zip(sends, outcomes, strict=True):
        if isinstance(outcome, problems.Problem):
            results[index] = _entry_failure(index, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            answer, _ = outcome
            results[index] = {"index": index, "status": 202, **answer, "status_url": status.location(answer["id"])}
    everything_sent = all(r is not None and r["status"] == 202 for r in results)
    return web.json_response({"results": results}, status=202 if everything_sent else 207)


def _waiting(group: tuple[str, str], first: int) -> problems.FailedDependency:
    return problems.FailedDependency(waiting_detail(group, first), waits_on=first)


def _entry_failure(index: int, problem: problems.Problem) -> dict[str, Any]:
    result: dict[str, Any] = {"index": index, "status": problem.status, "detail": problem.detail}
    if isinstance(problem, problems.FailedDependency):
        result["waits_on"] = problem.waits_on
    if problem.errors is not None:
        result["errors"] = [v.as_dict() for v in problem.errors]
    if "Retry-After" in problem.headers:
        result["retry_after"] = int(problem.headers["Retry-After"])
    return result


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
    checking: list[str] = []
    try:
        await loop.run_in_executor(request.app[keys.EXECUTOR], _check_queues, broker, registry.types, checking)
    except Exception as exc:  # any failure means not ready
        # /readyz is open to anyone: the endpoint and the error stay in the log, the client learns which queue.
        queue = broker.sqs_queue_name(checking[-1]) if checking else "?"
        logger.warning("Not ready: the check of queue %r failed: %s: %s.", queue, type(exc).__name__, exc)
        raise problems.ServiceUnavailable(
            f"Not ready: the check of queue {queue!r} failed; the API's log says why.",
            retry_after_seconds=problems.RETRY_AFTER_READ_SECONDS,
        ) from None
    return web.json_response({"status": "ready", "queues": [broker.sqs_queue_name(t) for t in registry.types]})


def _check_queues(broker: Any, types: list[str], checking: list[str]) -> None:
    for message_type in types:
        checking.append(message_type)  # read back by the caller when this raises
        urls = broker.ensure_queue(message_type)
        for url in (urls.url, urls.dead_letter_url):
            if url:
                queue_arn(broker.client, url)


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
        logger.warning("Could not read queue depths: %s.", logged(exc))
        raise problems.ServiceUnavailable(
            f"Could not read queue depths: {public(exc)}", retry_after_seconds=problems.RETRY_AFTER_READ_SECONDS
        ) from None
    return web.json_response(
        {
            "queues": [
                {
                    "type": t,
                    "name": broker.sqs_queue_name(t),
                    **d["queue"],
                    "oldest_age_seconds": None,
                    "dead_letter": {
                        "name": broker.dead_letter_queue_name(t),
                        **d["dead_letter"],
                        "oldest_age_seconds": None,
                    },
                }
                for t, d in zip(registry.types, depths, strict=True)
            ],
            "notes": {"oldest_age_seconds": OLDEST_AGE_NOTE},
        }
    )


async def scaling(request: web.Request) -> web.Response:
    """Per type: SQS's counts, what the workers hold, run and defer, and the workers needed for the target latency."""
    broker = request.app[keys.BROKER]
    registry = request.app[keys.REGISTRY]
    store = request.app[keys.WORKER_REPORTS]
    executor = request.app[keys.EXECUTOR]
    loop = asyncio.get_running_loop()
    reading: asyncio.Future[list[ProcessReport]] = (
        loop.run_in_executor(executor, store.fresh) if store is not None else _no_reports(loop)
    )
    try:
        depths = await asyncio.gather(*(loop.run_in_executor(executor, broker.depths, t) for t in registry.types))
    except Exception as exc:  # SQS down, a queue missing: the client gets a 503 that says which
        reading.cancel()
        logger.warning("Could not read queue depths: %s.", logged(exc))
        raise problems.ServiceUnavailable(
            f"Could not read queue depths: {public(exc)}", retry_after_seconds=problems.RETRY_AFTER_READ_SECONDS
        ) from None
    reports = await reading
    answer = scaling_figures.figures(
        ((t, broker.sqs_queue_name(t), d["queue"]) for t, d in zip(registry.types, depths, strict=True)),
        reports,
        target_latency_seconds=request.app[keys.SETTINGS].target_latency_seconds,
    )
    return web.json_response(answer)


def _no_reports(loop: asyncio.AbstractEventLoop) -> asyncio.Future[list[ProcessReport]]:
    done: asyncio.Future[list[ProcessReport]] = loop.create_future()
    done.set_result([])
    return done
