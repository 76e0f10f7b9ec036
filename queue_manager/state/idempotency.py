"""Idempotency keys: the interface both backends give, and the SQLite one (one host, the default).

A retried POST replays the first answer. The DynamoDB backend (a fleet, `QM_STATE_TABLE`) is in
`queue_manager.state.dynamodb_keys`; `queue_manager.state.keys.idempotency_store` chooses.

One SQLite database in WAL mode, in the state directory, holds per key the fingerprint of the
message it came with, its state and the answer it got:

- `pending`: a request is sending the key's message now. Others with the key wait for the outcome
  (until their own request timeout). The row carries a lease: if its owner died mid-send, the key
  counts as `unknown` once the lease is over.
- `done`: SQS has the message; the answer is replayed (`Idempotent-Replayed: true`).
- `unknown`: the last send got no answer (SQS may have the message). The next request with the key
  sends it again, with the same message id (a function of the key and the message): at least once,
  never a second id.

A send that surely did not reach SQS frees the key. Rows live for the idempotency window from the
first request.

The database is only ever touched by one thread of the store's own, never by the event loop. It
commits whatever queued up while it was busy in one transaction (a group commit, as the sender
batches sends), so under load a key costs a share of one commit and one wake-up of the loop.
Outcomes are recorded without the request waiting for the write: this process's later requests
see them in order, other processes within a commit.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from queue_manager.state.base import StoreUnavailable
from queue_manager.state.sqlite import open_database

logger = logging.getLogger(__name__)

#: The database file, in the state directory.
DATABASE_NAME = "idempotency.sqlite3"

#: How long a write waits for another process's lock before failing.
LOCK_TIMEOUT_SECONDS = 5.0

#: How often a request waiting for a key another process is sending looks at it again.
POLL_INTERVAL_SECONDS = 0.02

#: Expired rows deleted at a time; purges run while the last one found this many.
PURGE_BATCH_ROWS = 1000

#: The pause between purges of expired rows once there are none left to delete.
PURGE_INTERVAL_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'unknown')),
    answer TEXT,
    owner TEXT,
    lease_until REAL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (expires_at);
"""

#: A fresh key, or one whose window is over, is claimed in one statement: the common case.
_CLAIM_NEW = """
INSERT INTO idempotency_keys (key, fingerprint, state, owner, lease_until, expires_at)
VALUES (?, ?, 'pending', ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    fingerprint = excluded.fingerprint, state = 'pending', answer = NULL, owner = excluded.owner,
    lease_until = excluded.lease_until, expires_at = excluded.expires_at
WHERE idempotency_keys.expires_at <= ?
"""


