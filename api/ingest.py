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
from botocore.exceptions import ClientError

from api import keys, problems, status
from api.schemas import IDEMPOTENCY_KEY_PATTERN, envelope_violations
from api.sender import Overloaded
from queue_manager.payloads.store import StorageUnavailable
from queue_manager.sqs import constants
from queue_manager.sqs.errors import MessageTooLarge, SQSOutcomeUnknown, SQSUnavailable, logged, public
from queue_manager.sqs.sending import SendResult
from queue_manager.state.base import StoreUnavailable
from queue_manager.state.idempotency import Claim, KeyReused
from schemas import Violation
from schemas.checks import PAYLOAD_CHECKS
from schemas.envelopes import message_violations

logger = logging.getLogger(__name__)

#: An idempotency key: 1 to 255 visible ASCII characters.
IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)

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
    """Validate an envelope and its payload and encode the message; raises 422 or 413 problems.

    A 422 names every violation at once: the envelope's, its queue's rules, and the payload's.
    """
    registry = app[keys.REGISTRY]
    broker = app[keys.BROKER]
    detail, errors = message_violations(
        document,
        envelope=envelope_violations,
        types=registry.types,
        is_fifo=broker.is_fifo,
        payload=lambda message_type, payload: _payload_violations(app, message_type, payload),
    )
    if errors:
        raise problems.Unprocessable(detail, errors=errors)
    message_type = document["type"]
    payload = document["payload"]
    key = _idempotency_key(header_key, document.get("idempotency_key"))
    delay_seconds = int(document.get("delay_seconds", 0))
    options: dict[str, Any] = {IDEMPOTENCY_KEY_OPTION: key} if key else {}
    # The group travels with the message (the actor and the logs see it); the broker turns both
    # into the MessageGroupId and MessageDeduplicationId of the send.
    group = {
        name: document[name]
        for name in (constants.GROUP_ID_OPTION, constants.DEDUPLICATION_ID_OPTION)
        if name in document
    }
    options.update(group)
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=message_type, actor_name=message_type, args=(payload,), kwargs={}, options=options
    )
    fingerprint = ""
    if key is not None:  # only a keyed message is ever compared with another
        canonical = json.dumps([message_type, payload, delay_seconds, group], sort_keys=True, separators=(",", ":"))
        fingerprint = hashlib.sha256(canonical.encode()).hexdigest()
        # A keyed message's id is a function of its key and content: every copy SQS may ever hold
        # carries the same id, whichever process sent it, however often it was retried (and on a
        # FIFO queue, where the id is the default deduplication id, SQS drops the copies itself).
        message = message.copy(message_id=keyed_message_id(app[keys.SETTINGS].queue_prefix, key, fingerprint))
    try:
        entry = broker.build_entry(message, delay_seconds * 1000)
    except MessageTooLarge as exc:
        raise problems.PayloadTooLarge(
            f"The message is {exc.size_bytes} bytes once encoded for SQS (base64 of its JSON); the limit is "
            f"{exc.limit_bytes} bytes, about {constants.MAX_ENCODED_JSON_BYTES} bytes of JSON."
        ) from None
    return Prepared(message_type, message, entry, key, fingerprint)


def _payload_violations(app: web.Application, message_type: str, payload: Any) -> list[Violation]:
    """The payload's violations of its schema, then of the checks that depend on configuration."""
    errors = app[keys.REGISTRY].validate(message_type, payload)
    check = PAYLOAD_CHECKS.get(message_type)
    if check is not None:
        # Checked with the schema, not after it, so one answer lists every violation; a field the
        # schema refused already is not reported twice.
        refused = {v.path for v in errors}
        errors += [v for v in check(payload, app[keys.SETTINGS].webhook_allowed_hosts) if v.path not in refused]
    return errors


def keyed_message_id(queue_prefix: str, key: str, fingerprint: str) -> str:
    """The message id of a keyed message: a UUID 5 of the queue prefix, the key and the message's fingerprint.

    The fingerprint (type, payload, delay, group) is part of it so that a key reused for another message
    once its window is over gets another id, which receivers that drop repeated ids still take.
    """
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, f"{queue_prefix}\x00{key}\x00{fingerprint}"))


def _idempotency_key(header: str | None, field: Any) -> str | None:
    if header is not None and field is not None and header != field:
        raise problems.Unprocessable(
            "The Idempotency-Key header and the envelope's idempotency_key differ.",
            errors=[Violation("/idempotency_key", "const", "must equal the Idempotency-Key header when both are set")],
        )
    key = header if header is not None else field
    if key is None:
        return None
    if not isinstance(key, str) or not IDEMPOTENCY_KEY.fullmatch(key):
        raise problems.Unprocessable(
            "The idempotency key must be 1 to 255 visible ASCII characters.",
            errors=[Violation("/idempotency_key", "pattern", "must be 1 to 255 visible ASCII characters")],
        )
    return key


