"""Dead-letter tools: peek at a dead-letter queue without losing anything, and redrive it.

`DeadLetters` takes the broker's SQS clients and queue URLs, so the API, a script or a test can use
it; it keeps no state beyond whether its server has StartMessageMoveTask.

A peek receives messages (which SQS counts: each peek adds one to every shown message's
ApproximateReceiveCount on the dead-letter queue) and makes them visible again at once. The
dead-letter queue has no redrive policy of its own, so those counts move nothing anywhere; the
receive count of the failed processing is kept in the `qm-receive-count` attribute instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Iterable
from typing import Any

from botocore.exceptions import ClientError

from queue_manager.payloads import wire
from queue_manager.sqs import constants
from queue_manager.sqs.batches import call_batch, chunks, settle_all, settle_batch
from queue_manager.sqs.errors import denied, describe, unsupported
from queue_manager.sqs.fifo import dead_letter_fields as _fifo_dead_letter_fields
from queue_manager.sqs.message import UndecodableBody, decode
from queue_manager.sqs.queues import is_fifo_name, queue_arn, queue_depth
from queue_manager.tracing import trace_id_of

logger = logging.getLogger(__name__)

#: How long a peeked message stays hidden if releasing it fails (it is released at once otherwise).
PEEK_VISIBILITY_SECONDS = 30

#: How long a message received for a redrive stays hidden while it is sent and deleted.
REDRIVE_VISIBILITY_SECONDS = 60

#: The most messages one redrive call moves or looks at; call again for more.
MAX_REDRIVE_MESSAGES = 1000

#: The longest one redrive call keeps receiving (well inside REDRIVE_VISIBILITY_SECONDS).
REDRIVE_TIME_LIMIT_SECONDS = 20.0

#: The long-poll wait used once after an empty short poll, which may have missed messages on AWS.
CONFIRM_WAIT_SECONDS = 1

#: The most messages one peek shows.
MAX_PEEK_MESSAGES = 100

#: The most messages one scan looks at (a filtered listing, the console's dry run): as many as a redrive moves.
MAX_SCAN_MESSAGES = MAX_REDRIVE_MESSAGES

#: Attributes the consumer adds when it dead-letters; a redriven message starts clean without them.
DEAD_LETTER_ATTRIBUTES = frozenset({constants.ATTR_ERROR, constants.ATTR_RECEIVE_COUNT, constants.ATTR_SOURCE_QUEUE})

METHOD_MOVE_TASK = "start-message-move-task"
METHOD_RECEIVE_SEND_DELETE = "receive-send-delete"


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """What a peek shows of one dead-lettered message."""

    id: str | None
    type: str | None
    receive_count: int | None
    error: str | None
    source_queue: str | None
    sqs_message_id: str
    sent_timestamp_ms: int | None
    dead_letter_receive_count: int | None
    #: The trace the message was created in (its `traceparent` attribute), if it carries one.
    trace_id: str | None = None
    #: The actor's arguments' first item (the message type's payload), when the peek asked for it.
    payload: Any = None
    with_payload: bool = False
    #: Large messages: the size of the body kept in S3, and where (`s3://bucket/key`); None for one SQS carries.
    payload_bytes: int | None = None
    payload_location: str | None = None

    def as_dict(self) -> dict[str, Any]:
        answer = dataclasses.asdict(self)
        if not answer.pop("with_payload"):
            del answer["payload"]
        answer["sent_at"] = (
            datetime.datetime.fromtimestamp(self.sent_timestamp_ms / 1000, tz=datetime.UTC).isoformat()
            if self.sent_timestamp_ms is not None
            else None
        )
        return answer


@dataclasses.dataclass(frozen=True)
class RedriveResult:
    """What a redrive did.

    `moved` and `ids` are exact for receive-send-delete; for a move task, which runs on SQS's side
    after the call returns, `moved` is the dead-letter queue's approximate depth and `ids` is empty.
    """

    moved: int
    ids: list[str]
    method: str
    not_found: list[str] = dataclasses.field(default_factory=list)
    failed: list[str] = dataclasses.field(default_factory=list)
    task_handle: str | None = None

    def as_dict(self) -> dict[str, Any]:
        answer = dataclasses.asdict(self)
        if self.task_handle is None:
            del answer["task_handle"]
        return answer


@dataclasses.dataclass(frozen=True)
class DeleteResult:
    """What a delete did: the ids deleted, those not found on the queue, and those SQS did not delete."""

    deleted: int
    ids: list[str]
    not_found: list[str]
    failed: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class DeadLetters:
    """Peek at dead-letter queues and redrive them, through the broker's clients.

    Parameters:
      client: A boto3 SQS client.
      no_retry_client: The same without botocore's retries: moto answers an action it lacks with a
        500, which botocore would otherwise retry with backoff before the fallback could start.
    """

    def __init__(self, client: Any, *, no_retry_client: Any | None = None) -> None:
        self.client = client
        self.no_retry_client = no_retry_client if no_retry_client is not None else client
        #: Whether the server has StartMessageMoveTask: None until it was tried.
        self.has_move_task: bool | None = None

    def peek(
        self,
        dead_letter_url: str,
        *,
        limit: int = 10,
        visibility_timeout_seconds: int = PEEK_VISIBILITY_SECONDS,
        with_payload: bool = False,
    ) -> list[DeadLetter]:
        """Show up to `limit` dead letters and leave every one on the queue, visible again at once.

        Parameters:
          dead_letter_url: The URL of the dead-letter queue.
          limit: The most messages shown (1 to MAX_SCAN_MESSAGES).
          visibility_timeout_seconds: How long the messages stay hidden should releasing them fail.
          with_payload: Whether each dead letter carries its payload too.
        """
        if not 1 <= limit <= MAX_SCAN_MESSAGES:
            raise ValueError(f"limit must be between 1 and {MAX_SCAN_MESSAGES}, got {limit}.")
        held: dict[str, dict[str, Any]] = {}
        try:
            target = min(limit, queue_depth(self.client, dead_letter_url).visible)
            for batch in self._receive_until(dead_letter_url, target, visibility_timeout_seconds, deadline=None):
                for message in batch:
                    # A message seen twice keeps only its newest receipt handle: the older one is stale.
                    held[message["MessageId"]] = message
                if len(held) >= target:
                    break
        finally:
            self._release(dead_letter_url, [m["ReceiptHandle"] for m in held.values()])
        return [dead_letter(m, with_payload=with_payload) for m in list(held.values())[:limit]]

    def delete(
        self,
        dead_letter_url: str,
        ids: Iterable[str],
        *,
        max_messages: int = MAX_REDRIVE_MESSAGES,
        time_limit_seconds: float = REDRIVE_TIME_LIMIT_SECONDS,
    ) -> DeleteResult:
        """Delete the dead letters whose id is in `ids`; every other message is made visible again at once.

        A delete needs a receipt handle, and an old one (from an earlier peek) may by now belong to
        another receive, so each message is received here, its id checked against `ids`, and
        deleted with the handle of that very receive: nothing but a chosen message is ever deleted.

        Parameters:
          dead_letter_url: The URL of the dead-letter queue.
          ids: Message ids (`qm-message-id`, or the SQS message id of a message without one).
          max_messages: The most messages one call receives; call again for more.
          time_limit_seconds: The longest one call keeps receiving.
        """
        wanted = set(ids)
        found: set[str] = set()
        chosen: dict[str, tuple[str, str]] = {}  # SQS message id → (the id asked for, receipt handle)
        held: dict[str, str] = {}  # SQS message id → receipt handle of what stays
        seen: set[str] = set()
        deadline = time.monotonic() + time_limit_seconds
        try:
            target = min(max_messages, queue_depth(self.client, dead_letter_url).visible)
            for batch in self._receive_until(dead_letter_url, target, REDRIVE_VISIBILITY_SECONDS, deadline=deadline):
                for message in batch:
                    sqs_id = message["MessageId"]
                    seen.add(sqs_id)
                    key = _key(message)
                    asked = key if key is not None and key in wanted else sqs_id if sqs_id in wanted else None
                    if asked is not None and sqs_id not in held:  # every copy of a duplicated id goes
                        found.add(asked)
                        chosen[sqs_id] = (asked, message["ReceiptHandle"])
                    elif sqs_id not in chosen:
                        held[sqs_id] = message["ReceiptHandle"]
                if len(seen) >= target or found >= wanted:
                    break
        finally:
            self._release(dead_letter_url, list(held.values()))
        receipts = [receipt for _, receipt in chosen.values()]
        given_up = {
            entry["ReceiptHandle"]
            for entry in settle_all(
                "delete", self.client.delete_message_batch, dead_letter_url, [{"ReceiptHandle": r} for r in receipts]
            )
        }
        deleted = [asked for asked, receipt in chosen.values() if receipt not in given_up]
        failed = [asked for asked, receipt in chosen.values() if receipt in given_up]
        logger.info("Deleted %d dead letter(s) from %r.", len(deleted), dead_letter_url)
        return DeleteResult(deleted=len(deleted), ids=deleted, not_found=sorted(wanted - found), failed=failed)

    def redrive(
        self,
        dead_letter_url: str,
        source_url: str,
        *,
        ids: Iterable[str] | None = None,
        max_messages: int = MAX_REDRIVE_MESSAGES,
        time_limit_seconds: float = REDRIVE_TIME_LIMIT_SECONDS,
        try_move_task: bool = True,
    ) -> RedriveResult:
        """Move dead letters back to their source queue: all of them, or those whose id is in `ids`.

        All messages go through StartMessageMoveTask where the server has it; otherwise, and for
        selected ids, each is received, sent to the source (same body and attributes, less the
        dead-letter ones) and deleted from the dead-letter queue only once the send was accepted.
        Messages not selected, and any the send refused, are made visible again at once.

        Parameters:
          dead_letter_url: The URL of the dead-letter queue.
          source_url: The URL of the queue the messages go back to.
          ids: Message ids (`qm-message-id`, or the SQS message id of a message without one); None means all.
          max_messages: The most messages one call receives; call again for more.
          time_limit_seconds: The longest one call keeps receiving.
          try_move_task: Whether to try StartMessageMoveTask when moving all messages.
        """
        wanted = None if ids is None else set(ids)
        if wanted is None and try_move_task:
            result = self._try_move_task(dead_letter_url, source_url)
            if result is not None:
                return result
        return self._receive_send_delete(
            dead_letter_url, source_url, wanted, max_messages=max_messages, time_limit_seconds=time_limit_seconds
        )

    def _try_move_task(self, dead_letter_url: str, source_url: str) -> RedriveResult | None:
        if self.has_move_task is False:
            return None
        dlq_arn = queue_arn(self.client, dead_letter_url)
        source_arn = queue_arn(self.client, source_url)
        expected = queue_depth(self.client, dead_letter_url).visible
        try:
            response = self.no_retry_client.start_message_move_task(SourceArn=dlq_arn, DestinationArn=source_arn)
        except ClientError as exc:
            if unsupported(exc):
                logger.info("SQS has no StartMessageMoveTask (%s); redriving by receive, send, delete.", describe(exc))
                self.has_move_task = False
                return None
            if denied(exc):
                logger.warning(
                    "StartMessageMoveTask was denied (%s); redriving by receive, send, delete. "
                    "Grant sqs:StartMessageMoveTask to use it.",
                    describe(exc),
                )
                return None
            raise
        self.has_move_task = True
        handle = str(response.get("TaskHandle", ""))
        logger.info("Started message move task %r from %r to %r.", handle, dead_letter_url, source_url)
        return RedriveResult(moved=expected, ids=[], method=METHOD_MOVE_TASK, task_handle=handle)

    def _receive_send_delete(
        self,
        dead_letter_url: str,
        source_url: str,
        wanted: set[str] | None,
        *,
        max_messages: int,
        time_limit_seconds: float,
    ) -> RedriveResult:
        moved: list[str] = []
        failed: list[str] = []
        found: set[str] = set()
        held: dict[str, str] = {}  # SQS message id → receipt handle of what stays on the dead-letter queue
        seen: set[str] = set()
        deadline = time.monotonic() + time_limit_seconds
        try:
            target = min(max_messages, queue_depth(self.client, dead_letter_url).visible)
            for batch in self._receive_until(dead_letter_url, target, REDRIVE_VISIBILITY_SECONDS, deadline=deadline):
                selected: list[tuple[dict[str, Any], str]] = []
                for message in batch:
                    sqs_id = message["MessageId"]
                    seen.add(sqs_id)
                    key = _key(message)
                    chosen = wanted is None or (key is not None and key in wanted) or sqs_id in wanted
                    if chosen and sqs_id not in held:
                        selected.append((message, key or sqs_id))
                        if wanted is not None:
                            found.add(key if key is not None and key in wanted else sqs_id)
                    else:
                        held[sqs_id] = message["ReceiptHandle"]
                if selected:
                    accepted, refused = self._send_back(source_url, [m for m, _ in selected])
                    self._delete(dead_letter_url, [selected[i][0]["ReceiptHandle"] for i in accepted])
                    moved.extend(selected[i][1] for i in accepted)
                    for i in refused:
                        failed.append(selected[i][1])
                        held[selected[i][0]["MessageId"]] = selected[i][0]["ReceiptHandle"]
                if len(seen) >= target or (wanted is not None and found >= wanted):
                    break
        finally:
            self._release(dead_letter_url, list(held.values()))
        logger.info("Redrove %d message(s) from %r to %r.", len(moved), dead_letter_url, source_url)
        not_found = sorted(wanted - found) if wanted is not None else []
        return RedriveResult(
            moved=len(moved), ids=moved, method=METHOD_RECEIVE_SEND_DELETE, not_found=not_found, failed=failed
        )

    def _receive_until(
        self, url: str, target: int, visibility_timeout_seconds: int, *, deadline: float | None
    ) -> Iterable[list[dict[str, Any]]]:
        """Yield received batches until `target` messages came, the queue gives nothing, or the deadline.

        A short poll (no wait) is fast locally; on AWS it samples some servers and may come back empty
        while messages remain, so an empty answer is confirmed once with a short long poll.
        """
        received = 0
        confirmed = False
        while received < target and (deadline is None or time.monotonic() < deadline):
            batch: list[dict[str, Any]] = self.client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(constants.MAX_RECEIVE_MESSAGES, target - received),
                WaitTimeSeconds=CONFIRM_WAIT_SECONDS if confirmed else 0,
                VisibilityTimeout=visibility_timeout_seconds,
                MessageAttributeNames=["All"],
                MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp", "MessageGroupId"],
            ).get("Messages", [])
            if not batch:
                if confirmed:
                    return
                confirmed = True
                continue
            confirmed = False
            received += len(batch)
            yield batch

    def _send_back(self, source_url: str, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
        """Send messages to the source queue in size-bounded batches; the indexes accepted and refused."""
        accepted: list[int] = []
        refused: list[int] = []
        for chunk in chunks([_size(m) for m in messages]):
            entries = [
                {
                    "MessageBody": messages[index].get("Body", ""),
                    "MessageAttributes": {
                        k: _attribute(v)
                        for k, v in messages[index].get("MessageAttributes", {}).items()
                        if k not in DEAD_LETTER_ATTRIBUTES
                    },
                    **_group_fields(messages[index], fifo=is_fifo_name(source_url)),
                }
                for index in chunk
            ]
            outcome = call_batch(self.client.send_message_batch, source_url, entries)
            for failure in outcome.failed:
                logger.warning(
                    "SQS refused to redrive message %r: %s %s.",
                    messages[chunk[failure.index]]["MessageId"],
                    failure.code,
                    failure.message,
                )
            accepted.extend(index for i, index in enumerate(chunk) if i in outcome.succeeded)
            refused.extend(index for i, index in enumerate(chunk) if i not in outcome.succeeded)
        return accepted, refused

    def _delete(self, url: str, receipts: list[str]) -> None:
        """Delete redriven messages from the dead-letter queue (the shared settle policy; never raises).

        One given up on stays on both queues: logged, and its copy on the dead-letter queue comes back.
        """
        settle_all("delete", self.client.delete_message_batch, url, [{"ReceiptHandle": r} for r in receipts])

    def _release(self, url: str, receipts: list[str]) -> None:
        """Make received messages visible again at once; on failure they return after their timeout."""
        for indexes in chunks([0] * len(receipts)):
            entries = [{"ReceiptHandle": receipts[i], "VisibilityTimeout": 0} for i in indexes]
            settle_batch("release", self.client.change_message_visibility_batch, url, entries)


def _key(message: dict[str, Any]) -> str | None:
    """A received message's queue-manager id: its attribute, or the id in its Dramatiq body."""
    return _string(message.get("MessageAttributes", {}), constants.ATTR_MESSAGE_ID) or _text(
        _decode(message.get("Body", "")).get("message_id")
    )


