"""Status events on SQLite: one file in the state directory, shared by the API and the workers of a host.

WAL mode (readers never wait for the writer), a busy timeout (writers of several processes take
turns), and one transaction per `write` call: a writer's whole flush is one commit (a group commit).
Events are inserted with `INSERT OR IGNORE` on (message id, key), so a repeated write is harmless and
no write ever changes another's row.

Rows of messages older than the retention plus `PURGE_GRACE_SECONDS` are deleted by the writes
themselves, a batch at a time, at most every `PURGE_INTERVAL_SECONDS`: until then a read still
finds them and the API answers 410 rather than 404.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from queue_manager.state.base import StatusEvent, StoreUnavailable

#: The database file, in the state directory.
DATABASE_NAME = "status.sqlite3"

#: How long a write waits for another process's lock before it fails.
BUSY_TIMEOUT_SECONDS = 5.0

#: The most events one `write` call commits (a writer's flush): one transaction each.
MAX_BATCH_EVENTS = 500

#: How long past the retention a message's events are kept, so that it is answered 410, not 404.
PURGE_GRACE_SECONDS = 7 * 86400

#: Messages purged per write at most, and the pause between purges.
PURGE_BATCH_MESSAGES = 500
PURGE_INTERVAL_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS status_events (
    message_id TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    attempt INTEGER NOT NULL,
    type TEXT,
    queue TEXT,
    detail TEXT NOT NULL,
    PRIMARY KEY (message_id, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS status_events_at ON status_events (at);
"""

_INSERT = (
    "INSERT OR IGNORE INTO status_events (message_id, key, kind, at, attempt, type, queue, detail) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


#: Timeouts an opening of a shared file may wait for another process's lock (`open_database`).
OPEN_ATTEMPTS = 4


def open_database(path: Path, schema: str, *, timeout_seconds: float, check_same_thread: bool) -> sqlite3.Connection:
    """A connection to one of the host's shared SQLite files (status, idempotency keys), its schema made.

    WAL lets readers go on beside the one writer, and every process of the host opens the same
    file. With synchronous=NORMAL a process crash loses nothing committed and a power cut may lose
    the last commits: a status or a key is worth less than an fsync per write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=timeout_seconds, isolation_level=None, check_same_thread=check_same_thread)
    # Processes that start together (`QM_API_PROCESSES`, a worker beside the API) open a new file
    # at once, and on a busy host one may hold its lock past another's timeout while it makes the
    # file WAL and its tables: the opening is tried again, up to OPEN_ATTEMPTS timeouts in all.
    for attempt in range(OPEN_ATTEMPTS):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema)
            return db
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == OPEN_ATTEMPTS - 1:
                db.close()
                raise
    raise AssertionError("unreachable")


class SQLiteStatusEvents:
    """StatusEvents in one SQLite file; safe to call from any thread (one connection per thread).

    Parameters:
      path: The database; every process of the host opens the same file.
      retention_seconds: How long a message's status is answered; rows are purged after it plus a grace.
    """

    #: The most events a writer hands to one `write` call.
    max_batch_events = MAX_BATCH_EVENTS

    def __init__(self, path: Path, *, retention_seconds: float) -> None:
        self.path = path
        self.retention_seconds = retention_seconds
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._next_purge = 0.0
        #: Commits made by this object (one per successful `write`), for the benchmark's counts.
        self.commits = 0

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return db
        if self._closed:
            raise StoreUnavailable("The status store is closed.")
        try:
            db = open_database(self.path, _SCHEMA, timeout_seconds=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"cannot open the status store {str(self.path)!r}: {exc}") from exc
        self._local.db = db
        with self._lock:
            self._connections.append(db)
        return db

    def write(self, events: Sequence[StatusEvent]) -> None:
        """Insert the events in one transaction (and purge expired messages now and then)."""
        if not events:
            return
        rows = [
            (
                e.message_id,
                e.key,
                e.kind,
                e.at,
                e.attempt,
                e.type,
                e.queue,
                json.dumps(dict(e.detail), separators=(",", ":"), default=str) if e.detail else "{}",
            )
            for e in events
        ]
        db = self._db()
        now = time.time()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(_INSERT, rows)
                if now >= self._next_purge:
                    self._purge(db, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot write {len(rows)} status event(s): {exc}") from exc
        self.commits += 1

    def read(self, message_id: str) -> list[StatusEvent]:
        """Every stored event of one message, oldest first."""
        db = self._db()
        try:
            rows = db.execute(
                "SELECT kind, at, attempt, type, queue, detail, key FROM status_events "
                "WHERE message_id = ? ORDER BY at, key",
                (message_id,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot read the status of {message_id!r}: {exc}") from exc
        return [
            StatusEvent(message_id, kind, at, attempt, type_, queue, json.loads(detail), key)
            for kind, at, attempt, type_, queue, detail, key in rows
        ]

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        cutoff = now - self.retention_seconds - PURGE_GRACE_SECONDS
        deleted = db.execute(
            "DELETE FROM status_events WHERE message_id IN "
            "(SELECT DISTINCT message_id FROM status_events WHERE at < ? LIMIT ?)",
            (cutoff, PURGE_BATCH_MESSAGES),
        ).rowcount
        # While there is a backlog, the next write purges again (a second later); else after the interval.
        self._next_purge = now + (1.0 if deleted > 0 else PURGE_INTERVAL_SECONDS)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for db in connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()
