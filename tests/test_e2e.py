"""End to end: the real `qm-api` and `dramatiq actors` processes, SQS between them, a local receiver."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from queue_manager.settings import Settings
from tests.conftest import Proc, Receiver
from tests.support import drain, post_json, queue_depth, wait_for

pytestmark = pytest.mark.e2e


def post_webhook(base_url: str, url: str, body: Any) -> str:
    status, answer = post_json(base_url + "/messages", {"type": "webhook", "payload": {"url": url, "body": body}})
    assert status == 202, answer
    return str(answer["id"])


def keys(requests: list[Any]) -> list[str]:
    return [r.headers["Idempotency-Key"] for r in requests]


def test_every_webhook_posted_to_the_api_is_delivered_once_with_its_id(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    record_property: Callable[[str, Any], None],
) -> None:
    # Given the API and two worker processes
    _, api = api_process()
    worker_process(processes=2, threads=4)
    # When 40 webhooks are posted
    started = time.monotonic()
    ids = [post_webhook(api, receiver.url("/hook"), {"n": i}) for i in range(40)]
    # Then each arrives at the receiver with its message id as Idempotency-Key and its body intact
    wait_for(lambda: len(receiver.to("/hook")) >= 40, timeout=60, what="40 deliveries")
    elapsed = time.monotonic() - started
    record_property("messages_per_second", round(40 / elapsed, 1))
    delivered = receiver.to("/hook")
    assert sorted(keys(delivered)) == sorted(ids)
    assert sorted(r.body["n"] for r in delivered) == list(range(40))
    assert all(r.headers["Content-Type"] == "application/json" for r in delivered)


def test_a_receiver_answering_500_gets_every_attempt_then_the_message_is_dead_lettered(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given a receiver that always answers 500, and max_retries=2
    receiver.statuses["/down"] = [500]
    _, api = api_process()
    worker_process(threads=2)
    # When a webhook is posted to it
    message_id = post_webhook(api, receiver.url("/down"), {"x": 1})
    # Then it is attempted 3 times (1 + max_retries), then sits in the dead-letter queue
    dead = wait_for(lambda: drain(sqs, settings.queue_name("webhook") + "_dlq", timeout=1), timeout=30, what="dead")
    assert keys(receiver.to("/down")) == [message_id] * (settings.max_retries + 1)
    assert dead[0]["MessageAttributes"]["qm-message-id"]["StringValue"] == message_id
    assert "answered 500" in dead[0]["MessageAttributes"]["qm-error"]["StringValue"]


def test_a_receiver_answering_404_gets_one_attempt_and_the_message_is_dead_lettered(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    receiver.statuses["/gone"] = [404]
    _, api = api_process()
    worker_process(threads=2)
    message_id = post_webhook(api, receiver.url("/gone"), {"x": 1})
    dead = wait_for(lambda: drain(sqs, settings.queue_name("webhook") + "_dlq", timeout=1), timeout=30, what="dead")
    assert keys(receiver.to("/gone")) == [message_id]
    assert "answered 404" in dead[0]["MessageAttributes"]["qm-error"]["StringValue"]
    assert queue_depth(sqs, settings.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_retry_after_is_honoured(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
) -> None:
    # Given a receiver that first answers 429 with Retry-After: 2, then 200
    receiver.statuses["/busy"] = [429, 200]
    receiver.retry_after["/busy"] = "2"
    _, api = api_process()
    worker_process(threads=2)
    post_webhook(api, receiver.url("/busy"), {})
    # Then the second attempt comes no sooner than two seconds after the first
    attempts = wait_for(lambda: (r := receiver.to("/busy")) and len(r) >= 2 and r, timeout=30, what="2 attempts")
    assert attempts[1].at - attempts[0].at >= 1.9


def test_a_worker_killed_mid_run_loses_nothing(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given 20 slow webhooks (0.5 s each) being worked on by one process of 4 threads
    receiver.delays["/slow"] = 0.5
    _, api = api_process()
    ids = [post_webhook(api, receiver.url("/slow"), {"n": i}) for i in range(20)]
    worker = worker_process(threads=4)
    wait_for(lambda: len(receiver.to("/slow")) >= 4, timeout=30, what="work under way")
    # When the worker is SIGKILLed mid-run, and a new one starts
    killed_at = time.monotonic()
    worker.kill_all()
    worker.wait(timeout=10)
    worker_process(threads=4)
    # Then every message arrives (some twice: at-least-once), within a visibility timeout or so
    wait_for(lambda: set(keys(receiver.to("/slow"))) >= set(ids), timeout=60, what="every id delivered")
    wait_for(
        lambda: queue_depth(sqs, settings.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0},
        timeout=30,
        what="the queue to empty",
    )
    # The messages cut off mid-call came back after their visibility timeout and were sent again
    delivered = keys(receiver.to("/slow"))
    assert len(delivered) > len(set(delivered)), "no redelivery: the kill did not stop the old worker"
    assert max(r.at for r in receiver.to("/slow")) - killed_at < settings.visibility_timeout_seconds + 20


def test_sigterm_releases_held_messages_at_once_and_exits_cleanly(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given a worker busy on slow webhooks (1.5 s each, inside the 2 s webhook timeout) with more waiting
    receiver.delays["/slower"] = 1.5
    _, api = api_process()
    ids = [post_webhook(api, receiver.url("/slower"), {"n": i}) for i in range(12)]
    worker = worker_process(threads=2)
    wait_for(lambda: len(receiver.to("/slower")) >= 2, timeout=30, what="work under way")
    # When it gets SIGTERM
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=40)
    stop_seconds = time.monotonic() - started
    # Then it exits 0 within 25 s, the running messages finished, and nothing is left hidden
    assert code == 0, worker.output()
    assert stop_seconds <= 25
    delivered = set(keys(receiver.to("/slower")))
    depth = queue_depth(sqs, settings.queue_name("webhook"))
    assert depth["in_flight"] == 0, depth
    assert depth["visible"] + len(delivered) == len(ids), (depth, len(delivered))
