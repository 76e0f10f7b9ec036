"""The worker metrics fork: its lines are JSON under JSON logging, and a taken port costs only the metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import dramatiq

from queue_manager.sqs.broker import QMBroker
from tests.conftest import Proc
from tests.support import free_port, wait_for


def json_lines(output: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The output's JSON records, and its other non-empty lines."""
    records, others = [], []
    for line in output.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            others.append(line)
    return records, others


def metrics_answer(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_a_taken_metrics_port_is_logged_as_json_and_the_worker_carries_on(
    worker_process: Callable[..., Proc], broker: Callable[..., QMBroker]
) -> None:
    # Given another program listening on the metrics port
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        # When a worker starts with JSON logs and its metrics on that port
        proc = worker_process(env={"QM_WORKER_METRICS_PORT": str(port), "QM_LOG_FORMAT": "json"})

        def fork_error() -> dict[str, Any] | None:
            records, _ = json_lines(proc.output())
            return next((r for r in records if r.get("level") == "ERROR" and str(port) in r["message"]), None)

        error = wait_for(fork_error, timeout=20, what="the metrics fork's error")
        # Then the fork said why in one JSON record, and its ready line was JSON too
        assert "in use" in error["message"], error
        records, others = json_lines(proc.output())
        assert any("Fork process" in r["message"] and "is ready" in r["message"] for r in records), records
        # And no line of the fork's is text: no traceback
        assert not [line for line in others if "Traceback" in line or "ForkProcess" in line or "metrics" in line]
        # And the worker carries on: a message sent now is processed
        sender = broker()
        sender.declare_queue("log")
        sender.enqueue(
            dramatiq.Message(
                queue_name="log", actor_name="log", args=({"message": "still working"},), kwargs={}, options={}
            )
        )
        sender.join("log", timeout=20_000)
        assert any(r["message"] == "still working" for r in json_lines(proc.output())[0])
        assert proc.process.poll() is None
    finally:
        holder.close()
    # When the port is free again, Then the fork serves the metrics after all
    wait_for(lambda: metrics_answer(port), timeout=30, what="the metrics endpoint")


def test_a_failure_of_the_metrics_fork_is_one_json_record_and_exit_code_1(tmp_path: Any) -> None:
    # Given the fork's module imported as dramatiq's fork process does (after dramatiq's text logging
    # is set up), under JSON logging, and a server that fails in an unexpected way
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')\n"
        "from queue_manager.sqs.middleware import metrics_fork\n"
        "def broken(host, port):\n"
        "    raise RuntimeError('disk full')\n"
        "metrics_fork._serve = broken\n"
        "sys.exit(metrics_fork.serve())\n"
    )
    env = {**os.environ, "QM_LOG_FORMAT": "json", "QM_WORKER_METRICS_PORT": str(free_port())}
    # When the fork runs
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    # Then it exits 1 having logged one JSON record with the traceback inside it
    assert done.returncode == 1, done.stderr
    records, others = json_lines(done.stderr)
    assert others == [], done.stderr
    assert len(records) == 1, records
    assert records[0]["level"] == "ERROR"
    assert "RuntimeError: disk full" in records[0]["exc_info"]
