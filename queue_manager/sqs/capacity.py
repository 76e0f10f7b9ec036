"""The count of worker threads free to take a message, shared by a process's consumers."""

from __future__ import annotations

import threading
import time


class Capacity:
    """Counts messages held by this process against the worker threads that can run them."""

    def __init__(self, total: int = 10) -> None:
        self.total = total
        #: Of the total, the slots beyond the threads (messages held ready for the next free thread).
        self.lookahead = 0
        self.held = 0
        self._cond = threading.Condition()

    def set_threads(self, threads: int, lookahead: int = 0) -> None:
        """Size the count to a worker's threads plus the messages it may hold ready beyond them."""
        with self._cond:
            self.total = threads + lookahead
            self.lookahead = lookahead
            self._cond.notify_all()

    def free(self) -> int:
        with self._cond:
            return max(self.total - self.held, 0)

    def reserve(
        self, most: int, *, timeout_seconds: float, linger_seconds: float = 0.0, whole_thread: bool = False
    ) -> int:
        """Wait until a slot is free, then reserve up to `most` slots and return how many.

        After the first slot frees, wait up to `linger_seconds` more for others to free, so
        one receive can fill more threads. With `whole_thread`, wait until a thread is free, not
        only a lookahead slot: a busy queue's receive then waits for work to finish rather than
        fetching one message ahead between full receives. Returns 0 on timeout.
        """
        deadline = time.monotonic() + timeout_seconds
        want = min(most, self.total)
        with self._cond:
            first = self.lookahead + 1 if whole_thread else 1
            while self.total - self.held < first:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 0
                self._cond.wait(remaining)
            if linger_seconds > 0:
                linger_deadline = time.monotonic() + linger_seconds
                while self.total - self.held < want:
                    remaining = linger_deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            n = min(most, self.total - self.held)
            self.held += n
            return n

    def take(self, n: int) -> None:
        """Count `n` messages as held even if no thread is free (bounded over-commit)."""
        with self._cond:
            self.held += n

    def release(self, n: int = 1) -> None:
        with self._cond:
            self.held = max(self.held - n, 0)
            self._cond.notify_all()
