"""One way to make SQS's batch calls: chunk entries, send a batch, read each entry's outcome.

And one per-entry policy for settling received messages (DeleteMessageBatch and
ChangeMessageVisibilityBatch), shared by the worker's acks and the dead-letter redrive: deleting
or hiding a message twice does no harm, so a failed request and an entry with an unknown outcome
are tried again; a lost receipt (the message was received again elsewhere) or a refusal is not.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from queue_manager.sqs import constants
from queue_manager.sqs.errors import Fault, classify, describe

logger = logging.getLogger(__name__)

#: Attempts at one delete or visibility change before it is given up (and logged).
MAX_SETTLE_ATTEMPTS = 5

#: The pause between a synchronous settle's attempts; it doubles after each.
SETTLE_RETRY_PAUSE_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class EntryFailure:
    """One entry SQS did not carry out, with its index in the batch and what its error means."""

    index: int
    code: str
    message: str
    fault: Fault


@dataclasses.dataclass(frozen=True)
class BatchOutcome:
    """Each entry's outcome: the answers of those carried out (by index), and the failures."""

    succeeded: dict[int, dict[str, Any]]
    failed: list[EntryFailure]


def call_batch(
    method: Callable[..., dict[str, Any]], queue_url: str, entries: Sequence[dict[str, Any]]
) -> BatchOutcome:
    """Call one SQS batch action (`client.delete_message_batch`, ...) with up to ten entries.

    Entries get their index as `Id`. An entry in neither list of the answer counts as failed with
    an unknown outcome. A failure of the whole request is raised, for `classify_exception`.
    """
    if not 0 < len(entries) <= constants.MAX_BATCH_ENTRIES:
        raise ValueError(f"A batch holds 1 to {constants.MAX_BATCH_ENTRIES} entries, not {len(entries)}.")
    response = method(QueueUrl=queue_url, Entries=[{**entry, "Id": str(i)} for i, entry in enumerate(entries)])
    succeeded = {int(ok["Id"]): ok for ok in response.get("Successful", [])}
    failed = [
        EntryFailure(
            index=int(f["Id"]),
            code=str(f.get("Code", "")),
            message=str(f.get("Message", "")),
            fault=classify(str(f.get("Code", "")), sender_fault=bool(f.get("SenderFault", True))),
        )
        for f in response.get("Failed", [])
    ]
    answered = set(succeeded) | {f.index for f in failed}
    failed += [
        EntryFailure(i, "NoResult", "SQS answered nothing for this entry.", Fault.UNKNOWN_OUTCOME)
        for i in range(len(entries))
        if i not in answered
    ]
    return BatchOutcome(succeeded, failed)


def chunks(
    sizes: Sequence[int],
    *,
    most: int = constants.MAX_BATCH_ENTRIES,
    max_bytes: int = constants.MAX_BATCH_SIZE_BYTES,
) -> Iterator[list[int]]:
    """Indexes of items grouped in order, at most `most` to a batch and `max_bytes` of `sizes` each."""
    current: list[int] = []
    total = 0
    for index, size in enumerate(sizes):
        if current and (len(current) >= most or total + size > max_bytes):
            yield current
            current, total = [], 0
        current.append(index)
        total += size
    if current:
        yield current


def settle_batch(
    kind: str,
    method: Callable[..., dict[str, Any]],
    queue_url: str,
    entries: Sequence[dict[str, Any]],
    *,
    succeeded: list[int] | None = None,
) -> list[int]:
    """Send one delete or visibility-change batch (`kind` names it in the log); the indexes worth another try.

    `succeeded`, if given, is extended with the indexes SQS confirmed.
    """
    try:
        outcome = call_batch(method, queue_url, entries)
    except (BotoCoreError, ClientError) as exc:
        logger.warning("The %s batch on %r failed (%s); it is tried again.", kind, queue_url, describe(exc))
        return list(range(len(entries)))
    if succeeded is not None:
        succeeded.extend(outcome.succeeded)
    retry = []
    for failure in outcome.failed:
        if failure.fault in (Fault.TRANSIENT, Fault.UNKNOWN_OUTCOME):
            retry.append(failure.index)
        else:
            logger.warning("Dropped %s of a message on %r: %s (%s).", kind, queue_url, failure.code, failure.message)
    return retry


def settle_all(
    kind: str,
    method: Callable[..., dict[str, Any]],
    queue_url: str,
    entries: Sequence[dict[str, Any]],
    *,
    attempts: int = MAX_SETTLE_ATTEMPTS,
) -> list[dict[str, Any]]:
    """Send deletes or visibility changes now, in batches of ten, each tried up to `attempts` times.

    Returns the entries given up on (logged): never raises for SQS's failures.
    """
    given_up: list[dict[str, Any]] = []
    for indexes in chunks([0] * len(entries)):
        pending = [entries[i] for i in indexes]
        for attempt in range(attempts):
            pending = [pending[i] for i in settle_batch(kind, method, queue_url, pending)]
            if not pending:
                break
            if attempt < attempts - 1:
                time.sleep(SETTLE_RETRY_PAUSE_SECONDS * 2**attempt)
        if pending:
            logger.error(
                "Gave up on %s of %d message(s) on %r after %d attempts.", kind, len(pending), queue_url, attempts
            )
            given_up.extend(pending)
    return given_up
