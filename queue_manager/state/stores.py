"""Which status store a process uses, from the settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from queue_manager.state.base import StatusEvents
from queue_manager.state.sqlite import DATABASE_NAME, SQLiteStatusEvents
from queue_manager.state.writer import StatusWriter


class StoreSettings(Protocol):
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
    # The fleet's store (DynamoDB, chosen by QM_STATE_TABLE) goes here, before the host's.
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
