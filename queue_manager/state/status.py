"""From a message's status events to its status document: pure functions, no I/O.

The fold never trusts the order events arrived in. It dedupes them by key, sorts them by time, and
splits the history into generations at each `redriven` event (a redriven message starts again as
`accepted`, its attempts numbered from 1 again, since SQS counts receives of the new copy). Within
the current generation the state follows from which events exist, not from which came last:

- `succeeded` once any attempt succeeded (a late `started`, a duplicate delivery, changes nothing);
- `dead_lettered` once dead-lettered, unless a later attempt started (the copy to the dead-letter
  queue failed and SQS delivered the message again);
- else the highest attempt decides: `retrying` when it failed and a retry is scheduled, `running`
  when it started;
- else `delayed` while a delay runs, then `accepted`.

`deduplicated` (a FIFO send SQS dropped) and `failed` (nothing more will happen) are final whatever
follows. Transitions are therefore monotonic per attempt: an attempt's `started` never undoes its
outcome, whichever arrived first.
"""

from __future__ import annotations

import collections
import datetime
import re
import time
from collections.abc import Iterable
from typing import Any, Final

from queue_manager.state.base import (
    ACCEPTED,
    DEAD_LETTERED,
    DEDUPLICATED,
    DELAYED,
    FAILED,
    REDRIVEN,
    RETRY_SCHEDULED,
    STALE,
    STARTED,
    SUCCEEDED,
    StatusEvent,
)

#: The states a status document can be in.
STATES: Final = ("accepted", "delayed", "running", "retrying", "succeeded", "dead_lettered", "deduplicated", "failed")

#: States after which nothing happens unless someone acts (a redrive); `?wait` answers at once on them.
FINAL_STATES: Final = frozenset({"succeeded", "dead_lettered", "deduplicated", "failed"})

#: The most events a document lists: the first few and the latest (a message retried for days has hundreds).
MAX_EVENTS: Final = 50
#: Of those, how many of the oldest are kept (the acceptance and the first attempts).
HEAD_EVENTS: Final = 10

#: The longest error text a document carries per event.
MAX_ERROR_CHARS: Final = 1000

#: Our message ids: Dramatiq's (uuid4) and keyed ones (uuid5), in canonical form.
MESSAGE_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: SQS's deduplication window: a MessageId SQS answers again within it is a deduplicated send.
DEDUPLICATION_WINDOW_SECONDS: Final = 300.0

#: SQS MessageIds a process remembers at most.
MAX_REMEMBERED_SENDS: Final = 100_000

#: Sort order among events at the same instant: what must have happened first sorts first.
_RANK = {
    ACCEPTED: 0,
    DELAYED: 0,
    DEDUPLICATED: 1,
    REDRIVEN: 2,
    STARTED: 3,
    RETRY_SCHEDULED: 4,
    SUCCEEDED: 4,
    DEAD_LETTERED: 5,
    FAILED: 6,
    STALE: 7,
}

#: Outcomes of an attempt: each implies that the attempt started.
_OUTCOMES = (RETRY_SCHEDULED, SUCCEEDED, DEAD_LETTERED)


def is_message_id(value: str) -> bool:
    """Whether `value` can be one of our message ids (anything else is 404 without a read)."""
    return MESSAGE_ID.fullmatch(value) is not None


