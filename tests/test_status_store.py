"""Message status without a server: the fold from events to a document, the SQLite store, the writer."""

from __future__ import annotations

import sqlite3
import threading
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from queue_manager.sqs.constants import DEAD_LETTER_REASON_OPTION, RETRY_DELAY_OPTION
from queue_manager.sqs.message import SQSMessage
from queue_manager.sqs.middleware.retries import RetriesInPlace
from queue_manager.state import sqlite as sqlite_store
from queue_manager.state import status
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
    StoreUnavailable,
)
from queue_manager.state.sqlite import SQLiteStatusEvents
from queue_manager.state.stores import status_events, status_writer
from queue_manager.state.writer import StatusWriter
from tests.support import wait_for

ID = "0b6f9a52-8c41-4b7e-9d0e-6a1f3f2b9c17"
T0 = 1_800_000_000.0


def ev(kind: str, at: float, attempt: int = 0, **detail: Any) -> StatusEvent:
    return StatusEvent(ID, kind, T0 + at, attempt, type="webhook", queue="qm_webhook", detail=detail)


def doc(*events: StatusEvent, now: float = T0 + 1000, **options: Any) -> dict[str, Any]:
    folded = status.fold(ID, events, now=now, **options)
    assert folded is not None
    return folded


# -- the fold ----------------------------------------------------------------------------------


def test_an_unknown_id_folds_to_nothing() -> None:
    assert status.fold(ID, [], now=T0) is None


