"""A worker process that cannot work yet: an invalid setting stops it in one line; a queue SQS
cannot set up (no credentials, the server down) is said once and waited for quietly."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker import build_broker
from queue_manager.settings import Settings
from tests.conftest import VENV_BIN, Proc, SQSServer, settings_env
from tests.support import wait_for

#: The message types the shipped actors declare: one queue each.
QUEUES = ("log", "ordered", "webhook")


def records(proc: Proc) -> list[dict[str, Any]]:
    """The worker's JSON log records (the dramatiq master's own text lines left out)."""
    found = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def no_credentials(tmp_path: Path) -> dict[str, str]:
    """Variables that leave botocore without any credentials (and without asking EC2 for some)."""
    nowhere = str(tmp_path / "no-such-file")
    return {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_CONFIG_FILE": nowhere,
        "AWS_EC2_METADATA_DISABLED": "true",
        "QM_LOG_FORMAT": "json",
    }


def test_an_invalid_setting_stops_the_worker_with_one_line_and_status_2(
    spawn: Callable[..., Proc], settings: Settings
) -> None:
    # Given a worker of two processes whose QM_MAX_RETRIES is out of range
    command = [str(VENV_BIN / "dramatiq"), "actors", "--processes", "2", "--threads", "1"]
    proc = spawn(command, env={**settings_env(settings), "QM_MAX_RETRIES": "-1"}, name="worker")
    # When it starts
    status = proc.wait(timeout=30)
    # Then it says why in one line, as the API does, with no traceback, and exits with status 2
    output = proc.output()
    assert status == 2, output
    said = [line for line in output.splitlines() if "cannot start" in line]
    assert said == ["dramatiq: cannot start: QM_MAX_RETRIES must be between 0 and 999, got -1."], output
    assert "Traceback" not in output


def test_a_worker_without_credentials_warns_once_per_queue_then_waits_quietly(
    worker_process: Callable[..., Proc], tmp_path: Path
) -> None:
    # Given a worker process with no AWS credentials at all (logging at DEBUG, where its retries go)
    proc = worker_process(processes=1, threads=2, env={**no_credentials(tmp_path), "QM_LOG_LEVEL": "DEBUG"})
    # When it has tried to set up each queue twice more after its warning (Dramatiq alone would
    # log CRITICAL with a traceback at each try, every 3 s)
    wait_for(
        lambda: all(
            sum(r["level"] == "DEBUG" and "still cannot be set up" in r["message"] and r["message"].count(repr(q))
                for r in records(proc)) >= 2
            for q in QUEUES
        ),
        timeout=30,
        what="two quiet retries per queue",
    )  # fmt: skip
    # Then it said once per queue why it cannot consume it, in one line, and nothing louder or more
    warnings = [r for r in records(proc) if r["level"] == "WARNING"]
    assert sorted(r["queue"] for r in warnings) == sorted(QUEUES), warnings
    assert all("credentials" in r["message"] for r in warnings), warnings
    assert [r for r in records(proc) if r["level"] in ("ERROR", "CRITICAL")] == []
    assert "Traceback" not in proc.output()
    # And a stop is as prompt as ever
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, proc.output()


def test_a_worker_started_while_sqs_is_down_consumes_once_it_is_up(
    worker_process: Callable[..., Proc], sqs_server: SQSServer, settings: Settings
) -> None:
    # Given a worker started while SQS does not answer
    sqs_server.pause()
    try:
        proc = worker_process(processes=1, threads=2, env={"QM_LOG_FORMAT": "json"})
        wait_for(
            lambda: sum(r["level"] == "WARNING" for r in records(proc)) >= len(QUEUES),
            timeout=30,
            what="a warning per queue",
        )
    finally:
        sqs_server.resume()
    # When SQS answers again and a message is sent
    broker = build_broker(settings)
    broker.declare_queue("log")
    from dramatiq import Message

    broker.enqueue(
        Message(queue_name="log", actor_name="log", args=({"message": "after the outage"},), kwargs={}, options={})
    )
    # Then the worker processes it, having said nothing louder than its warnings
    wait_for(lambda: "after the outage" in proc.output(), timeout=60, what="the message to be processed")
    assert [r for r in records(proc) if r["level"] in ("ERROR", "CRITICAL")] == []
    assert "Traceback" not in proc.output()
    broker.close()
