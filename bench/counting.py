"""Counting SQS requests by action with a botocore hook (what the stock baselines use)."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class RequestCounter:
    """Counts SQS requests by action; register it as a botocore `before-call.sqs` hook."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, model: Any, **_: Any) -> None:
        with self.lock:
            self.counts[model.name] += 1

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)
