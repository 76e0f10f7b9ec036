"""One way to make SQS's batch calls: chunk entries, send a batch, read each entry's outcome."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from queue_manager.sqs import constants
from queue_manager.sqs.errors import Fault, classify


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
