"""A received SQS message: the one decoder of a body, its receipt, its attempt number, why it failed."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import dramatiq

#: The system attributes every receive asks for.
SYSTEM_ATTRIBUTE_NAMES: tuple[str, ...] = ("ApproximateReceiveCount", "SentTimestamp")


class UndecodableBody(ValueError):
    """Raised when an SQS body is not base64 of a Dramatiq message."""


def decode(body: str | bytes) -> dramatiq.Message[Any]:
    """The Dramatiq message an SQS body carries (base64 of its JSON encoding, as dramatiq-sqs sends it).

    Raises UndecodableBody, naming what is wrong with it.
    """
    try:
        return dramatiq.Message.decode(base64.b64decode(body, validate=True))
    except (binascii.Error, ValueError, TypeError, dramatiq.DecodeError) as exc:
        raise UndecodableBody(str(exc)) from exc


def receive_count(system_attributes: dict[str, Any]) -> int:
    """How many times SQS has handed the message out: its ApproximateReceiveCount (1 when absent)."""
    try:
        return max(1, int(system_attributes.get("ApproximateReceiveCount", 1)))
    except (TypeError, ValueError):
        return 1


class SQSMessage(dramatiq.MessageProxy):
    """A Dramatiq message with the SQS receipt it came with.

    `sqs_receive_count` is the attempt number: SQS's receive count, or, for a retry the consumer
    ran again without SQS handing it out (a FIFO retry in place), one more than the last attempt's.
    """

    def __init__(
        self,
        message: dramatiq.Message[Any],
        *,
        queue_url: str,
        receipt_handle: str,
        receive_count: int,
        body: str,
        attributes: dict[str, Any],
        system_attributes: dict[str, Any] | None = None,
        sqs_message_id: str | None = None,
    ) -> None:
        super().__init__(message)
        #: SQS's own id of the message (each dead-letter copy or redrive gets a new one).
        self.sqs_message_id = sqs_message_id
        self.sqs_queue_url = queue_url
        self.sqs_receipt_handle = receipt_handle
        self.sqs_receive_count = receive_count
        self.sqs_body = body
        self.sqs_attributes = attributes
        self.sqs_system_attributes = system_attributes or {}

    def next_attempt(self) -> SQSMessage:
        """The same SQS message as its next attempt, run again here without another receive."""
        return SQSMessage(
            self._message,
            queue_url=self.sqs_queue_url,
            receipt_handle=self.sqs_receipt_handle,
            receive_count=self.sqs_receive_count + 1,
            body=self.sqs_body,
            attributes=self.sqs_attributes,
            system_attributes=self.sqs_system_attributes,
            sqs_message_id=self.sqs_message_id,
        )

    @property
    def group_id(self) -> str | None:
        """The message's MessageGroupId, as SQS delivered it."""
        group = self.sqs_system_attributes.get("MessageGroupId")
        return str(group) if group else None


def attempt(message: dramatiq.MessageProxy) -> int:
    """The attempt number of a message being processed (1 for one that did not come from SQS)."""
    return int(getattr(message, "sqs_receive_count", 1))


def describe_failure(message: dramatiq.MessageProxy) -> str:
    """Why a message failed, for its dead letter."""
    exc = message._exception
    if exc is None:
        return "failed without an exception (for example an unknown actor or too old)"
    return f"{type(exc).__name__}: {exc}"
