"""Queues: their SQS names, their provisioning with a dead-letter queue, and every attribute read.

The one home of a queue's name (`<namespace>_<queue>`, `.fifo` for a FIFO queue, `_dlq` for its
dead-letter queue), of creating and reconciling queues, and of reading their counts and ARNs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from botocore.exceptions import ClientError

from queue_manager.sqs import constants
from queue_manager.sqs.errors import Fault, classify_exception

logger = logging.getLogger(__name__)

#: The suffix SQS requires of a FIFO queue's name.
FIFO_SUFFIX = ".fifo"

#: The longest queue name SQS accepts, the `.fifo` suffix included.
MAX_QUEUE_NAME_CHARS = 80

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
    """The URLs of a queue and of its dead-letter queue (empty when it is set up without one)."""

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


def sqs_name(namespace: str | None, queue_name: str, *, fifo: bool = False) -> str:
    """The SQS name of a Dramatiq queue: `<namespace>_<queue>` (as dramatiq-sqs), `.fifo` at the end of a FIFO one."""
    name = f"{namespace}_{queue_name}" if namespace else queue_name
    return fifo_name(name) if fifo else name


def fifo_name(name: str) -> str:
    """The name of the FIFO queue called `name` (the suffix added once)."""
    return name if name.endswith(FIFO_SUFFIX) else name + FIFO_SUFFIX


def is_fifo_name(name_or_url: str) -> bool:
    """Whether a queue name or URL is that of a FIFO queue."""
    return name_or_url.endswith(FIFO_SUFFIX)


def dead_letter_name(name: str) -> str:
    """The name of the dead-letter queue of the queue called `name` (`x_dlq`, or `x_dlq.fifo` for `x.fifo`)."""
    if is_fifo_name(name):
        return fifo_name(name.removesuffix(FIFO_SUFFIX) + constants.DEAD_LETTER_SUFFIX)
    return name + constants.DEAD_LETTER_SUFFIX


def fifo_attributes() -> dict[str, str]:
    """The attributes a FIFO queue is created with: deduplication by id, never by content."""
    # Content-based deduplication would drop two equal payloads sent on purpose within 5 minutes;
    # every message carries its own deduplication id instead.
    return {"FifoQueue": "true", "ContentBasedDeduplication": "false"}


def ensure_queue(
    client: Any,
    name: str,
    *,
    max_receive_count: int,
    visibility_timeout_seconds: int,
    retention_seconds: int = constants.MAX_RETENTION_SECONDS,
    dead_letter: bool = True,
    dead_letter_retention_seconds: int = constants.MAX_RETENTION_SECONDS,
    tags: dict[str, str] | None = None,
    create: bool = True,
    reconcile: bool = False,
    fifo: bool = False,
) -> QueueUrls:
    """Return the URLs of `name` and `name_dlq`, creating them (with a redrive policy) if allowed.

    Parameters:
      client: A boto3 SQS client.
      name: The SQS name of the source queue.
      max_receive_count: Receives after which SQS moves a message to the dead-letter queue.
      visibility_timeout_seconds: The queue's default visibility timeout.
      retention_seconds: How long the source queue keeps a message.
      dead_letter: Whether there is a dead-letter queue (and a redrive policy) at all.
      dead_letter_retention_seconds: How long the dead-letter queue keeps a message.
      tags: Tags of both queues: set when they are created, added when they exist already.
      create: Whether missing queues are created; if not, a missing queue raises QueueMissing.
      reconcile: Whether an existing source queue gets its redrive policy and sizes set again.
      fifo: Whether both are FIFO queues (`name` then ends in `.fifo`; SQS needs a FIFO queue's
        dead-letter queue to be FIFO as well).
    """
    if fifo and not is_fifo_name(name):
        raise ValueError(f"A FIFO queue's name ends in {FIFO_SUFFIX!r}: {name!r} does not.")
    dlq_name = dead_letter_name(name)
    for queue_name in (name, dlq_name):
        if len(queue_name) > MAX_QUEUE_NAME_CHARS:
            raise ValueError(
                f"Queue name {queue_name!r} has {len(queue_name)} characters; SQS allows {MAX_QUEUE_NAME_CHARS}."
            )
    # FifoQueue can only be set at creation: reconciling sets the other attributes only.
    kind = fifo_attributes() if fifo else {}
    attributes = {
        "MessageRetentionPeriod": str(retention_seconds),
        "MaximumMessageSize": str(constants.MAX_MESSAGE_SIZE_BYTES),
        "VisibilityTimeout": str(visibility_timeout_seconds),
    }
    dlq_url = ""
    if dead_letter:
        dlq_attributes = {
            "MessageRetentionPeriod": str(dead_letter_retention_seconds),
            "MaximumMessageSize": str(constants.MAX_MESSAGE_SIZE_BYTES),
        }
        dlq_url = _get_or_create(client, dlq_name, {**dlq_attributes, **kind}, tags, create=create)[0]
        dlq_arn = queue_arn(client, dlq_url)
        attributes["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count})
    url, created = _get_or_create(client, name, {**attributes, **kind}, tags, create=create)
    if not created and create and reconcile:
        client.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return QueueUrls(url=url, dead_letter_url=dlq_url)


def _get_or_create(
    client: Any, name: str, attributes: dict[str, str], tags: dict[str, str] | None, *, create: bool
) -> tuple[str, bool]:
    try:
        url: str = client.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if not _is_missing_queue(exc):
            raise
    else:
        if tags and create:
            # As dramatiq-sqs does: a queue made before the tags were chosen gets them too.
            client.tag_queue(QueueUrl=url, Tags=tags)
        return url, False
    if not create:
        raise QueueMissing(f"Queue {name!r} does not exist and QM_CREATE_QUEUES is false.")
    logger.info("Creating queue %r.", name)
    # Tags only when there are some: tagging on creation also needs sqs:TagQueue.
    extra = {"tags": tags} if tags else {}
    return client.create_queue(QueueName=name, Attributes=attributes, **extra)["QueueUrl"], True


def queue_arn(client: Any, url: str) -> str:
    """Read a queue's ARN."""
    return str(client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def queue_depth(client: Any, url: str) -> QueueDepth:
    """Read the approximate visible, in-flight and delayed counts of a queue: the one depth read."""
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=DEPTH_ATTRIBUTES)["Attributes"]
    return QueueDepth(
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def _is_missing_queue(exc: ClientError) -> bool:
    return classify_exception(exc) is Fault.MISSING_QUEUE
