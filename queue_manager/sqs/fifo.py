"""SQS FIFO messages: the group and deduplication fields of what is sent to FIFO (and fair) queues.

A message type declares a FIFO queue in its schema (`"x-qm-queue": "fifo"`). Its queue is
`<prefix>_<type>.fifo` and its dead-letter queue `<prefix>_<type>_dlq.fifo`. Every message carries
a MessageGroupId (the envelope's `group_id`) and a MessageDeduplicationId (the envelope's
`deduplication_id`, by default the message id). On a standard queue a group id sets the
MessageGroupId too: SQS fair queues use it to keep one busy tenant from delaying the others.

FIFO semantics: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-understanding-logic.html
"""

from __future__ import annotations

import hashlib
from typing import Any

import dramatiq

from queue_manager.sqs.constants import DEDUPLICATION_ID_OPTION, GROUP_ID_OPTION

#: How long SQS drops a second message with the same deduplication id (from the first send).
DEDUPLICATION_WINDOW_SECONDS = 300

#: System attributes a FIFO receive asks for, beyond those every receive asks for.
SYSTEM_ATTRIBUTES = ("MessageGroupId", "MessageDeduplicationId", "SequenceNumber")


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
