"""Idempotency keys shared by every API process on a host: a retried POST replays the first answer.

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
first request. Every query runs on one thread of the store's own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The database file, in the state directory.
DATABASE_NAME = "idempotency.sqlite3"

#: How long a query waits for another process's write lock before failing.
LOCK_TIMEOUT_SECONDS = 5.0

#: How often a request waiting for a key sent by another process looks at it again.
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


class IdempotencyStore:
    """Per key, the message it came with and the answer it got, shared across processes.

    Parameters:
      path: The SQLite database; every API process of one host opens the same file.
      window_seconds: How long a key is remembered, from its first request.
      lease_seconds: How long a `pending` key is trusted to its owner's send.
    """

    def __init__(self, path: Path, *, window_seconds: float, lease_seconds: float) -> None:
        self.path = path
        self.window_seconds = window_seconds
        self.lease_seconds = lease_seconds
        # One thread, one connection: queries never block the event loop, and the connection is
        # only ever used by the thread that opened it.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qm-idempotency")
        self._db: sqlite3.Connection | None = None
        self._next_purge = 0.0
        #: Keys this process is sending now, set when their attempt settles: local waiters wake at once.
        self._settled: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Open (or create) the database."""
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_SECONDS, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL survives a process crash (what matters here), not a power cut: a key is
        # worth one retry's duplicate at worst, not an fsync per request.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def claim(self, key: str, fingerprint: str) -> Claim:
        """Claim a key for this request. Raises KeyReused, or sqlite3.Error if the store fails."""
        claim: Claim = await self._run(self._claim, key, fingerprint, uuid.uuid4().hex)
        if claim.owner is not None:
            self._settled[key] = asyncio.Event()
        return claim

    def _claim(self, key: str, fingerprint: str, token: str) -> Claim:
        db = self._connection()
        now = time.time()
        lease_until = now + self.lease_seconds
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT fingerprint, state, answer, lease_until FROM idempotency_keys WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT OR REPLACE INTO idempotency_keys (key, fingerprint, state, owner, lease_until, expires_at) "
                    "VALUES (?, ?, 'pending', ?, ?, ?)",
                    (key, fingerprint, token, lease_until, now + self.window_seconds),
                )
                claim = Claim(owner=token)
            elif row[0] != fingerprint:
                raise KeyReused(key)
            elif row[1] == "done":
                claim = Claim(answer=json.loads(row[2]))
            elif row[1] == "pending" and row[3] > now:
                claim = Claim()
            else:  # unknown, or pending past its lease (its owner is gone): this request sends it again
                db.execute(
                    "UPDATE idempotency_keys SET state = 'pending', owner = ?, lease_until = ? WHERE key = ?",
                    (token, lease_until, key),
                )
                claim = Claim(owner=token, resend=True)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if now >= self._next_purge:
            self._purge(now)
        return claim

    def _purge(self, now: float) -> None:
        deleted = (
            self._connection()
            .execute(
                "DELETE FROM idempotency_keys WHERE key IN "
                "(SELECT key FROM idempotency_keys WHERE expires_at <= ? LIMIT ?)",
                (now, PURGE_BATCH_ROWS),
            )
            .rowcount
        )
        self._next_purge = now if deleted >= PURGE_BATCH_ROWS else now + PURGE_INTERVAL_SECONDS

    async def done(self, key: str, fingerprint: str, answer: dict[str, Any]) -> None:
        """SQS has the key's message: later requests replay `answer`."""
        try:
            await self._run(self._done, key, fingerprint, json.dumps(answer, separators=(",", ":")))
        finally:
            self._wake(key)

    def _done(self, key: str, fingerprint: str, answer: str) -> None:
        # Whichever attempt landed, SQS has a copy with this id: done, whoever owns the key now.
        self._connection().execute(
            "UPDATE idempotency_keys SET state = 'done', answer = ?, owner = NULL, lease_until = NULL "
            "WHERE key = ? AND fingerprint = ?",
            (answer, key, fingerprint),
        )

    async def failed(self, key: str, owner: str, *, unknown: bool) -> None:
        """The attempt `owner` made is over without an answer: `unknown` keeps the key, else it is freed."""
        try:
            await self._run(self._failed, key, owner, unknown)
        finally:
            self._wake(key)

    def _failed(self, key: str, owner: str, unknown: bool) -> None:
        db = self._connection()
        if unknown:
            db.execute(
                "UPDATE idempotency_keys SET state = 'unknown', owner = NULL, lease_until = NULL "
                "WHERE key = ? AND owner = ? AND state = 'pending'",
                (key, owner),
            )
        else:
            db.execute("DELETE FROM idempotency_keys WHERE key = ? AND owner = ? AND state = 'pending'", (key, owner))

    def settle_later(self, coroutine: Any) -> None:
        """Run a `done` or `failed` whose request stopped waiting; `close` waits for it."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._settled_later)

    def _settled_later(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("Could not record the outcome of a send whose request had stopped waiting.",
                         exc_info=task.exception())  # fmt: skip

    async def wait(self, key: str, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the key's attempt to settle before claiming it again."""
        event = self._settled.get(key)
        if event is None:  # sent by another process: look again shortly
            await asyncio.sleep(min(timeout, POLL_INTERVAL_SECONDS))
            return
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass

    def _wake(self, key: str) -> None:
        event = self._settled.pop(key, None)
        if event is not None:
            event.set()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.ProgrammingError("The idempotency store is closed.")
        return self._db

    async def close(self) -> None:
        """Record the outcomes still pending, then close the database."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