def dead_letter(message: dict[str, Any], *, with_payload: bool = False) -> DeadLetter:
    """The DeadLetter view of a message received with all its attributes."""
    attrs = message.get("MessageAttributes", {})
    system = message.get("Attributes", {})
    pointer = wire.parse(message.get("Body", ""), attrs)
    decoded = _decode(message.get("Body", "")) if pointer is None else {}
    return DeadLetter(
        id=_string(attrs, constants.ATTR_MESSAGE_ID) or _text(decoded.get("message_id")),
        type=_string(attrs, constants.ATTR_TYPE) or _text(decoded.get("actor_name")),
        receive_count=_int(_string(attrs, constants.ATTR_RECEIVE_COUNT)),
        error=_string(attrs, constants.ATTR_ERROR),
        source_queue=_string(attrs, constants.ATTR_SOURCE_QUEUE),
        sqs_message_id=message["MessageId"],
        sent_timestamp_ms=_int(system.get("SentTimestamp")),
        dead_letter_receive_count=_int(system.get("ApproximateReceiveCount")),
        trace_id=trace_id_of(attrs) or _text(decoded.get("trace_id")),
        payload=decoded.get("payload"),
        with_payload=with_payload,
        payload_bytes=None if pointer is None else pointer.size_bytes,
        payload_location=None if pointer is None else f"s3://{pointer.bucket}/{pointer.key}",
    )


