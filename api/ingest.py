"""From a JSON envelope to a message SQS has accepted: validate, prepare, send, remember."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import uuid
from typing import Any

import dramatiq
from aiohttp import web

from api import keys, problems
from api.groups import group_violations
from api.idempotency import KeyReused
from api.schemas import envelope_violations
from api.sender import Overloaded
from queue_manager.sqs import constants, fifo
from queue_manager.sqs.errors import MessageTooLarge, SQSOutcomeUnknown, SQSUnavailable
from schemas import Violation
from schemas.checks import PAYLOAD_CHECKS

logger = logging.getLogger(__name__)

#: Seconds a client is asked to wait after a 503.
RETRY_AFTER_SECONDS = 1

#: Seconds a client is asked to wait after a 429 (a queue over its depth ceiling).
BACKLOG_RETRY_AFTER_SECONDS = 5

#: An idempotency key: 1 to 255 visible ASCII characters.
IDEMPOTENCY_KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")

#: The namespace of message ids made from idempotency keys (uuid5).
MESSAGE_ID_NAMESPACE = uuid.UUID("5f0c5a52-8c41-4b7e-9d0e-6a1f3f2b9c17")

#: The message option that carries the idempotency key to the actor.
IDEMPOTENCY_KEY_OPTION = "idempotency_key"


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A valid message, encoded for SQS, not yet sent."""

    message_type: str
    message: dramatiq.Message[Any]
    entry: dict[str, Any]
    idempotency_key: str | None
    fingerprint: str