def test_two_failures_then_success_read_succeeded_after_three_attempts_with_both_errors() -> None:
    events = [
        ev(ACCEPTED, 0, trace_id="4bf92f3577b34da6a3ce929d0e0e4736"),
        ev(STARTED, 1, 1),
        ev(RETRY_SCHEDULED, 2, 1, error="Retry: 500", delay_ms=100),
        ev(STARTED, 3, 2),
        ev(RETRY_SCHEDULED, 4, 2, error="Retry: 503", delay_ms=200),
        ev(STARTED, 5, 3),
        ev(SUCCEEDED, 6, 3),
    ]
    d = doc(*events)
    assert d["state"] == "succeeded"
    assert d["attempts"] == 3
    assert d["last_error"] == "Retry: 503"
    assert d["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert d["accepted_at"] == status.iso(T0)
    assert d["started_at"] == status.iso(T0 + 5)
    assert d["finished_at"] == status.iso(T0 + 6)
    assert d["next_attempt_at"] is None
    assert d["stale"] is False
    assert [e["event"] for e in d["events"]] == [
        "accepted", "started", "retry_scheduled", "started", "retry_scheduled", "started", "succeeded"
    ]  # fmt: skip
    assert [e.get("error") for e in d["events"] if e["event"] == "retry_scheduled"] == ["Retry: 500", "Retry: 503"]
    assert "trace_id" not in d["events"][0]


def test_the_order_events_arrive_in_does_not_matter() -> None:
    events = [ev(ACCEPTED, 0), ev(STARTED, 1, 1), ev(RETRY_SCHEDULED, 2, 1, error="x", delay_ms=5), ev(STARTED, 3, 2)]
    assert doc(*events) == doc(*reversed(events))
    assert doc(*events)["state"] == "running"


def test_a_late_started_never_undoes_succeeded() -> None:
    # Given an attempt's success recorded before its start (two writers, one slower)
    d = doc(ev(ACCEPTED, 0), ev(SUCCEEDED, 2, 1), ev(STARTED, 3, 1))
    assert d["state"] == "succeeded"
    assert d["attempts"] == 1
    # And a duplicate delivery after the success changes nothing either
    assert doc(ev(ACCEPTED, 0), ev(STARTED, 1, 1), ev(SUCCEEDED, 2, 1), ev(STARTED, 9, 2))["state"] == "succeeded"


def test_a_retry_scheduled_is_retrying_until_the_next_attempt_starts() -> None:
    d = doc(ev(ACCEPTED, 0), ev(STARTED, 1, 1), ev(RETRY_SCHEDULED, 2, 1, error="boom", delay_ms=1500))
    assert d["state"] == "retrying"
    assert d["next_attempt_at"] == status.iso(T0 + 3.5)
    assert d["last_error"] == "boom"
    # A late 'started' of the failed attempt does not make it running again
    assert doc(ev(ACCEPTED, 0), ev(RETRY_SCHEDULED, 2, 1, error="boom", delay_ms=1), ev(STARTED, 3, 1))["state"] == (
        "retrying"
    )


def test_repeated_events_count_once() -> None:
    started = ev(STARTED, 1, 1)
    d = doc(ev(ACCEPTED, 0), started, started, ev(SUCCEEDED, 2, 1), ev(SUCCEEDED, 2, 1))
    assert d["attempts"] == 1
    assert len(d["events"]) == 3


def test_a_delayed_message_is_delayed_until_its_time_then_accepted() -> None:
    delayed = ev(DELAYED, 0, until=T0 + 60)
    assert doc(delayed, now=T0 + 10)["state"] == "delayed"
    assert doc(delayed, now=T0 + 10)["next_attempt_at"] == status.iso(T0 + 60)
    assert doc(delayed, now=T0 + 61)["state"] == "accepted"
    assert doc(delayed, now=T0 + 10)["events"][0]["until"] == status.iso(T0 + 60)


def test_dead_lettered_then_redriven_then_succeeded_keeps_the_whole_history() -> None:
    events = [
        ev(ACCEPTED, 0),
        ev(STARTED, 1, 1),
        ev(DEAD_LETTERED, 2, 1, reason="permanent failure: PermanentFailure: 400", error="PermanentFailure: 400"),
    ]
    dead = doc(*events)
    assert dead["state"] == "dead_lettered"
    assert dead["dead_letter_reason"] == "permanent failure: PermanentFailure: 400"
    assert dead["finished_at"] == status.iso(T0 + 2)
    redriven = doc(*events, ev(REDRIVEN, 10))
    assert redriven["state"] == "accepted"
    assert redriven["finished_at"] is None
    # The redriven copy's attempts count from 1 again (SQS counts its receives): still a new attempt
    done = doc(*events, ev(REDRIVEN, 10), ev(STARTED, 11, 1), ev(SUCCEEDED, 12, 1))
    assert done["state"] == "succeeded"
    assert done["attempts"] == 2
    assert done["last_error"] == "PermanentFailure: 400"
    assert [e["event"] for e in done["events"]] == [
        "accepted", "started", "dead_lettered", "redriven", "started", "succeeded"
    ]  # fmt: skip


def test_a_dead_letter_whose_copy_failed_is_running_again_when_a_later_attempt_starts() -> None:
    d = doc(ev(ACCEPTED, 0), ev(STARTED, 1, 1), ev(DEAD_LETTERED, 2, 1, reason="r", error="e"), ev(STARTED, 40, 2))
    assert d["state"] == "running"


def test_a_dead_letter_the_redrive_policy_moved_is_dead_lettered_until_something_starts_after_it() -> None:
    # Recorded by a peek, without an attempt: a crash loop no worker saw the end of
    crash_loop = [ev(ACCEPTED, 0), ev(STARTED, 1, 1), ev(STARTED, 10, 2), ev(DEAD_LETTERED, 50, reason="policy")]
    assert doc(*crash_loop)["state"] == "dead_lettered"
    assert doc(*crash_loop)["attempts"] == 2


def test_deduplicated_and_failed_are_final_whatever_follows() -> None:
    d = doc(ev(DEDUPLICATED, 0, stands="a-standing-id"))
    assert (d["state"], d["stands"]) == ("deduplicated", "a-standing-id")
    assert doc(ev(ACCEPTED, 0), ev(STARTED, 1, 1), ev(FAILED, 2), ev(STARTED, 3, 2))["state"] == "failed"


def test_the_event_list_keeps_the_first_and_the_latest_and_says_how_many_it_left_out() -> None:
    events = [ev(ACCEPTED, 0)]
    for attempt in range(1, 41):
        events += [
            ev(STARTED, attempt * 10, attempt),
            ev(RETRY_SCHEDULED, attempt * 10 + 1, attempt, error=f"e{attempt}"),
        ]
    d = doc(*events, max_events=20)
    assert len(d["events"]) == 20
    assert d["events_omitted"] == 81 - 20
    assert d["events"][0]["event"] == "accepted"
    assert d["events"][-1] == {"event": "retry_scheduled", "at": status.iso(T0 + 401), "attempt": 40, "error": "e40"}
    assert d["attempts"] == 40


def test_long_errors_are_cut() -> None:
    d = doc(ev(ACCEPTED, 0), ev(RETRY_SCHEDULED, 1, 1, error="x" * 5000, delay_ms=1))
    assert len(d["last_error"]) == status.MAX_ERROR_CHARS + 1


def test_a_stale_marker_or_a_missed_write_says_stale() -> None:
    assert doc(ev(ACCEPTED, 0), ev(STALE, 1))["stale"] is True
    assert doc(ev(ACCEPTED, 0), stale=True)["stale"] is True
    only_marker = doc(ev(STALE, 1))
    assert (only_marker["stale"], only_marker["events"]) == (True, [])


def test_the_first_message_under_an_sqs_message_id_stands() -> None:
    alias = status.sqs_alias("qm_ordered.fifo", "sqs-1")
    first = StatusEvent(alias, ACCEPTED, T0, detail={"message_id": "first"}, key="a")
    second = StatusEvent(alias, ACCEPTED, T0 + 1, detail={"message_id": "second"}, key="b")
    assert status.standing("second", [second, first]) == "first"
    assert status.standing("first", [second, first]) is None
    assert status.standing("third", []) is None
    assert not status.is_message_id(alias)


def test_a_repeated_sqs_message_id_names_the_message_that_stands() -> None:
    sent = status.SentIds()
    assert sent.standing("q.fifo", "sqs-1", "first") is None
    assert sent.standing("q.fifo", "sqs-1", "first") is None  # a keyed retry: the same message
    assert sent.standing("q.fifo", "sqs-1", "second") == "first"
    assert sent.standing("other.fifo", "sqs-1", "second") is None


def test_runs_before_an_attempt_count_the_attempts_that_ran_not_the_receives() -> None:
    # Receives 1 and 3 were handed back unrun (no event); 2 ran and failed; 4 is the one asking
    events = [ev(ACCEPTED, 0), ev(STARTED, 1, 2), ev(RETRY_SCHEDULED, 2, 2, error="x", delay_ms=100)]
    assert status.runs_before(events, 4) == 1
    assert status.runs_before(events, 2) == 0
    # An outcome says its attempt ran even when its `started` was lost; a repeated event counts once
    assert status.runs_before([*events, ev(RETRY_SCHEDULED, 3, 3, error="y", delay_ms=1), ev(STARTED, 1, 2)], 4) == 2


def test_runs_before_count_only_the_copy_since_the_last_redrive() -> None:
    events = [
        ev(ACCEPTED, 0),
        ev(STARTED, 1, 1),
        ev(DEAD_LETTERED, 2, 1, reason="r", error="e"),
        ev(REDRIVEN, 3),
        ev(STARTED, 4, 1),
        ev(RETRY_SCHEDULED, 5, 1, error="e", delay_ms=1),
    ]
    assert status.runs_before(events, 3) == 1


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("0b6f9a52-8c41-4b7e-9d0e-6a1f3f2b9c17", True),
        ("0B6F9A52-8C41-4B7E-9D0E-6A1F3F2B9C17", False),
        ("0b6f9a528c414b7e9d0e6a1f3f2b9c17", False),
        ("sqs:q:abc", False),
        ("", False),
        ("x" * 5000, False),
    ],
)
def test_message_ids_are_canonical_uuids(value: str, valid: bool) -> None:
    assert status.is_message_id(value) is valid


