"""Message groups kept in order: on the way in (batched sends) and on the way out (workers).

SQS keeps a FIFO queue's messages in order per MessageGroupId and hands a group to one receiver
at a time, but only for what it was given in order: a sender must not let a group's later message
reach SQS before an earlier one, and a receiver that holds several of a group must run them one
after another. These are the pure rules for both; `api.sender` and `sqs.fifo_consumer` apply them.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import deque
from collections.abc import Callable, Collection, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class GroupGate(Generic[T]):
    """Lets one message of each group out at a time, in the order they came; holds the rest.

    A message with no group is always let out. The gate is shared by the consumer thread (which
    admits) and the worker threads (which finish), hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # A group is out while it has an entry here; the deque holds what waits behind it.
        self._held: dict[str, deque[T]] = {}

    def admit(self, group: str | None, item: T) -> bool:
        """Whether `item` may go now; if not, it is held behind its group's earlier messages."""
        if group is None:
            return True
        with self._lock:
            waiting = self._held.get(group)
            if waiting is not None:
                waiting.append(item)
                return False
            self._held[group] = deque()
            return True

    def done(self, group: str | None) -> T | None:
        """The group's message that was out is finished: the next one to let out, if one is held."""
        if group is None:
            return None
        with self._lock:
            waiting = self._held.get(group)
            if waiting is None:
                return None
            if waiting:
                return waiting.popleft()
            del self._held[group]
            return None

    def release(self, group: str | None) -> list[T]:
        """Forget a group: everything held behind it, in order, for the caller to hand back."""
        if group is None:
            return []
        with self._lock:
            return list(self._held.pop(group, ()))

    def release_all(self) -> list[T]:
        """Forget every group: everything held, for the caller to hand back."""
        with self._lock:
            held = [item for waiting in self._held.values() for item in waiting]
            self._held.clear()
            return held

    def held(self) -> int:
        """How many messages wait behind their group."""
        with self._lock:
            return sum(len(waiting) for waiting in self._held.values())

    def out(self) -> int:
        """How many groups have a message out."""
        with self._lock:
            return len(self._held)


P = TypeVar("P")


def next_batch(
    pending: Sequence[P],
    busy: Collection[str],
    *,
    group: Callable[[P], str | None],
    size: Callable[[P], int],
    max_entries: int,
    max_bytes: int,
) -> tuple[list[P], list[P]]:
    """Split `pending` (in arrival order) into the next batch and what must wait for a later one.

    An entry waits when its group is in `busy` (a batch holding that group is still unanswered),
    or when an earlier entry of its group waits: a group never overtakes itself. Entries without
    a group, and those of other groups, fill the batch up to `max_entries` and `max_bytes`.
    """
    batch: list[P] = []
    waiting: list[P] = []
    stopped: set[str] = set()
    total = 0
    for entry in pending:
        key = group(entry)
        blocked = key is not None and (key in busy or key in stopped)
        fits = len(batch) < max_entries and (not batch or total + size(entry) <= max_bytes)
        if blocked or not fits:
            waiting.append(entry)
            if key is not None:
                stopped.add(key)
            continue
        batch.append(entry)
        total += size(entry)
    return batch, waiting


class EntryResult(Protocol):
    """What `plan_resend` needs of one entry's result."""

    @property
    def ok(self) -> bool: ...

    @property
    def retryable(self) -> bool: ...


@dataclasses.dataclass(frozen=True)
class ResendPlan:
    """What to do after SQS answered a batch.

    resend: indexes to send again, in order; every other index has its final answer.
    overtaken: indexes that failed and may not be sent again, because a later entry of their
      group was accepted (a server that does not fail the rest of a group, as SQS does).
    failed_groups: groups whose last entry in the batch failed for good: what still waits of them
      must not go either, or it would overtake the failed one.
    """

    resend: list[int]
    overtaken: list[int]
    failed_groups: set[str]


def plan_resend(groups: Sequence[str | None], results: Sequence[EntryResult], *, may_resend: bool) -> ResendPlan:
    """Decide which entries of an answered batch are sent again, keeping every group in order.

    SQS fails the entries of a FIFO group that follow a failed one in the same batch; they are
    sent again behind it, whatever their own error said. An entry without a group is sent again
    only if its own error is retryable. Nothing is sent again when `may_resend` is false.
    """
    resend: list[int] = []
    overtaken: list[int] = []
    state: dict[str, str] = {}  # group → "ok", "resend" (its failures go again) or "failed" (for good)
    for index, (key, result) in enumerate(zip(groups, results, strict=True)):
        if key is None:
            if not result.ok and result.retryable and may_resend:
                resend.append(index)
            continue
        if result.ok:
            if state.get(key) == "resend":
                # A later entry got in ahead of the failed ones: sending them now would reorder the group.
                behind = [i for i in resend if groups[i] == key]
                resend = [i for i in resend if groups[i] != key]
                overtaken.extend(behind)
            state[key] = "ok"
            continue
        current = state.get(key, "ok")
        if current == "resend" or (current == "ok" and result.retryable and may_resend):
            resend.append(index)
            state[key] = "resend"
        else:
            state[key] = "failed"
    failed_groups = {key for key, value in state.items() if value == "failed"}
    return ResendPlan(resend=resend, overtaken=sorted(overtaken), failed_groups=failed_groups)