def prepare(app: web.Application, document: Any, *, header_key: str | None = None) -> Prepared:
    """Validate an envelope and its payload and encode the message; raises 422 or 413 problems."""
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
    if check is not None:
        # Checked with the schema, not after it, so one answer lists every violation; a field the
        # schema refused already is not reported twice.
        refused = {v.path for v in errors}
        errors += [v for v in check(payload, app[keys.SETTINGS].webhook_allowed_hosts) if v.path not in refused]
    if errors:
        raise problems.Unprocessable(f"The payload is not a valid {message_type!r} message.", errors=errors)
    broker = app[keys.BROKER]
    errors = group_violations(document, message_type, fifo=broker.is_fifo(message_type))
    if errors:
        raise problems.Unprocessable(f"The envelope is not valid for a {message_type!r} message.", errors=errors)
    key = _idempotency_key(header_key, document.get("idempotency_key"))
    delay_seconds = int(document.get("delay_seconds", 0))
    options: dict[str, Any] = {IDEMPOTENCY_KEY_OPTION: key} if key else {}
    # The group travels with the message (the actor and the logs see it); the broker turns both
    # into the MessageGroupId and MessageDeduplicationId of the send.
    group = {name: document[name] for name in (fifo.GROUP_ID_OPTION, fifo.DEDUPLICATION_ID_OPTION) if name in document}
    options.update(group)
    # A keyed message's id is a function of its key: every copy SQS may ever hold carries the same id.
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=message_type, actor_name=message_type, args=(payload,), kwargs={}, options=options
    )
    if key:
        message = message.copy(message_id=keyed_message_id(app[keys.SETTINGS].queue_prefix, key))
    try:
        entry = broker.build_entry(message, delay_seconds * 1000)
    except MessageTooLarge as exc:
        raise problems.PayloadTooLarge(
            f"The message is {exc.size_bytes} bytes once encoded for SQS (base64 of its JSON); the limit is "
            f"{exc.limit_bytes} bytes, about {constants.MAX_ENCODED_JSON_BYTES} bytes of JSON."
        ) from None
    fingerprint = ""
    if key is not None:  # only a keyed message is ever compared with another
        canonical = json.dumps([message_type, payload, delay_seconds, group], sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
    return Prepared(message_type, message, entry, key, fingerprint)


def keyed_message_id(queue_prefix: str, key: str) -> str:
    """The message id of a message sent with an idempotency key: the same for every attempt."""
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{queue_prefix}\x00{key}"))


def _idempotency_key(header: str | None, field: Any) -> str | None:
    if header is not None and field is not None and header != field:
        raise problems.Unprocessable(
            "The Idempotency-Key header and the envelope's idempotency_key differ.",
            errors=[Violation("/idempotency_key", "const", "must equal the Idempotency-Key header when both are set")],
        )
    key = header if header is not None else field
    if key is None:
        return None
    if not isinstance(key, str) or not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise problems.Unprocessable(
            "The idempotency key must be 1 to 255 visible ASCII characters.",
            errors=[Violation("/idempotency_key", "pattern", "must be 1 to 255 visible ASCII characters")],
        )
    return key


async def submit(app: web.Application, prepared: Prepared) -> tuple[dict[str, Any], bool]:
    """Send a prepared message; returns the 202 answer and whether it was replayed from its key.

    Raises 503 (SQS trouble or overload), 429 (a queue over its ceiling) or 422 (a key reused).
    """
    store = app[keys.IDEMPOTENCY]
    key = prepared.idempotency_key
    if key is not None:
        try:
            first = store.claim(key, prepared.fingerprint)
        except KeyReused:
            raise problems.Unprocessable(
                f"The idempotency key {key!r} was used with a different message.",
                errors=[Violation("/idempotency_key", "unique", "already used with a different message")],
            ) from None
        if first is not None:
            try:
                return await asyncio.shield(first), True
            except problems.Problem:
                raise
            except Exception:  # the first attempt failed and was forgotten: this one tries afresh
                return await submit(app, prepared)
    try:
        answer = await _send(app, prepared)
    except BaseException as exc:
        if key is not None:
            if isinstance(exc, problems.OutcomeUnknown):
                store.unknown(key, exc)
            else:
                store.forget(key, exc)
        raise
    if key is not None:
        store.done(key, answer)
    return answer, False


async def _send(app: web.Application, prepared: Prepared) -> dict[str, Any]:
    settings = app[keys.SETTINGS]
    message = prepared.message
    queue = app[keys.BROKER].sqs_queue_name(prepared.message_type)
    depth = app[keys.DEPTH_GUARD].over(prepared.message_type)
    if depth is not None:
        raise problems.TooManyRequests(
            f"Queue {queue!r} holds about {depth} messages, at or over "
            f"QM_MAX_QUEUE_DEPTH ({settings.max_queue_depth}); try again later.",
            retry_after_seconds=BACKLOG_RETRY_AFTER_SECONDS,
        )
    try:
        async with asyncio.timeout(settings.request_timeout_seconds):
            result = await app[keys.SENDER].send(prepared.message_type, prepared.entry)
    except (SQSOutcomeUnknown, TimeoutError) as exc:
        # The send may yet land (it is in flight, or SQS took it and did not answer).
        reason = str(exc) or f"no answer within {settings.request_timeout_seconds:g} s"
        app[keys.METRICS].sqs_errors.labels(type(exc).__name__).inc()
        logger.warning("The outcome of sending message %r is unknown: %s.", message.message_id, reason)
        advice = (
            "retry with the same Idempotency-Key: the retry carries the same message id"
            if prepared.idempotency_key
            else "send an Idempotency-Key with each message, so that a retry cannot make a second one"
        )
        raise problems.OutcomeUnknown(
            f"The outcome is unknown: SQS may have the message ({reason}); {advice}.",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        ) from None
    except (SQSUnavailable, Overloaded) as exc:
        reason = str(exc) or f"no answer within {settings.request_timeout_seconds} s"
        app[keys.METRICS].sqs_errors.labels(type(exc).__name__).inc()
        logger.warning("Could not send message %r: %s.", message.message_id, reason)
        raise problems.ServiceUnavailable(
            f"SQS did not accept the message: {reason}", retry_after_seconds=RETRY_AFTER_SECONDS
        ) from None
    if not result.ok:
        app[keys.METRICS].sqs_errors.labels(result.code or "unknown").inc()
        logger.warning("SQS refused message %r: %s %s.", message.message_id, result.code, result.detail)
        raise problems.ServiceUnavailable(
            f"SQS did not accept the message: {result.code}: {result.detail}", retry_after_seconds=RETRY_AFTER_SECONDS
        )
    if logger.isEnabledFor(logging.DEBUG):  # a line per message is a quarter of the API's CPU: DEBUG only
        logger.debug(
            "Accepted message %r of type %r.",
            message.message_id,
            prepared.message_type,
            extra={
                "message_id": message.message_id,
                "type": prepared.message_type,
                "queue": queue,
            },
        )
    return {
        "id": message.message_id,
        "type": prepared.message_type,
        "queue": queue,
    }