class KeyReused(ValueError):
    """Raised when a key comes back with a different message than it first came with."""


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a request may do with its key: send (`owner`), replay (`answer`), or else wait."""

    #: Set when this request sends the key's message: the token that settles the attempt.
    owner: str | None = None
    #: The first answer, when SQS has the message.
    answer: dict[str, Any] | None = None
    #: Whether an earlier attempt's outcome is unknown (this one is a re-send).
    resend: bool = False
    #: The key came with another message.
    reused: bool = False


@dataclasses.dataclass
class _Op:
    key: str
    run: Callable[[sqlite3.Connection, float], Any]
    future: asyncio.Future[Any] | None
    #: Whether it settles an attempt (local waiters wake once it is committed).
    settles: bool = False


class IdempotencyKeys(Protocol):
    """Per key, the message it came with and the answer it got, shared by every process that opens the store.

    Each key is `pending` (a request sends its message; it holds a lease), `done` (SQS has it: its
    answer is replayed) or `unknown` (the last send got no answer: the next request sends it again,
    with the same message id). Its methods run on the event loop; the store does its I/O elsewhere.
    """

    async def open(self) -> None:
        """Open (or create) the store; raises TableMissing (DynamoDB) when its table must exist and does not."""

    async def claim(self, key: str, fingerprint: str) -> Claim:
        """Claim a key for this request. Raises KeyReused, or StoreUnavailable if the store fails."""

    def done(self, key: str, fingerprint: str, answer: dict[str, Any]) -> None:
        """SQS has the key's message: later requests replay `answer` (recorded in the background)."""

    def failed(self, key: str, owner: str, *, unknown: bool) -> None:
        """The attempt `owner` made ended without SQS's acceptance: `unknown` keeps the key, else it is freed."""

    async def wait(self, key: str, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the key's attempt to be recorded before claiming it again."""

    async def close(self) -> None:
        """Write what is queued, then release the store."""


async def wait_settled(settled: asyncio.Event | None, timeout: float, poll_seconds: float) -> None:
    """Wait, at most `timeout` seconds, for this process's attempt with a key to be recorded (`settled`);
    a key another process or host is sending (no event here) is only looked at again after `poll_seconds`."""
    if settled is None:
        await asyncio.sleep(min(timeout, poll_seconds))
        return
    try:
        async with asyncio.timeout(timeout):
            await settled.wait()
    except TimeoutError:
        pass


class SqliteIdempotencyKeys:
    """Per key, the message it came with and the answer it got, shared across the processes of a host.

    Parameters:
      path: The SQLite database; every API process of one host opens the same file.
      window_seconds: How long a key is remembered, from its first request.
      lease_seconds: How long a `pending` key is trusted to its owner's send.
    """

    def __init__(self, path: Path, *, window_seconds: float, lease_seconds: float) -> None:
        self.path = path
        self.window_seconds = window_seconds
        self.lease_seconds = lease_seconds
        self._ops: collections.deque[_Op] = collections.deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_purge = 0.0
        #: Keys this process is sending now, set once their attempt is recorded: local waiters wake at once.
        self._settled: dict[str, asyncio.Event] = {}

    async def open(self) -> None:
        """Open (or create) the database, on the store's own thread."""
        self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._serve, args=(opened,), name="qm-idempotency", daemon=True)
        self._thread.start()
        await opened

    async def claim(self, key: str, fingerprint: str) -> Claim:
        """Claim a key for this request. Raises KeyReused, or StoreUnavailable if the store fails."""
        token = uuid.uuid4().hex
        claim: Claim = await self._submit(key, lambda db, now: self._claim(db, now, key, fingerprint, token))
        if claim.reused:
            raise KeyReused(key)
        if claim.owner is not None:
            self._settled[key] = asyncio.Event()
        return claim

    def _claim(self, db: sqlite3.Connection, now: float, key: str, fingerprint: str, token: str) -> Claim:
        lease_until = now + self.lease_seconds
        inserted = db.execute(_CLAIM_NEW, (key, fingerprint, token, lease_until, now + self.window_seconds, now))
        if inserted.rowcount == 1:
            return Claim(owner=token)
        fingerprint_, state, answer, leased_until = db.execute(
            "SELECT fingerprint, state, answer, lease_until FROM idempotency_keys WHERE key = ?", (key,)
        ).fetchone()
        if fingerprint_ != fingerprint:
            return Claim(reused=True)
        if state == "done":
            return Claim(answer=json.loads(answer))
        if state == "pending" and leased_until > now:
            return Claim()
        # Unknown, or pending past its lease (its owner is gone): this request sends it again.
        db.execute(
            "UPDATE idempotency_keys SET state = 'pending', owner = ?, lease_until = ? WHERE key = ?",
            (token, lease_until, key),
        )
        return Claim(owner=token, resend=True)

    def done(self, key: str, fingerprint: str, answer: dict[str, Any]) -> None:
        """SQS has the key's message: later requests replay `answer` (recorded in the background)."""
        encoded = json.dumps(answer, separators=(",", ":"))
        # Whichever attempt landed, SQS has a copy with this id: done, whoever owns the key now.
        self._record(
            key,
            lambda db, now: db.execute(
                "UPDATE idempotency_keys SET state = 'done', answer = ?, owner = NULL, lease_until = NULL "
                "WHERE key = ? AND fingerprint = ?",
                (encoded, key, fingerprint),
            ),
        )

    def failed(self, key: str, owner: str, *, unknown: bool) -> None:
        """The attempt `owner` made ended without SQS's acceptance: `unknown` keeps the key, else it is freed."""
        if unknown:
            sql = (
                "UPDATE idempotency_keys SET state = 'unknown', owner = NULL, lease_until = NULL "
                "WHERE key = ? AND owner = ? AND state = 'pending'"
            )
        else:
            sql = "DELETE FROM idempotency_keys WHERE key = ? AND owner = ? AND state = 'pending'"
        self._record(key, lambda db, now: db.execute(sql, (key, owner)))

    async def wait(self, key: str, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the key's attempt to be recorded before claiming it again."""
        await wait_settled(self._settled.get(key), timeout, POLL_INTERVAL_SECONDS)

    async def close(self) -> None:
        """Write what is queued, then close the database."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _submit(self, key: str, run: Callable[[sqlite3.Connection, float], Any]) -> asyncio.Future[Any]:
        assert self._loop is not None, "open() the store first"
        future = self._loop.create_future()
        self._enqueue(_Op(key, run, future))
        return future

    def _record(self, key: str, run: Callable[[sqlite3.Connection, float], Any]) -> None:
        self._enqueue(_Op(key, run, None, settles=True))

    def _enqueue(self, op: _Op) -> None:
        with self._ready:
            if self._closing:
                raise StoreUnavailable("The idempotency store is closed.")
            self._ops.append(op)
            self._ready.notify()

    def _serve(self, opened: asyncio.Future[None]) -> None:
        """The store's thread: open the database, then commit what queued up, batch by batch."""
        loop = self._loop
        assert loop is not None
        try:
            db = self._connect()
        except Exception as exc:
            loop.call_soon_threadsafe(_resolve, opened, None, exc)
            return
        loop.call_soon_threadsafe(_resolve, opened, None, None)
        try:
            while True:
                with self._ready:
                    while not self._ops and not self._closing:
                        self._ready.wait()
                    if not self._ops:
                        return
                    batch = list(self._ops)
                    self._ops.clear()
                outcomes = self._commit(db, batch)
                loop.call_soon_threadsafe(self._deliver, batch, outcomes)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        # A key lost to a power cut is worth one retry's duplicate at worst, not an fsync per request.
        return open_database(self.path, _SCHEMA, timeout_seconds=LOCK_TIMEOUT_SECONDS, check_same_thread=True)

    def _commit(self, db: sqlite3.Connection, batch: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        """Run a batch in one transaction; a failure fails the whole batch (and nothing of it is written)."""
        now = time.time()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                results: list[tuple[Any, BaseException | None]] = [(op.run(db, now), None) for op in batch]
                if now >= self._next_purge:
                    self._purge(db, now)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            logger.error("The idempotency store could not write %d change(s): %s.", len(batch), exc)
            unavailable = StoreUnavailable(f"SQLite: {exc}")
            unavailable.__cause__ = exc
            return [(None, unavailable) for _ in batch]
        except Exception as exc:  # a bug: every waiter must still hear of it, never hang
            logger.exception("The idempotency store failed on %d change(s).", len(batch))
            return [(None, exc) for _ in batch]
        return results

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        deleted = db.execute(
            "DELETE FROM idempotency_keys WHERE key IN "
            "(SELECT key FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)",
            (now, PURGE_BATCH_ROWS),
        ).rowcount
        self._next_purge = now if deleted >= PURGE_BATCH_ROWS else now + PURGE_INTERVAL_SECONDS

    def _deliver(self, batch: list[_Op], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        for op, (result, error) in zip(batch, outcomes, strict=True):
            if op.future is not None:
                _resolve(op.future, result, error)
            if op.settles:
                event = self._settled.pop(op.key, None)
                if event is not None:
                    event.set()


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
