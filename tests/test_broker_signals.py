"""The broker's middleware signals: only hooks that do something are called, as Dramatiq would call them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import SkipMessage

from queue_manager.sqs.broker import QMBroker


class Recorder(dramatiq.Middleware):
    def __init__(self, name: str, calls: list[str], *, fail: bool = False, skip: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail
        self.skip = skip

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.calls.append(f"before {self.name}")
        if self.skip:
            raise SkipMessage()

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *, result: Any = None,
                              exception: BaseException | None = None) -> None:  # fmt: skip
        self.calls.append(f"after {self.name}")
        if self.fail:
            raise RuntimeError("boom")


def test_hooks_run_in_order_before_and_in_reverse_after_and_a_late_middleware_is_called(
    broker: Callable[..., QMBroker],
) -> None:
    qm = broker()
    calls: list[str] = []
    qm.add_middleware(Recorder("a", calls, fail=True))
    qm.emit_before("process_message", "m")
    qm.emit_after("process_message", "m", result=None)
    # A middleware added after the hooks were first looked up is called too
    qm.add_middleware(Recorder("b", calls))
    qm.emit_before("process_message", "m")
    qm.emit_after("process_message", "m", result=None)
    # A failing after-hook is logged, and the ones after it still run
    assert calls == ["before a", "after a", "before a", "before b", "after b", "after a"]


def test_a_skip_from_a_before_hook_stops_the_message(broker: Callable[..., QMBroker]) -> None:
    qm = broker()
    calls: list[str] = []
    qm.add_middleware(Recorder("a", calls, skip=True))
    qm.add_middleware(Recorder("b", calls))
    with pytest.raises(SkipMessage):
        qm.emit_before("process_message", "m")
    assert calls == ["before a"]
