"""SQS FIFO queues: their names, the group and deduplication fields of what is sent to them.

A message type declares a FIFO queue with the actor option `fifo=True`. Its queue is
`<prefix>_<type>.fifo` and its dead-letter queue `<prefix>_<type>_dlq.fifo`. Every message carries
a MessageGroupId (the envelope's `group_id`) and a MessageDeduplicationId (the envelope's
`deduplication_id`, by default the message id). On a standard queue a group id sets the
MessageGroupId too: SQS fair queues use it to keep one busy tenant from delaying the others.

FIFO semantics: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-understanding-logic.html
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import dramatiq

#: The suffix SQS requires of a FIFO queue's name.
FIFO_SUFFIX = ".fifo"

#: The actor option that puts a message type on a FIFO queue.
FIFO_OPTION = "fifo"

#: The message option that carries the MessageGroupId.
GROUP_ID_OPTION = "group_id"

#: The message option that carries an explicit MessageDeduplicationId.
DEDUPLICATION_ID_OPTION = "deduplication_id"

#: MessageGroupId and MessageDeduplicationId: 1 to 128 letters, digits and ASCII punctuation.
GROUP_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")

#: How long SQS drops a second message with the same deduplication id (from the first send).
DEDUPLICATION_WINDOW_SECONDS = 300

#: The longest queue name SQS accepts, the `.fifo` suffix included.
MAX_QUEUE_NAME_CHARS = 80

#: System attributes a FIFO receive asks for, beyond those every receive asks for.
SYSTEM_ATTRIBUTES = ("MessageGroupId", "MessageDeduplicationId", "SequenceNumber")


def fifo_name(name: str) -> str:
    """The name of the FIFO queue called `name` (the suffix added once)."""
    return name if name.endswith(FIFO_SUFFIX) else name + FIFO_SUFFIX


def is_fifo_name(name_or_url: str) -> bool:
    """Whether a queue name or URL is that of a FIFO queue."""
    return name_or_url.endswith(FIFO_SUFFIX)


def queue_attributes() -> dict[str, str]:
    """The attributes a FIFO queue is created with: deduplication by id, never by content."""
    # Content-based deduplication would drop two equal payloads sent on purpose within 5 minutes;
    # every message carries its own deduplication id instead.
    return {"FifoQueue": "true", "ContentBasedDeduplication": "false"}


def group_fields(message: dramatiq.Message[Any], *, fifo: bool) -> dict[str, str]:
    """The MessageGroupId and MessageDeduplicationId of a message, as SendMessage takes them.

    On a FIFO queue the deduplication id defaults to the message id, so one message id is one SQS
    message within the deduplication window; a standard queue takes only the group id.
    Raises ValueError for a FIFO message without a group id.
    """
    group_id = message.options.get(GROUP_ID_OPTION)
    fields: dict[str, str] = {}
    if group_id is not None:
        fields["MessageGroupId"] = str(group_id)
    if fifo:
        if group_id is None:
            raise ValueError(f"Message {message.message_id!r} is for a FIFO queue and has no {GROUP_ID_OPTION}.")
        fields["MessageDeduplicationId"] = str(message.options.get(DEDUPLICATION_ID_OPTION) or message.message_id)
    return fields


#: The group of a dead letter whose source message somehow came without one (a FIFO queue needs one).
UNGROUPED_DEAD_LETTERS = "qm-ungrouped"


def dead_letter_fields(system_attributes: dict[str, Any], body: str, *, fifo: bool) -> dict[str, str]:
    """The group fields a copy to the dead-letter queue keeps from the received message.

    The copy keeps the deduplication id: if the same message is dead-lettered twice (its delete
    was lost), the dead-letter queue holds it once.
    """
    fields: dict[str, str] = {}
    group_id = system_attributes.get("MessageGroupId")
    if group_id:
        fields["MessageGroupId"] = str(group_id)
    if fifo:
        fields.setdefault("MessageGroupId", UNGROUPED_DEAD_LETTERS)
        dedup = system_attributes.get("MessageDeduplicationId") or hashlib.sha256(body.encode()).hexdigest()
        fields["MessageDeduplicationId"] = str(dedup)
    return fields
