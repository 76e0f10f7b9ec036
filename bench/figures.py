"""The per-message figures every run with an API and a worker reports, from its SQS requests by action.

The end-to-end, mix and fixed-rate records mix these in: each is a dataclass with `api_requests` and
`worker_requests` (SQS requests by action, as the proxy counted them) and says how many messages went
through (`_messages`); closed-loop runs also say when they finished (`_finished_at`).
"""

from __future__ import annotations

from collections import Counter

from bench.api_load import SEND_ACTIONS, Load


class RequestFigures:
    """SQS requests per message, from a run's requests by action."""

    api_requests: Counter[str]
    worker_requests: Counter[str]

    def _messages(self) -> int:
        raise NotImplementedError

    def per_message(self, value: float) -> float:
        messages = self._messages()
        return value / messages if messages else float("nan")

    @property
    def requests_per_message(self) -> float:
        return self.per_message(sum(self.api_requests.values()) + sum(self.worker_requests.values()))

    @property
    def api_requests_per_message(self) -> float:
        return self.per_message(sum(self.api_requests.values()))

    @property
    def sends_per_message(self) -> float:
        return self.per_message(sum(self.api_requests.get(a, 0) for a in SEND_ACTIONS))

    @property
    def worker_requests_per_message(self) -> float:
        return self.per_message(sum(self.worker_requests.values()))

    @property
    def receives_per_message(self) -> float:
        """ReceiveMessage calls of every queue the worker consumes (empty polls included) per message."""
        return self.per_message(self.worker_requests.get("ReceiveMessage", 0))

    @property
    def deletes_per_message(self) -> float:
        return self.per_message(sum(v for k, v in self.worker_requests.items() if k.startswith("DeleteMessage")))

    @property
    def messages_per_receive(self) -> float:
        receives = self.worker_requests.get("ReceiveMessage", 0)
        return self._messages() / receives if receives else float("nan")


class ClosedLoopFigures(RequestFigures):
    """A closed-loop run's figures: its clients' `load`, from the first POST (`started_at`) through the
    last answer (`load_done_at`) to when every message was processed (`_finished_at`)."""

    load: Load
    started_at: float
    load_done_at: float

    def _finished_at(self) -> float:
        raise NotImplementedError

    def _messages(self) -> int:
        return self.load.accepted

    @property
    def accepted(self) -> int:
        return self.load.accepted

    @property
    def rate(self) -> float:
        """Accepted messages over first POST -> every message processed."""
        seconds = self._finished_at() - self.started_at
        return self.accepted / seconds if seconds > 0 else float("nan")

    @property
    def api_rate(self) -> float:
        return self.load.rate

    @property
    def lag_seconds(self) -> float:
        """How long the worker took to finish after the last answer: how far it drains behind the API."""
        return self._finished_at() - self.load_done_at
