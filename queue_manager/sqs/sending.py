"""Sending: a Dramatiq message made into an SQS entry, and entries sent with one outcome each.

The send half of the broker. A send is tried again only after a failure that surely kept it
from SQS (`errors.classify_send`); after an unknown outcome it raises SQSOutcomeUnknown, so that the
caller re-sends with the same message id (and, on FIFO, the same deduplication id).
"""

from __future__ import annotations

import base64
import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import dramatiq
from botocore import exceptions as botocore_exceptions
from botocore.exceptions import BotoCoreError, ClientError

from queue_manager.sqs import constants, fifo
from queue_manager.sqs.batches import call_batch
from queue_manager.sqs.errors import (
    Fault,
    MessageDelayTooLong,
    MessageTooLarge,
    SQSOutcomeUnknown,
    classify_exception,
    classify_send,
    raise_unavailable,
)

#: Attempts of one send after failures that kept it from SQS (refused connection, throttling, 5xx).
SEND_ATTEMPTS = 3

#: The pause before a send's second attempt; it doubles after each.
SEND_RETRY_PAUSE_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class SendResult:
    """The outcome of one entry of a batched send."""

    message_id: str
    ok: bool
    sqs_message_id: str | None = None
    code: str | None = None
    detail: str | None = None
    retryable: bool = False
    #: SQS answered nothing for this entry: it may be on the queue.
    unknown: bool = False


class Sender:
    """Builds SendMessage entries and sends them with a client that never re-sends on its own.

    Parameters:
      client: A boto3 SQS client whose own retries are off (a blind re-send after a read timeout
        would make a copy).
      sqs_timeout_seconds: The client's read timeout, named in the unknown-outcome error.
    """

    def __init__(self, client: Any, *, sqs_timeout_seconds: float) -> None:
        self.client = client
        self.sqs_timeout_seconds = sqs_timeout_seconds

    @staticmethod
    def encode(message: dramatiq.Message[Any], *, limit_bytes: int) -> str:
        """The SQS body of a message: base64 of Dramatiq's encoding, checked against `limit_bytes`."""
        body = base64.b64encode(message.encode()).decode()
        if len(body) > limit_bytes:
            raise MessageTooLarge(len(body), limit_bytes)
        return body

    def build_entry(
        self, message: dramatiq.Message[Any], delay_ms: int | None, *, fifo_queue: bool, limit_bytes: int
    ) -> dict[str, Any]:
        """The SendMessage arguments of a message: body, delay and attributes, checked against SQS limits.

        A message for a FIFO queue needs the `group_id` option and may not be delayed.
        """
        delay_seconds = math.ceil((delay_ms or 0) / 1000)
        if delay_seconds > constants.MAX_DELAY_SECONDS:
            raise MessageDelayTooLong(
                f"SQS delays a message by at most {constants.MAX_DELAY_SECONDS} s, not {delay_seconds} s."
            )
        entry: dict[str, Any] = {
            "MessageBody": self.encode(message, limit_bytes=limit_bytes),
            "DelaySeconds": delay_seconds,
            "MessageAttributes": {
                constants.ATTR_TYPE: {"DataType": "String", "StringValue": message.actor_name},
                constants.ATTR_MESSAGE_ID: {"DataType": "String", "StringValue": message.message_id},
            },
        }
        if fifo_queue:
            if delay_seconds:
                raise MessageDelayTooLong("A FIFO queue has no per-message delay; SQS can only delay the whole queue.")
            del entry["DelaySeconds"]
        entry.update(fifo.group_fields(message, fifo=fifo_queue))
        return entry

    def send_one(self, queue_url: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Send one entry with SendMessage; SQS's answer."""
        answer: dict[str, Any] = self._call(self.client.send_message, QueueUrl=queue_url, **entry)
        return answer

    def send_entries(self, queue_url: str, entries: list[dict[str, Any]]) -> list[SendResult]:
        """Send up to ten prepared entries (see `build_entry`) in one SendMessageBatch.

        Returns one result per entry, in order. Raises SQSOutcomeUnknown when the request may have
        reached SQS (a read timeout), SQSUnavailable when it surely did not.
        """
        if not 0 < len(entries) <= constants.MAX_BATCH_ENTRIES:
            raise ValueError(f"A batch holds 1 to {constants.MAX_BATCH_ENTRIES} messages, not {len(entries)}.")
        if len(entries) == 1:
            # A batch of one is cheaper to build and parse as a plain SendMessage, same permission.
            try:
                sent = self.send_one(queue_url, entries[0])
            except ClientError as exc:
                if classify_exception(exc).retryable:
                    raise_unavailable(exc)
                error = exc.response.get("Error", {})
                return [
                    SendResult(
                        _message_id(entries[0]), False, code=error.get("Code", ""), detail=error.get("Message", "")
                    )
                ]
            return [SendResult(_message_id(entries[0]), True, sqs_message_id=sent.get("MessageId"))]
        outcome = self._call(call_batch, self.client.send_message_batch, queue_url, entries)
        by_index: dict[int, SendResult] = {
            i: SendResult(_message_id(entries[i]), True, sqs_message_id=ok.get("MessageId"))
            for i, ok in outcome.succeeded.items()
        }
        for failure in outcome.failed:
            by_index[failure.index] = SendResult(
                _message_id(entries[failure.index]),
                False,
                code=failure.code,
                detail=failure.message,
                # An entry SQS answered nothing for may be on the queue: its re-send carries the same id.
                retryable=failure.fault in (Fault.TRANSIENT, Fault.UNKNOWN_OUTCOME),
                unknown=failure.fault is Fault.UNKNOWN_OUTCOME,
            )
        return [by_index[i] for i in range(len(entries))]

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Make a send call, trying again only after failures that surely kept it from SQS."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                return method(*args, **kwargs)
            except (BotoCoreError, ClientError) as exc:
                fault = classify_send(exc)
                if fault is Fault.UNKNOWN_OUTCOME:
                    if isinstance(exc, botocore_exceptions.ReadTimeoutError):
                        reason = f"SQS did not answer within {self.sqs_timeout_seconds:g} s"
                    else:
                        reason = "the connection to SQS broke before its answer"
                    raise SQSOutcomeUnknown(f"{reason} ({type(exc).__name__})") from exc
                if not fault.retryable or attempt == SEND_ATTEMPTS - 1:
                    if isinstance(exc, ClientError) and not fault.retryable:
                        raise
                    raise_unavailable(exc)
                time.sleep(SEND_RETRY_PAUSE_SECONDS * 2**attempt)
        raise AssertionError("unreachable")


def _message_id(entry: dict[str, Any]) -> str:
    return str(entry["MessageAttributes"][constants.ATTR_MESSAGE_ID]["StringValue"])
