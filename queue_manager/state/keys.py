"""Which idempotency store the settings ask for: SQLite in the state folder (one host) or DynamoDB (a fleet)."""

from __future__ import annotations

from pathlib import Path

from queue_manager.state.dynamodb import StoreSettings
from queue_manager.state.dynamodb_keys import DynamoIdempotencyKeys
from queue_manager.state.idempotency import DATABASE_NAME, IdempotencyKeys, SqliteIdempotencyKeys


def idempotency_store(settings: StoreSettings, *, state_dir: Path, lease_seconds: float) -> IdempotencyKeys:
    """The idempotency keys of `settings`: DynamoDB when QM_STATE_TABLE is set, else SQLite in `state_dir`.

    `settings` is queue_manager.settings.Settings (read through a protocol: the store sits below it).
    `lease_seconds` is how long a pending key is trusted to its owner's send (the caller knows how
    long a send may take); open() the store before use and close() it after.
    """
    if settings.state_table:
        return DynamoIdempotencyKeys(settings, lease_seconds=lease_seconds)
    return SqliteIdempotencyKeys(
        state_dir / DATABASE_NAME, window_seconds=settings.idempotency_window_seconds, lease_seconds=lease_seconds
    )