def iso(at: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds (None stays None)."""
    if at is None:
        return None
    return datetime.datetime.fromtimestamp(at, tz=datetime.UTC).isoformat(timespec="milliseconds")


def ordered(events: Iterable[StatusEvent]) -> list[StatusEvent]:
    """The events once each (by key), oldest first; at one instant, in the order they can happen."""
    unique: dict[str, StatusEvent] = {}
    for event in events:
        unique.setdefault(event.key, event)
    return sorted(unique.values(), key=lambda e: (e.at, _RANK.get(e.kind, 9), e.attempt, e.key))


def runs_before(events: Iterable[StatusEvent], attempt: int) -> int:
    """How many of the current copy's attempts before `attempt` ran (started, or have an outcome).

    An attempt number is SQS's receive count, and a receive that was handed back unrun (a worker
    stopping) counts too; the runs are what the retry budget spends. Attempts of earlier copies
    (before the last redrive) do not count: a redriven message starts its attempts again.
    """
    history = ordered(events)
    last_redrive = max((i for i, e in enumerate(history) if e.kind == REDRIVEN), default=-1)
    return len(
        {
            e.attempt
            for e in history[last_redrive + 1 :]
            if 0 < e.attempt < attempt and (e.kind == STARTED or e.kind in _OUTCOMES)
        }
    )


def expired(events: Iterable[StatusEvent], *, now: float, retention_seconds: float) -> bool:
    """Whether a known message is past the retention (answered 410): its first event is older than it."""
    first = min((e.at for e in events), default=None)
    return first is not None and now - first > retention_seconds


def fold(
    message_id: str,
    events: Iterable[StatusEvent],
    *,
    now: float,
    stale: bool = False,
    max_events: int = MAX_EVENTS,
) -> dict[str, Any] | None:
    """The status document of a message from its events; None when there are none (unknown id).

    `stale` says the reader knows events are missing (a writer of this process dropped some);
    a stored `stale` marker says the same for writers elsewhere.
    """
    history = ordered(events)
    if not history:
        return None
    stale = stale or any(e.kind == STALE for e in history)
    history = [e for e in history if e.kind != STALE]
    if not history:  # only markers: the events themselves were lost
        return _document(message_id, [], now=now, stale=True, max_events=max_events)
    return _document(message_id, history, now=now, stale=stale, max_events=max_events)


def _document(
    message_id: str, history: list[StatusEvent], *, now: float, stale: bool, max_events: int
) -> dict[str, Any]:
    first_type = next((e.type for e in history if e.type), None)
    first_queue = next((e.queue for e in history if e.queue), None)
    trace_id = next((e.detail.get("trace_id") for e in history if e.detail.get("trace_id")), None)
    accepted_at = next((e.at for e in history if e.kind in (ACCEPTED, DELAYED, DEDUPLICATED)), None)
    # Generations: the history since the last redrive is the current one.
    last_redrive = max((i for i, e in enumerate(history) if e.kind == REDRIVEN), default=-1)
    current = history[last_redrive + 1 :]
    # Attempts: every (generation, attempt) that started, or whose outcome says it did.
    attempts: set[tuple[int, int]] = set()
    generation = 0
    for e in history:
        if e.kind == REDRIVEN:
            generation += 1
        elif e.attempt > 0 and (e.kind == STARTED or e.kind in _OUTCOMES):
            attempts.add((generation, e.attempt))
    errors = [e for e in history if e.kind in (RETRY_SCHEDULED, DEAD_LETTERED) and e.detail.get("error")]
    doc: dict[str, Any] = {
        "id": message_id,
        "type": first_type,
        "queue": first_queue,
        "state": "accepted",
        "attempts": len(attempts),
        "accepted_at": iso(accepted_at),
        "started_at": None,
        "finished_at": None,
        "next_attempt_at": None,
        "last_error": _text(errors[-1].detail.get("error")) if errors else None,
        "trace_id": trace_id,
        "stale": stale,
    }
    _state(doc, history, current, now=now)
    listed = [_event(e) for e in history]
    if len(listed) > max_events:
        head = min(HEAD_EVENTS, max_events)
        doc["events_omitted"] = len(listed) - max_events
        listed = listed[:head] + listed[len(listed) - (max_events - head) :]
    doc["events"] = listed
    return doc


def _state(doc: dict[str, Any], history: list[StatusEvent], current: list[StatusEvent], *, now: float) -> None:
    """Set state, started_at, finished_at and next_attempt_at from the current generation."""
    final = next((e for e in history if e.kind in (DEDUPLICATED, FAILED)), None)
    if final is not None:
        doc["state"] = final.kind
        doc["finished_at"] = iso(final.at)
        if final.kind == DEDUPLICATED:
            doc["stands"] = final.detail.get("stands")
            if final.detail.get("note"):
                doc["note"] = final.detail["note"]
        return
    started = [e for e in current if e.kind == STARTED or (e.kind in _OUTCOMES and e.attempt > 0)]
    top = max((e.attempt for e in started), default=0)
    if top:
        doc["started_at"] = iso(min(e.at for e in started if e.attempt == top))
    succeeded = [e for e in current if e.kind == SUCCEEDED]
    if succeeded:
        doc["state"] = "succeeded"
        doc["finished_at"] = iso(succeeded[0].at)
        winner = succeeded[0].attempt
        if winner:
            doc["started_at"] = iso(min((e.at for e in started if e.attempt == winner), default=succeeded[0].at))
        return
    dead = [e for e in current if e.kind == DEAD_LETTERED]
    if dead:
        last = dead[-1]
        # A dead letter whose copy failed comes back: a later attempt, or (for one recorded without an
        # attempt, by a peek) a start after it, means the message is out of the dead-letter queue.
        again = any(e.attempt > last.attempt for e in started) if last.attempt else any(e.at > last.at for e in started)
        if not again:
            doc["state"] = "dead_lettered"
            doc["finished_at"] = iso(last.at)
            reason = last.detail.get("reason")
            if reason:
                doc["dead_letter_reason"] = _text(reason)
            return
    if top:
        outcome = next((e for e in reversed(current) if e.attempt == top and e.kind == RETRY_SCHEDULED), None)
        if outcome is not None:
            doc["state"] = "retrying"
            delay_ms = outcome.detail.get("delay_ms")
            if isinstance(delay_ms, int | float):
                doc["next_attempt_at"] = iso(outcome.at + delay_ms / 1000)
        else:
            doc["state"] = "running"
        return
    delayed = next((e for e in current if e.kind == DELAYED), None)
    until = delayed.detail.get("until") if delayed is not None else None
    if isinstance(until, int | float) and until > now:
        doc["state"] = "delayed"
        doc["next_attempt_at"] = iso(until)
    else:
        doc["state"] = "accepted"


def _event(e: StatusEvent) -> dict[str, Any]:
    item: dict[str, Any] = {"event": e.kind, "at": iso(e.at)}
    if e.attempt:
        item["attempt"] = e.attempt
    for name, value in e.detail.items():
        if name == "trace_id" or name.startswith("_"):
            continue
        if name == "until" and isinstance(value, int | float):
            value = iso(value)
        item[name] = _text(value) if isinstance(value, str) else value
    return item


def _text(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_ERROR_CHARS:
        return value[:MAX_ERROR_CHARS] + "…"
    return value


def sqs_alias(queue: str, sqs_message_id: str) -> str:
    """The pseudo message id under which a FIFO send records which of our messages SQS's MessageId belongs to.

    SQS answers a deduplicated send with the MessageId of the message that stands; the first of our
    messages recorded under that alias is that message (see `standing`). Never a valid message id.
    """
    return f"sqs:{queue}:{sqs_message_id}"


def standing(message_id: str, alias_events: Iterable[StatusEvent]) -> str | None:
    """The message that stands for `message_id` when SQS deduplicated its send: the first one recorded
    under the same SQS MessageId, if that is another message; else None."""
    first = next((e for e in ordered(alias_events) if e.kind == ACCEPTED and e.detail.get("message_id")), None)
    if first is None or first.detail["message_id"] == message_id:
        return None
    return str(first.detail["message_id"])


class SentIds:
    """The SQS MessageIds of this process's FIFO sends in the last five minutes, with our message ids."""

    def __init__(self) -> None:
        self._sent: collections.OrderedDict[tuple[str, str], tuple[str, float]] = collections.OrderedDict()

    def standing(self, queue: str, sqs_message_id: str, message_id: str) -> str | None:
        """The message SQS kept if this send was deduplicated (another message got this MessageId); else None."""
        now = time.monotonic()
        while self._sent:
            oldest = next(iter(self._sent.values()))
            if now - oldest[1] <= DEDUPLICATION_WINDOW_SECONDS and len(self._sent) < MAX_REMEMBERED_SENDS:
                break
            self._sent.popitem(last=False)
        key = (queue, sqs_message_id)
        seen = self._sent.get(key)
        if seen is not None and seen[0] != message_id:
            return seen[0]
        if seen is None:
            self._sent[key] = (message_id, now)
        return None
