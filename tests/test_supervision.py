"""The supervisord event listener's decisions, on a recording stand-in for supervisord's XML-RPC."""

from __future__ import annotations

import xmlrpc.client
from typing import Any

from queue_manager.supervision import Supervision


class FakeSupervisor:
    """Records the calls; `startProcess` of a running program fails as supervisord's does."""

    def __init__(self, running: set[str] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.running = running or set()

    def startProcess(self, name: str, wait: bool) -> bool:
        self.calls.append(("start", name))
        if name in self.running:
            raise xmlrpc.client.Fault(60, "ALREADY_STARTED")
        return True

    def shutdown(self) -> bool:
        self.calls.append(("shutdown", None))
        return True

    def getProcessInfo(self, name: str) -> dict[str, Any]:
        return {"exitstatus": 1}


class FakeRPC:
    def __init__(self, supervisor: FakeSupervisor) -> None:
        self.supervisor = supervisor


def supervision(running: set[str] | None = None) -> tuple[Supervision, FakeSupervisor]:
    fake = FakeSupervisor(running)
    return Supervision(FakeRPC(fake), own_name="events"), fake


def test_the_api_and_workers_start_only_once_the_local_server_runs() -> None:
    listener, fake = supervision(running={"api"})
    listener.start()
    assert fake.calls == [("start", "sqs")]
    listener.handle("PROCESS_STATE_RUNNING", {"processname": "api"})
    assert fake.calls == [("start", "sqs")]
    # A start of a program already running (a restart of the server) is no error
    listener.handle("PROCESS_STATE_RUNNING", {"processname": "sqs"})
    assert fake.calls[1:] == [("start", "api"), ("start", "worker")]


def test_a_program_that_cannot_start_stops_everything_once() -> None:
    listener, fake = supervision()
    listener.handle("PROCESS_STATE_EXITED", {"processname": "api", "expected": "1"})
    listener.handle("PROCESS_STATE_FATAL", {"processname": "worker"})
    assert fake.calls == [("shutdown", None)]
    # Nothing starts while stopping
    listener.handle("PROCESS_STATE_RUNNING", {"processname": "sqs"})
    assert fake.calls == [("shutdown", None)]


def test_a_program_that_exits_within_its_start_time_stops_everything() -> None:
    listener, fake = supervision()
    listener.handle("PROCESS_STATE_FATAL", {"processname": "sqs"})
    assert fake.calls == [("shutdown", None)]


def test_a_crash_after_a_good_start_is_left_to_supervisord_to_restart() -> None:
    listener, fake = supervision()
    listener.handle("PROCESS_STATE_EXITED", {"processname": "worker", "expected": "0"})
    listener.handle("PROCESS_STATE_STOPPED", {"processname": "api", "from_state": "STOPPING"})
    assert fake.calls == []
