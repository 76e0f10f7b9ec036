"""What the state store keeps and the interface both backends give: status events, written in batches.

A message's status is never a row that writers overwrite: it is an append-only list of events, each
keyed by (message id, event key), and the status document is folded from them when it is read. Two
writers (the API and a worker, or two workers after a redelivery) therefore never race: a late
"started" is one more event, and the fold decides that it cannot undo "succeeded" (transitions are
monotonic per attempt). Writing an event twice writes the same item twice, so retries are safe.

Backends: `sqlite` (one host: the API and the workers of the host share one file in
`QM_STATE_DIR`) and `dynamodb` (a fleet: one table, `QM_STATE_TABLE`). Both batch: one SQLite
transaction, or BatchWriteItem of up to 25 items, per `write` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

#: The kinds of status event, in the order they can happen to one message.
ACCEPTED: Final = "accepted"  # the API has SQS's answer (202)
DELAYED: Final = "delayed"  # accepted with a delay: it will not be received before `detail["until"]`
DEDUPLICATED: Final = "deduplicated"  # a FIFO send SQS dropped; `detail["stands"]` names the message that stands
STARTED: Final = "started"  # attempt `attempt` began in a worker
RETRY_SCHEDULED: Final = "retry_scheduled"  # attempt failed; `detail["error"]`, `detail["delay_ms"]`
SUCCEEDED: Final = "succeeded"  # attempt finished without error
DEAD_LETTERED: Final = "dead_lettered"  # moved to the dead-letter queue; `detail["reason"]`, `detail["error"]`
REDRIVEN: Final = "redriven"  # sent back from the dead-letter queue to its source queue
FAILED: Final = "failed"  # nothing more will happen (e.g. a dead letter deleted)
STALE: Final = "stale"  # a writer dropped some of this message's events (its store was down or slow)

EVENT_KINDS: Final = (
    ACCEPTED,
    DELAYED,
    DEDUPLICATED,
    STARTED,
    RETRY_SCHEDULED,
    SUCCEEDED,
    DEAD_LETTERED,
    REDRIVEN,
    FAILED,
    STALE,
)


@dataclasses.dataclass(frozen=True)
class StatusEvent:
    """One thing that happened to one message.

    `attempt` is the attempt it belongs to (0 for events outside any attempt: accepted, delayed,
    deduplicated, redriven). `key` makes the event's identity within its message: events with the
    same (message_id, key) are the same event, so a repeated write is harmless. `at` is seconds since
    the epoch. `detail` holds JSON-safe extras (error, delay_ms, reason, stands, until, trace_id).
    """

    message_id: str
    kind: str
    at: float
    attempt: int = 0
    type: str | None = None
    queue: str | None = None
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(EVENT_KINDS)}, not {self.kind!r}")
        if not self.key:
            object.__setattr__(self, "key", f"{self.at:017.6f}#{self.attempt:04d}#{self.kind}")


class StoreUnavailable(Exception):
    """Raised when the state store cannot be reached or refuses the request (throttling included)."""


class StatusEvents(Protocol):
    """The status half of a state store. Its methods block: call them from a thread, not the event loop."""

    def write(self, events: Sequence[StatusEvent]) -> None:
        """Store the events in as few requests as the backend allows; raises StoreUnavailable."""

    def read(self, message_id: str) -> list[StatusEvent]:
        """Every stored event of one message, oldest first ([] for an unknown id); raises StoreUnavailable.

        Events past the retention are still returned while the backend keeps them (the reader
        answers 410 for them); they are purged some time after.
        """

    def close(self) -> None:
        """Release connections; later calls are errors."""