def _group_fields(message: dict[str, Any], *, fifo: bool) -> dict[str, str]:
    """The group a redriven message keeps, and on a FIFO queue a deduplication id of its own.

    Not the original's: sent again within five minutes of the first send, SQS would drop it as a
    duplicate (after which it is deleted here: lost). The dead letter's own id makes a repeated
    redrive of the same dead letter one message.
    """
    fields = _fifo_dead_letter_fields(message.get("Attributes", {}), message.get("Body", ""), fifo=fifo)
    if fifo:
        fields["MessageDeduplicationId"] = "redrive-" + str(message["MessageId"])
    return fields


def _size(message: dict[str, Any]) -> int:
    """The bytes a received message counts for in a batch: its body and attributes."""
    return len(message.get("Body", "").encode()) + sum(
        len(k) + len(str(v.get("StringValue", ""))) + len(str(v.get("DataType", "")))
        for k, v in message.get("MessageAttributes", {}).items()
    )


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A received message attribute as SendMessage takes it (received ones may carry empty lists)."""
    return {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}


def _decode(body: str) -> dict[str, Any]:
    """The id and actor of the Dramatiq message a body carries, or {} when it is not one."""
    try:
        message = decode(body)
    except UndecodableBody:
        return {}
    options = message.options or {}
    return {
        "message_id": message.message_id,
        "actor_name": message.actor_name,
        "payload": message.args[0] if message.args else None,
        "trace_id": options.get("trace_id"),
    }


def _string(attributes: dict[str, Any], name: str) -> str | None:
    value = attributes.get(name, {}).get("StringValue")
    return str(value) if value is not None else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
