"""The broker's middleware signals: only hooks that do something are called, as Dramatiq would call them."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import SkipMessage

from broker import build_broker
from queue_manager.settings import Settings


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


def test_hooks_run_in_order_before_and_in_reverse_after_and_a_late_middleware_is_called(settings: Settings) -> None:
    broker = build_broker(settings)
    try:
        calls: list[str] = []
        broker.add_middleware(Recorder("a", calls, fail=True))
        broker.emit_before("process_message", "m")
        broker.emit_after("process_message", "m", result=None)
        # A middleware added after the hooks were first looked up is called too
        broker.add_middleware(Recorder("b", calls))
        broker.emit_before("process_message", "m")
        broker.emit_after("process_message", "m", result=None)
        # A failing after-hook is logged, and the ones after it still run
        assert calls == ["before a", "after a", "before a", "before b", "after b", "after a"]
    finally:
        broker.close()


def test_a_skip_from_a_before_hook_stops_the_message(settings: Settings) -> None:
    broker = build_broker(settings)
    try:
        calls: list[str] = []
        broker.add_middleware(Recorder("a", calls, skip=True))
        broker.add_middleware(Recorder("b", calls))
        with pytest.raises(SkipMessage):
            broker.emit_before("process_message", "m")
        assert calls == ["before a"]
    finally:
        broker.close()
