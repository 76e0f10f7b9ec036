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
    result: asyncio.Future[dict[str, Any]]


class IdempotencyStore:
    """Remembers, per key, the message it came with and the answer it got.

    The first request with a key does the work; a concurrent or later one with the same key and
    message waits for and returns that answer. A failed first attempt is forgotten, so a retry
    can try again. Keys live in this process only: behind several API processes, route a client's
    retries to the same process or accept that a retry may send a second message.
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
            return entry.result
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._entries[key] = _Entry(fingerprint, now + self.window_seconds, future)
        while len(self._entries) > self.max_keys:
            self._entries.popitem(last=False)
        return None

    def done(self, key: str, answer: dict[str, Any]) -> None:
        entry = self._entries.get(key)
        if entry is not None and not entry.result.done():
            entry.result.set_result(answer)

    def forget(self, key: str, error: BaseException) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and not entry.result.done():
            entry.result.set_exception(error)
            entry.result.exception()  # retrieved here, so an unawaited failure is not reported as lost

    def _expire(self, now: float) -> None:
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.expires_at > now:
                return
            del self._entries[key]
