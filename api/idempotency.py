"""Idempotency keys: a retried POST with the same key replays the first result, within a window."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from typing import Any

#: The most keys remembered; the oldest are forgotten first, so memory stays bounded.
MAX_KEYS = 100_000


class KeyReused(ValueError):
    """Raised when a key comes back with a different message than it first came with."""


@dataclasses.dataclass
class _Entry:
    fingerprint: str
    expires_at: float
    #: The first answer, to await; None while the outcome of the last attempt is unknown.
    result: asyncio.Future[dict[str, Any]] | None


class IdempotencyStore:
    """Remembers, per key, the message it came with and the answer it got.

    The first request with a key does the work; a concurrent or later one with the same key and
    message waits for and returns that answer. An attempt that surely failed is forgotten, so a
    retry can try again. One whose outcome is unknown (SQS may have the message) keeps the key's
    message: a retry sends it again, with the same message id (a function of the key). Keys live
    in this process; behind several API processes a retry that lands elsewhere still carries the
    same message id, so the worker sees one message id however many copies SQS holds.
    """

    def __init__(self, *, window_seconds: float, max_keys: int = MAX_KEYS) -> None:
        self.window_seconds = window_seconds
        self.max_keys = max_keys
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: str, fingerprint: str) -> asyncio.Future[dict[str, Any]] | None:
        """None if this request owns the key now (call `done` or `forget`); else the first answer to await."""
        now = time.monotonic()
        self._expire(now)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise KeyReused(key)
            if entry.result is not None:
                return entry.result
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if entry is not None:  # the outcome was unknown: this request owns the key's next attempt
            entry.result = future
            return None
        self._entries[key] = _Entry(fingerprint, now + self.window_seconds, future)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        return None

    def done(self, key: str, answer: dict[str, Any]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.result is not None and not entry.result.done():
            entry.result.set_result(answer)

    def forget(self, key: str, error: BaseException) -> None:
        """The attempt surely failed (nothing reached SQS): the key is free again."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            _fail(entry, error)

    def unknown(self, key: str, error: BaseException) -> None:
        """The attempt's outcome is unknown: keep the key's message, let the next request try again."""
        entry = self._entries.get(key)
        if entry is not None:
            _fail(entry, error)
            entry.result = None

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                return
            del self._entries[key]


def _fail(entry: _Entry, error: BaseException) -> None:
    if entry.result is not None and not entry.result.done():
        entry.result.set_exception(error)
        entry.result.exception()  # retrieved here, so an unawaited failure is not reported as lost