# -- the SQLite store ---------------------------------------------------------------------------


def test_events_round_trip_and_a_repeated_write_is_harmless(tmp_path: Path) -> None:
    store = SQLiteStatusEvents(tmp_path / "status.sqlite3", retention_seconds=3600)
    events = [ev(ACCEPTED, 0, trace_id="t"), ev(STARTED, 1, 1), ev(SUCCEEDED, 2, 1)]
    store.write(events)
    store.write(events[1:])
    assert store.read(ID) == events
    assert store.read("0b6f9a52-8c41-4b7e-9d0e-000000000000") == []
    assert store.commits == 2
    # Another connection (another process of the host) sees them
    other = SQLiteStatusEvents(tmp_path / "status.sqlite3", retention_seconds=3600)
    assert other.read(ID) == events
    store.close()
    other.close()


def test_old_messages_are_purged_after_the_retention_and_a_grace(tmp_path: Path) -> None:
    store = SQLiteStatusEvents(tmp_path / "status.sqlite3", retention_seconds=60)
    now = time.time()
    old = StatusEvent(ID, ACCEPTED, now - 60 - sqlite_store.PURGE_GRACE_SECONDS - 10)
    later = StatusEvent(ID, STARTED, now - 5, 1)  # the same message: purged as a whole
    recent = StatusEvent("0b6f9a52-8c41-4b7e-9d0e-111111111111", ACCEPTED, now - 120)  # past retention, in grace
    store._next_purge = float("inf")
    store.write([old, later, recent])
    store._next_purge = 0.0
    store.write([StatusEvent("0b6f9a52-8c41-4b7e-9d0e-222222222222", ACCEPTED, now)])
    assert store.read(ID) == []
    assert store.read(recent.message_id) == [recent]
    assert status.expired([recent], now=now, retention_seconds=60)
    store.close()


