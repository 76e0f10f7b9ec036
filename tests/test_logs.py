"""One message can be followed through both halves' JSON logs, by its id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Proc, Receiver
from tests.support import post_json, wait_for

pytestmark = pytest.mark.e2e


def json_lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_a_message_is_followed_from_the_post_to_its_result_in_json_logs(
    api_process: Callable[..., tuple[Proc, str]], worker_process: Callable[..., Proc], receiver: Receiver
) -> None:
    # Given both halves logging JSON at DEBUG, and a receiver that fails the first attempt
    api, url = api_process(env={"QM_LOG_FORMAT": "json", "QM_LOG_LEVEL": "debug"})
    worker = worker_process(threads=2, env={"QM_LOG_FORMAT": "json", "QM_LOG_LEVEL": "debug"})
    receiver.statuses["/once"] = [500, 200]
    # When a webhook is posted
    document = {"type": "webhook", "payload": {"url": receiver.url("/once"), "body": {}}}
    status, answer = post_json(url + "/messages", document, timeout=10)
    assert status == 202, answer
    message_id = answer["id"]
    wait_for(
        lambda: any(
            r.get("message_id") == message_id and r["message"].startswith("Processed")
            for r in json_lines(worker.output())
        ),
        timeout=30,
        what="the processed record",
    )
    # Then the API logged its acceptance with the id, type and queue
    accepted = [r for r in json_lines(api.output()) if r.get("message_id") == message_id]
    assert accepted[0]["type"] == "webhook"
    assert accepted[0]["queue"].endswith("_webhook")
    assert accepted[0]["level"] == "DEBUG"
    # And the worker logged each attempt and the result, each record tagged with attempt and queue
    records = [r for r in json_lines(worker.output()) if r.get("message_id") == message_id]
    # (the queue named as the API names it: the SQS queue's name)
    assert {(r["attempt"], r["type"], r["queue"]) for r in records} == {
        (1, "webhook", accepted[0]["queue"]),
        (2, "webhook", accepted[0]["queue"]),
    }
    assert any(r["attempt"] == 1 and r["message"].startswith("Retrying message") for r in records)
    assert any(r["attempt"] == 2 and r["message"].startswith("Processed message") for r in records)
    # And once a worker process has booted, every line it writes is one JSON object (the master's own
    # few lines, and what is logged while the broker is imported, keep Dramatiq's text format)
    output = worker.output()
    output = output[output.index("{") :]
    worker_lines = [line for line in output.splitlines() if "WorkerProcess" not in line and "MainProcess" not in line]
    assert all(line.startswith("{") for line in worker_lines if line.strip()), worker_lines[:5]


def test_at_info_a_message_that_succeeds_writes_no_line_per_message_and_no_access_log(
    api_process: Callable[..., tuple[Proc, str]], worker_process: Callable[..., Proc], receiver: Receiver
) -> None:
    # Given both halves at the default level, and a receiver that fails the first attempt of one message
    api, url = api_process(env={"QM_LOG_FORMAT": "json"})
    worker = worker_process(threads=2, env={"QM_LOG_FORMAT": "json"})
    receiver.statuses["/flaky"] = [500, 200]
    # When two webhooks are posted, the first of which fails once
    ids = []
    for path in ("/flaky", "/fine"):
        document = {"type": "webhook", "payload": {"url": receiver.url(path), "body": {}}}
        status, answer = post_json(url + "/messages", document, timeout=10)
        assert status == 202, answer
        ids.append(answer["id"])
    wait_for(lambda: len(receiver.to("/flaky")) == 2 and receiver.to("/fine"), timeout=30, what="both delivered")
    # Then the API wrote no line for either request, and the worker none for the message that just worked
    assert not [r for r in json_lines(api.output()) if r.get("message_id") in ids or "POST /messages" in r["message"]]
    records = [r for r in json_lines(worker.output()) if r.get("message_id") in ids]
    assert {r["message_id"] for r in records} == {ids[0]}
    # While the failed attempt is still told, as a retry
    assert any(r["message"].startswith("Retrying message") for r in records)
