"""When a partial batch waits for more: the rules behind the API's send linger and the worker's gather.

Both hold something part-full (a `SendMessageBatch`, the next `ReceiveMessage`) so that fewer, fuller
requests carry the same messages, at the cost of latency. So each waits only when the recent arrival
rate says the wait pays:

- a partial send waits for its queue's batch in flight only when another message is expected
  within the linger (`Linger`): a queue whose messages come further apart than that gets no
  company by waiting, so the wait would save no request at all;
- a part-full receive lets messages gather before the next one only when the rate would fill a
  receive within the gather window (`Gathering`), and then no longer than that takes; at a slower
  rate the next receive goes at once and waits at SQS, which answers a long poll as soon as a
  message is there.

Pure rules and estimators: the caller passes the clock, so tests are deterministic. `api.sender`
applies `Linger` per queue and `sqs.consumer` applies `Gathering` per queue and process.
"""

from __future__ import annotations

import math


class ArrivalRate:
    """How fast things arrive, per second, over about the last `window_seconds` (an exponentially
    decaying count: a burst weighs as much as a steady stream of the same size, and silence decays
    the rate to 0 by itself).

    Not thread-safe: call it under the caller's lock.
    """

    def __init__(self, window_seconds: float) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be above 0, not {window_seconds}.")
        self.window_seconds = window_seconds
        self._weight = 0.0
        self._at = -math.inf

    def note(self, now: float, count: int = 1) -> None:
        """`count` things arrived at `now` (a monotonic clock, in seconds)."""
        self._weight = self._decayed(now) + count
        self._at = max(self._at, now)

    def per_second(self, now: float) -> float:
        """The rate at `now`."""
        return self._decayed(now) / self.window_seconds

    def _decayed(self, now: float) -> float:
        if self._weight == 0.0:
            return 0.0
        return self._weight * math.exp(-max(0.0, now - self._at) / self.window_seconds)


def hold_seconds(missing: int, rate_per_second: float, most_seconds: float) -> float:
    """How long a partial batch that lacks `missing` entries should wait for them: the time arrivals at
    `rate_per_second` take to bring them, when that is within `most_seconds`; else 0 (go now).

    A batch that lacks nothing, or that the rate would not fill in time, never waits: waiting would
    cost every message in it the whole wait and, at best, save a request now and then.
    """
    if missing <= 0 or rate_per_second <= 0 or most_seconds <= 0:
        return 0.0
    seconds = missing / rate_per_second
    return seconds if seconds <= most_seconds else 0.0


#: Over about how long a queue's arrivals at the API are measured, for `Linger`.
SEND_RATE_WINDOW_SECONDS = 0.1

#: Over about how long a queue's receives are measured, for `Gathering` (a handful of receives make the
#: estimate).
RECEIVE_RATE_WINDOW_SECONDS = 0.5


class Linger:
    """One queue's send rule: whether a partial batch waits for the batch in flight.

    It waits (at most `most_seconds`, the linger, and no longer than the batch in flight takes to be
    answered) only when company is expected within the linger: when the message before the newest
    came within it (so a burst is seen at its second message), or the queue's recent rate brings at
    least one in that time (so one slow gap, a host busy elsewhere for a moment, does not send a
    stream's messages alone). Messages further apart would wait for no company.
    """

    def __init__(self, most_seconds: float, *, rate_window_seconds: float = SEND_RATE_WINDOW_SECONDS) -> None:
        self.most_seconds = most_seconds
        self.arrivals = ArrivalRate(rate_window_seconds)
        self._last = -math.inf
        self._gap = math.inf

    def arrived(self, now: float) -> None:
        """A message for this queue arrived at `now`."""
        self._gap = max(0.0, now - self._last)
        self._last = max(self._last, now)
        self.arrivals.note(now)

    def worth_waiting(self, now: float, ready: int, max_entries: int) -> bool:
        """Whether `ready` entries (that could go now) should wait for the batch in flight; a full batch never does."""
        if ready >= max_entries:
            return False
        horizon = self.most_seconds
        return self._gap <= horizon or hold_seconds(1, self.arrivals.per_second(now), horizon) > 0


class Gathering:
    """One queue's receive rule (per process): how long a part-full receive lets messages gather before the next.

    Only while this consumer's recent receive rate would fill the next receive within `most_seconds`
    (the gather window), and then only as long as that takes; otherwise 0: the next receive goes at
    once and waits at SQS, which answers a long poll as soon as a message is there. A full receive
    (a backlog) and an empty one (nothing to gather) never wait.
    """

    def __init__(self, most_seconds: float, *, rate_window_seconds: float = RECEIVE_RATE_WINDOW_SECONDS) -> None:
        self.most_seconds = most_seconds
        self.arrivals = ArrivalRate(rate_window_seconds)

    def after_receive(self, now: float, received: int, asked: int) -> float:
        """Note a receive that returned `received` of the `asked` messages at `now`; the seconds to wait."""
        self.arrivals.note(now, received)
        if received <= 0 or received >= asked:
            return 0.0
        return hold_seconds(asked, self.arrivals.per_second(now), self.most_seconds)