def test_a_store_that_cannot_open_its_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "status.sqlite3").mkdir()  # a directory where the database should be
    store = SQLiteStatusEvents(tmp_path / "status.sqlite3", retention_seconds=60)
    with pytest.raises(StoreUnavailable, match="status store"):
        store.write([ev(ACCEPTED, 0)])
    with pytest.raises(StoreUnavailable):
        store.read(ID)


def test_a_write_that_waits_out_another_writers_lock_is_unavailable(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_SECONDS", 0.05)
    path = tmp_path / "status.sqlite3"
    store = SQLiteStatusEvents(path, retention_seconds=60)
    store.write([ev(ACCEPTED, 0)])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreUnavailable, match="cannot write"):
        store.write([ev(STARTED, 1, 1)])
    holder.execute("ROLLBACK")
    store.write([ev(STARTED, 1, 1)])
    assert [e.kind for e in store.read(ID)] == [ACCEPTED, STARTED]


def test_status_off_or_without_a_state_dir_has_no_store(tmp_path: Path) -> None:
    from queue_manager.settings import Settings

    assert status_events(Settings(status=False, state_dir=tmp_path)) is None
    assert status_events(Settings(state_dir=None)) is None
    assert status_writer(Settings(status=False, state_dir=tmp_path)) is None
    assert isinstance(status_events(Settings(state_dir=tmp_path)), SQLiteStatusEvents)


# -- the writer ---------------------------------------------------------------------------------


class RecordingStore:
    """A backend that records its write calls and can be made to fail or to block."""

    max_batch_events = 3

    def __init__(self) -> None:
        self.writes: list[list[StatusEvent]] = []
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()
        self.closed = False

    def write(self, events: Sequence[StatusEvent]) -> None:
        self.gate.wait()
        if self.failing:
            raise StoreUnavailable("down")
        self.writes.append(list(events))

    def read(self, message_id: str) -> list[StatusEvent]:
        return [e for w in self.writes for e in w if e.message_id == message_id]

    def close(self) -> None:
        self.closed = True


def make_writer(store: RecordingStore, **options: Any) -> tuple[StatusWriter, list[tuple[str, int]]]:
    counted: list[tuple[str, int]] = []
    writer = StatusWriter(
        store,  # type: ignore[arg-type]
        flush_interval_seconds=options.pop("interval", 0.05),
        max_buffered=options.pop("max_buffered", 100),
        on_outcome=lambda outcome, n: counted.append((outcome, n)),
    )
    return writer, counted


def many(n: int, message_id: str = ID) -> list[StatusEvent]:
    return [StatusEvent(message_id, STARTED, T0 + i, i + 1) for i in range(n)]


def test_the_writer_writes_in_batches_of_the_backends_size_and_everything_on_close() -> None:
    store = RecordingStore()
    writer, counted = make_writer(store, interval=10.0)  # only full batches leave before the close
    for event in many(7):
        writer.add(event)
    wait_for(lambda: len(store.writes) == 2, timeout=5, what="two full batches")
    writer.close()
    assert [len(w) for w in store.writes] == [3, 3, 1]
    assert [e for w in store.writes for e in w] == many(7)
    assert sum(n for outcome, n in counted if outcome == "written") == 7
    assert store.closed


def test_the_writer_flushes_a_partial_batch_after_its_interval() -> None:
    store = RecordingStore()
    writer, _ = make_writer(store, interval=0.05)
    writer.add(many(1)[0])
    wait_for(lambda: store.writes == [many(1)], timeout=5, what="the interval's flush")
    writer.close()


