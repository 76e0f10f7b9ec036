"""Queue administration: create a queue with its dead-letter queue, read depths."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from queue_manager.sqs import constants
from queue_manager.sqs.errors import Fault, classify_exception

logger = logging.getLogger(__name__)

#: Attributes read to describe a queue's depth.
DEPTH_ATTRIBUTES = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class QueueMissing(LookupError):
    """Raised when a queue does not exist and queue-manager may not create it."""


@dataclasses.dataclass(frozen=True)
class QueueUrls:
    """The URLs of a queue and of its dead-letter queue."""

    url: str
    dead_letter_url: str


@dataclasses.dataclass(frozen=True)
class QueueDepth:
    """Approximate message counts of one queue."""

    visible: int
    in_flight: int
    delayed: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def ensure_queue(
    client: Any,
    name: str,
    *,
    max_receive_count: int,
    visibility_timeout_seconds: int,
    retention_seconds: int = constants.MAX_RETENTION_SECONDS,
    create: bool = True,
    reconcile: bool = False,
) -> QueueUrls:
    """Return the URLs of `name` and `name_dlq`, creating them (with a redrive policy) if allowed.

    Parameters:
      client: A boto3 SQS client.
      name: The SQS name of the source queue.
      max_receive_count: Receives after which SQS moves a message to the dead-letter queue.
      visibility_timeout_seconds: The queue's default visibility timeout.
      retention_seconds: How long both queues keep a message.
      create: Whether missing queues are created; if not, a missing queue raises QueueMissing.
      reconcile: Whether an existing source queue gets its redrive policy and sizes set again.
    """
    dlq_name = name + constants.DEAD_LETTER_SUFFIX
    dlq_attributes = {
        "MessageRetentionPeriod": str(retention_seconds),
        "MaximumMessageSize": str(constants.MAX_MESSAGE_SIZE_BYTES),
    }
    dlq_url, _ = _get_or_create(client, dlq_name, dlq_attributes, create=create)
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {
        "MessageRetentionPeriod": str(retention_seconds),
        "MaximumMessageSize": str(constants.MAX_MESSAGE_SIZE_BYTES),
        "VisibilityTimeout": str(visibility_timeout_seconds),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count}),
    }
    url, created = _get_or_create(client, name, attributes, create=create)
    if not created and create and reconcile:
        client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return QueueUrls(url=url, dead_letter_url=dlq_url)


def _get_or_create(client: Any, name: str, attributes: dict[str, str], *, create: bool) -> tuple[str, bool]:
    try:
        return client.get_queue_url(QueueName=name)["QueueUrl"], False
    except ClientError as exc:
        if not _is_missing_queue(exc):
            raise
    if not create:
        raise QueueMissing(f"Queue {name!r} does not exist and QM_CREATE_QUEUES is false.")
    logger.info("Creating queue %r.", name)
    return client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"], True


def queue_depth(client: Any, url: str) -> QueueDepth:
    """Read the approximate visible, in-flight and delayed counts of a queue."""
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=DEPTH_ATTRIBUTES)["Attributes"]
    return QueueDepth(
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def _is_missing_queue(exc: ClientError) -> bool:
    return classify_exception(exc) is Fault.MISSING_QUEUE