async def submit(app: web.Application, prepared: Prepared, *, trace: str | None = None) -> tuple[dict[str, Any], bool]:
    """Send a prepared message; returns the 202 answer and whether it was replayed from its key.

    Once SQS has it, its status is recorded as accepted (with `trace`, the request's trace id), in the
    background.

    Raises 503 (SQS trouble, overload, or an outcome unknown), 429 (a queue over its ceiling) or
    422 (a key reused with another message).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + app[keys.SETTINGS].request_timeout_seconds
    key = prepared.idempotency_key
    if key is None:
        return await _send(app, prepared, deadline=deadline, trace=trace), False
    store = app[keys.IDEMPOTENCY]
    while True:
        claim = await _claim(app, prepared, key)
        if claim.answer is not None:
            return claim.answer, True
        if claim.owner is not None:
            return await _send(app, prepared, deadline=deadline, claim=claim, trace=trace), False
        # Another request is sending this key's message now, here or in another process: its
        # outcome is this one's, so wait for it rather than send a second copy.
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise problems.OutcomeUnknown(
                "The outcome is unknown: a request with the same Idempotency-Key is still being sent to SQS; "
                "retry with the same Idempotency-Key.",
                retry_after_seconds=problems.RETRY_AFTER_SEND_SECONDS,
            )
        await store.wait(key, remaining)


async def _claim(app: web.Application, prepared: Prepared, key: str) -> Claim:
    try:
        return await app[keys.IDEMPOTENCY].claim(key, prepared.fingerprint)
    except KeyReused:
        raise problems.Unprocessable(
            f"The idempotency key {key!r} was used with a different message.",
            errors=[Violation("/idempotency_key", "unique", "already used with a different message")],
        ) from None
    except StoreUnavailable as exc:  # never send a keyed message unchecked: that could be a duplicate
        logger.error("The idempotency store failed: %s.", exc)
        app[keys.METRICS].sqs_errors.labels("IdempotencyStore").inc()
        raise problems.StateUnavailable(
            "The message was not sent: its idempotency key could not be checked (the state store is unavailable); "
            "try again with the same Idempotency-Key.",
            retry_after_seconds=problems.RETRY_AFTER_SEND_SECONDS,
        ) from None


async def _send(
    app: web.Application, prepared: Prepared, *, deadline: float, claim: Claim | None = None, trace: str | None = None
) -> dict[str, Any]:
    """Send, and answer from SQS's own answer; a keyed attempt's outcome is recorded even once its request gave up."""
    settings = app[keys.SETTINGS]
    message = prepared.message
    queue = app[keys.BROKER].sqs_queue_name(prepared.message_type)
    answer = {"id": message.message_id, "type": prepared.message_type, "queue": queue}
    try:
        depth = app[keys.DEPTH_GUARD].over(prepared.message_type)
        if depth is not None:
            raise problems.TooManyRequests(
                f"Queue {queue!r} holds about {depth} messages, at or over "
                f"QM_MAX_QUEUE_DEPTH ({settings.max_queue_depth}); try again later.",
                retry_after_seconds=problems.RETRY_AFTER_BACKLOG_SECONDS,
            )
        future = app[keys.SENDER].submit(prepared.message_type, prepared.entry)
    except (problems.TooManyRequests, Overloaded) as exc:
        if claim is not None:
            _record(app, prepared, claim, answer, None)
        if isinstance(exc, Overloaded):
            _count_error(app, exc)
            logger.warning("Could not send message %r: %s.", message.message_id, exc)
            raise problems.ServiceUnavailable(
                f"SQS did not accept the message: {exc}", retry_after_seconds=problems.RETRY_AFTER_SEND_SECONDS
            ) from None
        raise
    try:
        await asyncio.wait([future], timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
    except asyncio.CancelledError:
        _record_when_done(app, prepared, claim, answer, future)
        raise
    if not future.done():  # the send goes on: its outcome is recorded when SQS answers, for the retry
        _record_when_done(app, prepared, claim, answer, future)
        reason = f"no answer within the request timeout of {settings.request_timeout_seconds:g} s"
        _count_error(app, TimeoutError())
        logger.warning("The outcome of sending message %r is unknown: %s.", message.message_id, reason)
        raise _outcome_unknown(prepared, f"{reason}; the send is still in flight")
    if claim is not None:
        _record(app, prepared, claim, answer, future)
    accepted = _answer(app, prepared, future, answer)
    try:  # after SQS accepted it, never before; the writer buffers, so the 202 does not wait
        status.record_accepted(
            app,
            prepared.message_type,
            message.message_id,
            future.result(),
            delay_seconds=int(prepared.entry.get("DelaySeconds", 0)),
            trace=trace,
        )
    except Exception:  # a status is best effort: it never fails a 202
        logger.exception("Could not record the status of message %r.", message.message_id)
    return accepted


def _record_when_done(
    app: web.Application,
    prepared: Prepared,
    claim: Claim | None,
    answer: dict[str, Any],
    future: asyncio.Future[SendResult],
) -> None:
    """Once a send its request gave up on ends, record a keyed outcome; an unkeyed one's is only logged."""

    def ended(f: asyncio.Future[SendResult]) -> None:
        if claim is not None:
            _record(app, prepared, claim, answer, f)
        logger.info(
            "The send of message %r, whose request had stopped waiting, ended: %s.",
            prepared.message.message_id,
            _OUTCOME_PHRASES[_outcome(f)],
        )

    future.add_done_callback(ended)