def test_a_full_buffer_drops_new_events_counts_them_and_marks_their_message_stale_once_the_store_is_back() -> None:
    store = RecordingStore()
    store.gate.clear()  # the store hangs: the buffer fills
    writer, counted = make_writer(store, interval=0.01, max_buffered=2)
    other = "0b6f9a52-8c41-4b7e-9d0e-333333333333"
    writer.add(many(1)[0])  # taken by the thread, which now hangs in write
    wait_for(lambda: not writer._buffer, timeout=5, what="the first batch to leave")
    started = time.monotonic()
    for event in many(2, other) + many(3, other):
        writer.add(event)  # never blocks
    assert time.monotonic() - started < 0.5
    assert ("dropped", 1) in counted and sum(n for o, n in counted if o == "dropped") == 3
    assert writer.missed(other) and not writer.missed(ID)
    # When the store answers again, the marker goes with the next batch
    store.gate.set()
    wait_for(lambda: any(e.kind == STALE and e.message_id == other for w in store.writes for e in w), timeout=5)
    writer.close()
    assert writer.missed(other)
    assert writer.counts == {"written": 3, "dropped": 3, "failed": 0}


def test_a_failing_store_fails_the_batch_counted_and_the_writer_goes_on() -> None:
    store = RecordingStore()
    store.failing = True
    writer, counted = make_writer(store, interval=0.01)
    writer.add(many(1)[0])
    wait_for(lambda: ("failed", 1) in counted, timeout=5, what="the failed write")
    assert writer.missed(ID)
    store.failing = False
    writer.add(StatusEvent(ID, SUCCEEDED, T0 + 9, 1))
    wait_for(lambda: store.read(ID), timeout=5, what="the next write")
    writer.close()
    kinds = [e.kind for e in store.read(ID)]
    assert SUCCEEDED in kinds and STALE in kinds and STARTED not in kinds


def test_a_closed_writer_drops_what_it_is_given() -> None:
    store = RecordingStore()
    writer, counted = make_writer(store)
    writer.close()
    writer.add(many(1)[0])
    assert counted == [("dropped", 1)]
    assert store.writes == []


# -- the retry budget, which counts runs in the store ------------------------------------------


def _fail_at_receive(retries: Any, receive_count: int) -> dict[str, Any]:
    """The options RetriesInPlace leaves on a message that failed at `receive_count`."""
    message = dramatiq.Message(
        queue_name="webhook", actor_name="webhook", args=(), kwargs={}, options={}, message_id=ID
    )
    proxy = SQSMessage(message, queue_url="u", receipt_handle="r", receive_count=receive_count, body="", attributes={})
    retries.after_process_message(types.SimpleNamespace(actors={}), proxy, exception=RuntimeError("boom"))
    return dict(proxy.options)


def test_the_retry_budget_counts_runs_so_a_receive_handed_back_unrun_costs_no_retry(tmp_path: Path) -> None:
    store = SQLiteStatusEvents(tmp_path / "status.sqlite3", retention_seconds=3600)
    retries = RetriesInPlace(max_retries=1, status=store)
    # Receive 1 was handed back (nothing recorded): receive 2 is the first run, and its failure is retried
    assert RETRY_DELAY_OPTION in _fail_at_receive(retries, 2)
    # Once receive 2 is known to have run, receive 3's failure spends the one retry
    store.write([ev(STARTED, 1, 2), ev(RETRY_SCHEDULED, 2, 2, error="boom", delay_ms=100)])
    options = _fail_at_receive(retries, 3)
    assert options[DEAD_LETTER_REASON_OPTION] == "retries exhausted after 2 attempt(s): RuntimeError: boom"


def test_without_a_readable_store_the_retry_budget_counts_receives(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    unreadable = SQLiteStatusEvents(tmp_path / "file" / "status.sqlite3", retention_seconds=3600)
    for retries in (RetriesInPlace(max_retries=1), RetriesInPlace(max_retries=1, status=unreadable)):
        options = _fail_at_receive(retries, 2)
        assert options[DEAD_LETTER_REASON_OPTION] == "retries exhausted after 2 attempt(s): RuntimeError: boom"


def test_opening_a_shared_file_waits_out_another_process_holding_its_lock_past_one_timeout(tmp_path: Path) -> None:
    from queue_manager.state.sqlite import open_database

    # Given a new shared file another connection holds locked for 0.6 s (a process starting beside
    # this one on a busy host)
    path = tmp_path / "shared.sqlite3"
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(5)
        other.execute("COMMIT")
        other.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert locked.wait(5)
    threading.Timer(0.6, release.set).start()
    # When this one opens it with a lock timeout of 0.25 s
    db = open_database(path, "CREATE TABLE IF NOT EXISTS t (x);", timeout_seconds=0.25, check_same_thread=False)
    # Then it opened, in WAL mode with its table, once the lock was released
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    db.close()
    holder.join(5)
