"""Several API processes on one port: connections spread over them, metrics sum, ids stay one per key."""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from queue_manager.settings import Settings
from queue_manager.sqs.wait import endpoint_answers
from tests.conftest import Proc, free_port, settings_env, wait_for
from tests.test_ingest import queued_ids

pytestmark = pytest.mark.api

LOG = {"type": "log", "payload": {"message": "spread"}}


def children(proc: Proc) -> list[int]:
    path = Path(f"/proc/{proc.process.pid}/task/{proc.process.pid}/children")
    return [int(pid) for pid in path.read_text().split()]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url + "/messages",
        data=json.dumps(LOG).encode(),
        headers={"Content-Type": "application/json", "Connection": "close", **(headers or {})},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_two_api_processes_share_the_port_sum_their_metrics_and_stop_together(
    api_process: Any, settings: Settings, sqs: Any
) -> None:
    # Given qm-api started with two processes
    master, url = api_process(env={"QM_API_PROCESSES": "2"})
    wait_for(lambda: len(children(master)) == 2, timeout=20, what="two API processes")
    pids = children(master)
    wait_for(lambda: all(urllib.request.urlopen(url + "/healthz", timeout=5).status == 200 for _ in range(10)),
             timeout=20, what="both answering")  # fmt: skip
    before = {pid: cpu_ticks(pid) for pid in pids}
    # When 120 messages are posted, each on a connection of its own
    ids = [post(url)[1]["id"] for _ in range(120)]
    # Then both processes took part
    used = {pid: cpu_ticks(pid) - before[pid] for pid in pids}
    assert all(ticks > 0 for ticks in used.values()), used
    # And /metrics, from whichever process answers, counts all 120 accepted posts
    for _ in range(4):
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        accepted = sum(
            s.value
            for s in families["qm_api_requests"].samples
            if s.name.endswith("_total") and s.labels.get("status") == "202" and s.labels.get("method") == "POST"
        )
        assert accepted == 120, accepted
    sends = sum(s.value for s in families["qm_api_sqs_requests"].samples if s.name.endswith("_total")
                and s.labels["action"] in ("SendMessage", "SendMessageBatch"))  # fmt: skip
    assert 1 <= sends <= 120
    # And a key posted again and again gets one message id, whichever process takes it
    keyed = {post(url, {"Idempotency-Key": "spread-1"})[1]["id"] for _ in range(10)}
    assert len(keyed) == 1
    assert set(ids) <= set(queued_ids(sqs, settings.queue_name("log"), timeout=20))
    # When the master is asked to stop
    master.signal(signal.SIGTERM)
    # Then it and both processes exit cleanly
    assert master.wait(timeout=60) == 0, master.output()
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_an_api_process_that_dies_takes_the_master_down_for_its_supervisor_to_restart(api_process: Any) -> None:
    # Given qm-api with two processes
    master, _ = api_process(env={"QM_API_PROCESSES": "2"})
    wait_for(lambda: len(children(master)) == 2, timeout=20, what="two API processes")
    first, second = children(master)
    # When one of them is killed
    import os

    os.kill(first, signal.SIGKILL)
    # Then the master stops the other and exits non-zero
    assert master.wait(timeout=60) == 1, master.output()
    wait_for(lambda: not Path(f"/proc/{second}").exists(), timeout=10, what="the other process gone")


def test_python_dash_m_api_app_serves(spawn: Any, settings: Settings) -> None:
    # Given the API started as a module rather than through its console script
    import sys

    port = free_port()
    proc = spawn([sys.executable, "-m", "api.app"], env={**settings_env(settings), "QM_PORT": str(port)}, name="m")
    # Then it answers its health check
    wait_for(
        lambda: proc.process.poll() is not None or endpoint_answers(f"http://127.0.0.1:{port}/healthz"),
        timeout=30,
        what="the API",
    )
    assert proc.process.poll() is None, proc.output()
