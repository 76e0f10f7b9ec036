"""Which status store a process uses, from the settings."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from queue_manager.state import dynamodb
from queue_manager.state.base import StatusEvent, StatusEvents, StoreUnavailable
from queue_manager.state.sqlite import DATABASE_NAME, PURGE_GRACE_SECONDS, SQLiteStatusEvents
from queue_manager.state.writer import StatusWriter

#: Events per DynamoDB write call (the writer's batch): up to four BatchWriteItem requests of 25 items.
WRITE_EVENTS = 4 * dynamodb.BATCH_WRITE_ITEMS


class StoreSettings(dynamodb.StoreSettings, Protocol):
    """What the choice reads of `queue_manager.settings.Settings` (not imported: it knows the SQS constants)."""

    @property
    def status(self) -> bool: ...
    @property
    def state_dir(self) -> Path | None: ...
    @property
    def status_retention_seconds(self) -> int: ...
    @property
    def status_buffer_events(self) -> int: ...
    @property
    def ack_flush_interval_ms(self) -> int: ...


def status_events(settings: StoreSettings) -> StatusEvents | None:
    """The status store the settings choose; None when status is off (`QM_STATUS=off`, or no QM_STATE_DIR).

    Opening is lazy: nothing is touched until the first read or write.
    """
    if not settings.status:
        return None
    if settings.state_table:
        # The items outlive the retention by the same grace as SQLite's rows: a read answers 410 meanwhile.
        return _TableChecked(
            dynamodb.DynamoStatusEvents(
                settings, retention_seconds=settings.status_retention_seconds + PURGE_GRACE_SECONDS
            ),
            settings,
        )
    if settings.state_dir is None:
        return None
    return SQLiteStatusEvents(settings.state_dir / DATABASE_NAME, retention_seconds=settings.status_retention_seconds)


def status_writer(
    settings: StoreSettings,
    store: StatusEvents | None = None,
    *,
    on_outcome: Callable[[str, int], None] | None = None,
    on_request: Callable[[], None] | None = None,
) -> StatusWriter | None:
    """A writer of status events to `store` (by default the one the settings choose); None when status is off.

    It flushes at the worker's ack flush interval: a status costs at most a store request per
    interval, as the acks cost a DeleteMessageBatch.
    """
    chosen = store if store is not None else status_events(settings)
    if chosen is None:
        return None
    return StatusWriter(
        chosen,
        flush_interval_seconds=settings.ack_flush_interval_ms / 1000,
        max_buffered=settings.status_buffer_events,
        on_outcome=on_outcome,
        on_request=on_request,
    )


class _TableChecked:
    """A DynamoDB status store that makes sure of its table (creating it unless QM_CREATE_TABLES=false) first.

    The API checks the table at start-up; a worker may start before it, so the first write or read
    checks it too. Until the table is there, writes fail as the store being down does: counted, never
    delaying an ack.
    """

    def __init__(self, store: dynamodb.DynamoStatusEvents, settings: StoreSettings) -> None:
        self.store = store
        self.settings = settings
        # A write groups its events by message (one item each) and sends them 25 items a request:
        # more events per write let a message's start and outcome share an item.
        self.max_batch_events = WRITE_EVENTS
        self._checked = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self._checked:
            return
        with self._lock:
            if self._checked:
                return
            table = self.settings.state_table or ""
            try:
                checked = dynamodb.ensure_table(
                    dynamodb.client(self.settings, timeout_seconds=dynamodb.TABLE_CALL_TIMEOUT_SECONDS),
                    table,
                    create=self.settings.create_tables,
                )
            except dynamodb.TableMissing as exc:
                raise StoreUnavailable(str(exc)) from exc
            if not checked:
                raise StoreUnavailable(f"The DynamoDB table {table!r} could not be checked.")
            self._checked = True

    def write(self, events: Sequence[StatusEvent]) -> None:
        self._check()
        self.store.write(events)

    def read(self, message_id: str) -> list[StatusEvent]:
        self._check()
        return self.store.read(message_id)

    def close(self) -> None:
        self.store.close()