_OUTCOME_PHRASES = {"sent": "SQS has it", "unknown": "no answer", "refused": "not accepted"}


def _outcome(future: asyncio.Future[SendResult] | None) -> str:
    """`sent`, `unknown` (SQS may have the message) or `refused` (it surely does not) for a finished send."""
    if future is None:
        return "refused"
    if future.cancelled():
        return "unknown"
    exc = future.exception()
    if exc is None:
        result = future.result()
        return "sent" if result.ok else "unknown" if result.unknown else "refused"
    if isinstance(exc, SQSOutcomeUnknown):
        return "unknown"
    if isinstance(exc, SQSUnavailable | ClientError):
        return "refused"
    return "unknown"  # a failure nothing classified: assume the worst, keep the key


def _record(
    app: web.Application,
    prepared: Prepared,
    claim: Claim,
    answer: dict[str, Any],
    future: asyncio.Future[SendResult] | None,
) -> None:
    """Record a keyed attempt's outcome in the store (without waiting): done, unknown, or the key freed."""
    key = prepared.idempotency_key
    assert key is not None and claim.owner is not None
    store = app[keys.IDEMPOTENCY]
    outcome = _outcome(future)
    try:
        if outcome == "sent":
            store.done(key, prepared.fingerprint, answer)
        else:
            # A surely refused re-send leaves the earlier attempt's unknown outcome as it was.
            store.failed(key, claim.owner, unknown=outcome == "unknown" or claim.resend)
    except StoreUnavailable as exc:  # the key's lease runs out instead; a retry then sends the same id
        logger.error("Could not record the outcome of message %r: %s.", prepared.message.message_id, exc)


def _answer(
    app: web.Application, prepared: Prepared, future: asyncio.Future[SendResult], answer: dict[str, Any]
) -> dict[str, Any]:
    message = prepared.message
    exc = SQSOutcomeUnknown("the send was cancelled") if future.cancelled() else future.exception()
    if isinstance(exc, SQSOutcomeUnknown):
        _count_error(app, exc)
        logger.warning("The outcome of sending message %r is unknown: %s.", message.message_id, exc)
        raise _outcome_unknown(prepared, str(exc))
    if isinstance(exc, StorageUnavailable):  # large messages: S3 did not take the body; SQS got nothing
        _count_error(app, exc)
        logger.warning("Could not store the body of message %r: %s.", message.message_id, logged(exc))
        raise problems.StorageUnavailable(f"The message was not sent: {exc}; try again.") from None
    if isinstance(exc, SQSUnavailable | ClientError):
        _count_error(app, exc)
        logger.warning("Could not send message %r: %s.", message.message_id, logged(exc))
        raise problems.ServiceUnavailable(
            f"SQS did not accept the message: {public(exc)}", retry_after_seconds=problems.RETRY_AFTER_SEND_SECONDS
        ) from None
    result = future.result()  # anything else was a bug: raised, logged with its traceback, a 500
    if result.unknown:
        app[keys.METRICS].sqs_errors.labels(result.code or "unknown").inc()
        logger.warning("SQS answered nothing for message %r: %s %s.", message.message_id, result.code, result.detail)
        raise _outcome_unknown(prepared, f"SQS answered nothing for it ({result.code})")
    if not result.ok:
        app[keys.METRICS].sqs_errors.labels(result.code or "unknown").inc()
        logger.warning("SQS refused message %r: %s %s.", message.message_id, result.code, result.detail)
        raise problems.ServiceUnavailable(
            f"SQS did not accept the message: {result.code}: {result.detail}",
            retry_after_seconds=problems.RETRY_AFTER_SEND_SECONDS,
        )
    if logger.isEnabledFor(logging.DEBUG):  # a line per message is costly at high rates: DEBUG only
        logger.debug(
            "Accepted message %r of type %r.",
            message.message_id,
            prepared.message_type,
            extra={"message_id": message.message_id, "type": prepared.message_type, "queue": answer["queue"]},
        )
    return answer


def _outcome_unknown(prepared: Prepared, reason: str) -> problems.OutcomeUnknown:
    advice = (
        "retry with the same Idempotency-Key: the retry carries the same message id"
        if prepared.idempotency_key
        else "send an Idempotency-Key with each message, so that a retry cannot make a second one"
    )
    return problems.OutcomeUnknown(
        f"The outcome is unknown: SQS may have the message ({reason}); {advice}.",
        retry_after_seconds=problems.RETRY_AFTER_SEND_SECONDS,
    )


def _count_error(app: web.Application, exc: BaseException) -> None:
    app[keys.METRICS].sqs_errors.labels(type(exc).__name__).inc()
