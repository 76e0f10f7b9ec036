"""Several API processes on one port: connections spread over them, metrics sum, a key is one message."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from queue_manager.settings import Settings
from queue_manager.sqs.wait import endpoint_answers
from tests.conftest import Proc, settings_env
from tests.support import drain, free_port, listening, samples, wait_for

pytestmark = pytest.mark.api

LOG = {"type": "log", "payload": {"message": "spread"}}


def children(proc: Proc) -> list[int]:
    path = Path(f"/proc/{proc.process.pid}/task/{proc.process.pid}/children")
    return [int(pid) for pid in path.read_text().split()]


def alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (an orphan's zombie may wait for its reaper)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def connect(url: str) -> http.client.HTTPConnection:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    request(connection, "GET", "/healthz")  # the server has accepted it once this is answered
    return connection


def request(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    data = None if body is None else json.dumps(body).encode()
    connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def serving_pid(connection: http.client.HTTPConnection, pids: list[int]) -> int:
    """The API process that holds the server end of a keep-alive connection (from /proc, Linux only)."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    server_port = connection.sock.getpeername()[1]
    inodes = {
        fields[9]
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].split(":")[1], 16) == server_port and int(fields[2].split(":")[1], 16) == client_port
    }
    assert len(inodes) == 1, inodes
    target = f"socket:[{inodes.pop()}]"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) == target:
                    return pid
    raise AssertionError(f"No API process holds {target}.")


def metrics(connection: http.client.HTTPConnection) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, _, body = request(connection, "GET", "/metrics")
    assert status == 200
    return samples(body.decode())


def test_two_api_processes_share_the_port_one_key_store_and_their_metrics_and_stop_together(
    api_process: Any, settings: Settings, sqs: Any
) -> None:
    # Given qm-api started with two processes
    master, url = api_process(env={"QM_API_PROCESSES": "2"})
    wait_for(lambda: len(children(master)) == 2, timeout=20, what="two API processes")
    pids = children(master)
    wait_for(lambda: listening(url) == 2, timeout=30, what="both processes listening")
    # When 16 clients connect, and each posts a message on its own connection
    connections = [connect(url) for _ in range(16)]
    owners = [serving_pid(c, pids) for c in connections]
    ids = []
    for connection in connections:
        status, _, body = request(connection, "POST", "/messages", LOG)
        assert status == 202
        ids.append(json.loads(body)["id"])
    # Then the kernel spread the connections over both processes
    assert set(owners) == set(pids), Counter(owners)
    on_first = connections[owners.index(pids[0])]
    on_second = connections[owners.index(pids[1])]

    # When a keyed message is posted to one process and retried on the other
    keyed = {"type": "log", "payload": {"message": "keyed"}}
    status, headers, first = request(on_first, "POST", "/messages", keyed, {"Idempotency-Key": "order-1"})
    assert status == 202 and "Idempotent-Replayed" not in headers
    status, headers, again = request(on_second, "POST", "/messages", keyed, {"Idempotency-Key": "order-1"})
    # Then the other process replays the first answer
    assert status == 202
    assert headers["Idempotent-Replayed"] == "true"
    assert json.loads(again) == json.loads(first)
    # And the same key with another message is refused there too
    other = {"type": "log", "payload": {"message": "not the same"}}
    status, _, _ = request(on_second, "POST", "/messages", other, {"Idempotency-Key": "order-1"})
    assert status == 422

    # When a key is posted to both processes at once
    answers: list[tuple[int, dict[str, str], bytes]] = []
    both = {"type": "log", "payload": {"message": "both at once"}}
    threads = [
        threading.Thread(
            target=lambda c=c: answers.append(request(c, "POST", "/messages", both, {"Idempotency-Key": "order-2"}))
        )
        for c in (on_first, on_second)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then both get one answer, one of them replayed
    assert [a[0] for a in answers] == [202, 202]
    assert len({json.loads(a[2])["id"] for a in answers}) == 1
    assert sorted(a[1].get("Idempotent-Replayed", "false") for a in answers) == ["false", "true"]

    # And /metrics, from either process, sums both: 20 POSTs accepted, 1 refused, 18 messages sent in all
    for connection in (on_first, on_second):
        found = metrics(connection)
        posts = {
            labels: value
            for (name, labels), value in found.items()
            if name == "qm_api_requests_total" and dict(labels)["method"] == "POST"
        }
        assert posts == {
            (("method", "POST"), ("route", "/messages"), ("status", "202")): 20,
            (("method", "POST"), ("route", "/messages"), ("status", "422")): 1,
        }
        assert found[("qm_api_send_batch_size_sum", ())] == 18
    # And SQS holds exactly one copy of each message
    bodies = [json.loads(base64.b64decode(m["Body"])) for m in drain(sqs, settings.queue_name("log"), timeout=20)]
    held = Counter(b["message_id"] for b in bodies)
    assert sorted(held) == sorted({*ids, json.loads(first)["id"], json.loads(answers[0][2])["id"]})
    assert set(held.values()) == {1}

    # When the master is asked to stop
    for connection in connections:
        connection.close()
    master.signal(signal.SIGTERM)
    # Then it and both processes exit cleanly
    assert master.wait(timeout=60) == 0, master.output()
    assert not any(alive(pid) for pid in pids)
    assert master.output().count("exited with") == 0, master.output()


def test_api_processes_stop_when_their_master_is_killed(api_process: Any) -> None:
    # Given qm-api with two processes
    master, url = api_process(env={"QM_API_PROCESSES": "2"})
    wait_for(lambda: len(children(master)) == 2, timeout=20, what="two API processes")
    pids = children(master)
    # When the master is killed outright
    os.kill(master.process.pid, signal.SIGKILL)
    master.wait(timeout=10)
    # Then both processes stop on their own, and nothing answers on the port
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=40, what="both API processes gone")
    assert not endpoint_answers(url + "/healthz")


def test_an_api_process_that_dies_takes_the_master_down_for_its_supervisor_to_restart(api_process: Any) -> None:
    # Given qm-api with two processes
    master, _ = api_process(env={"QM_API_PROCESSES": "2"})
    wait_for(lambda: len(children(master)) == 2, timeout=20, what="two API processes")
    first, second = children(master)
    # When one of them is killed
    os.kill(first, signal.SIGKILL)
    # Then the master stops the other and exits non-zero
    assert master.wait(timeout=60) == 1, master.output()
    wait_for(lambda: not alive(second), timeout=10, what="the other process gone")


def test_python_dash_m_api_app_serves(spawn: Any, settings: Settings) -> None:
    # Given the API started as a module rather than through its console script
    port = free_port()
    proc = spawn([sys.executable, "-m", "api.app"], env={**settings_env(settings), "QM_PORT": str(port)}, name="m")
    # Then it answers its health check
    wait_for(
        lambda: proc.process.poll() is not None or endpoint_answers(f"http://127.0.0.1:{port}/healthz"),
        timeout=30,
        what="the API",
    )
    assert proc.process.poll() is None, proc.output()
