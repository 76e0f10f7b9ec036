"""Stopping a real worker: quick, and never at the cost of an attempt (a hand-back is a receive SQS counts)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import signal
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from queue_manager.settings import Settings
from tests.conftest import Proc, Receiver
from tests.support import drain, queue_depth, wait_for

pytestmark = pytest.mark.e2e

#: How soon the `dramatiq` master exits once nothing of its worker runs any more. Dramatiq's CLI
#: itself polls three times a second apart on the way (a worker process notices the signal within
#: 1 s, its threads leave their work-queue wait within 1 s, the master joins its log watcher within
#: 1 s): measured 3.2-3.8 s for an idle worker, all but about 0.1 s of it in those polls.
QUICK_STOP_SECONDS = 4.5

#: Our part of it: from the worker's "Shutting down..." to "Worker has been shut down." (the worker
#: threads' 1 s wait included), whatever long polls are in flight.
OUR_STOP_SECONDS = 1.5


def post_webhooks(api: str, url: str, count: int) -> list[str]:
    documents = [{"type": "webhook", "payload": {"url": url, "body": {"n": i}}} for i in range(count)]
    ids: list[str] = []
    for start in range(0, count, 100):
        request = urllib.request.Request(
            api + "/messages/batch",
            data=json.dumps({"messages": documents[start : start + 100]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        ids += [r["id"] for r in answer["results"]]
    assert len(ids) == count
    return ids


def stop_and_time(worker: Proc) -> float:
    """SIGTERM the worker; the seconds until it exited."""
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.output()
    return time.monotonic() - started


def shutdown_seconds(output: str) -> list[float]:
    """Each worker process's time from "Shutting down..." to "Worker has been shut down." (its log)."""
    began: dict[int, datetime.datetime] = {}
    took: list[float] = []
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        at = datetime.datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f")
        if record["message"] == "Shutting down...":
            began[record["pid"]] = at
        elif record["message"] == "Worker has been shut down." and record["pid"] in began:
            took.append((at - began.pop(record["pid"])).total_seconds())
    return took


def test_an_idle_worker_stops_within_seconds_whatever_its_long_polls_do(
    worker_process: Callable[..., Proc], settings: Settings
) -> None:
    # Given a worker of two processes idling on every shipped queue with 20 s long polls in flight
    idle = dataclasses.replace(settings, receive_wait_seconds=20)
    worker = worker_process(processes=2, threads=4, test_settings=idle)
    time.sleep(1.0)  # the polls go out after "ready": let them be in flight
    # When it is told to stop
    took = stop_and_time(worker)
    # Then it exits without waiting out a poll (before: 11 s and more)
    assert took < QUICK_STOP_SECONDS, worker.output()
    ours = shutdown_seconds(worker.output())
    assert len(ours) == 2 and max(ours) < OUR_STOP_SECONDS, ours


def test_a_busy_worker_stops_soon_after_its_last_message_and_loses_nothing(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given 1.5 s webhooks being worked on by 4 threads, the other queues idle in 20 s long polls
    receiver.delays["/slow"] = 1.5
    _, api = api_process()
    ids = post_webhooks(api, receiver.url("/slow"), 12)
    busy = dataclasses.replace(settings, receive_wait_seconds=20)
    worker = worker_process(threads=4, test_settings=busy)
    wait_for(lambda: len(receiver.to("/slow")) >= 4, timeout=30, what="work under way")
    # When it is told to stop mid-run
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.output()
    exited = time.monotonic()
    # Then it exited within seconds of the last message it ran finishing (the receiver answers
    # 1.5 s after a request arrives)
    last_done = max(r.at for r in receiver.to("/slow")) + 1.5
    assert exited - last_done < QUICK_STOP_SECONDS, worker.output()
    # And a new worker delivers the rest: every message once at least, none dead-lettered
    worker_process(threads=4, test_settings=busy)
    wait_for(lambda: {r.headers["Idempotency-Key"] for r in receiver.to("/slow")} >= set(ids), timeout=60, what="all")
    assert drain(sqs, settings.queue_name("webhook") + "_dlq", timeout=1) == []


def test_a_graceful_stop_never_dead_letters_a_message_that_did_not_run(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given no retries at all (the redrive policy's receive count is the whole budget) and 40 slow
    # messages, a worker holding some ready beyond its threads
    receiver.delays["/slow"] = 0.4
    strict = dataclasses.replace(settings, max_retries=0)
    _, api = api_process()
    ids = post_webhooks(api, receiver.url("/slow"), 40)
    worker = worker_process(threads=4, test_settings=strict)
    wait_for(lambda: len(receiver.to("/slow")) >= 6, timeout=30, what="work under way")
    # When it is stopped while it holds messages it has not started, then started again
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.output()
    worker_process(threads=4, test_settings=strict)
    # Then every message runs, and none reaches the dead-letter queue
    wait_for(lambda: {r.headers["Idempotency-Key"] for r in receiver.to("/slow")} >= set(ids), timeout=60, what="all")
    wait_for(
        lambda: queue_depth(sqs, strict.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0},
        timeout=30,
        what="the queue empty",
    )
    assert drain(sqs, strict.queue_name("webhook") + "_dlq", timeout=1) == []


def test_a_message_that_kills_its_worker_every_time_still_ends_in_the_dead_letter_queue(
    settings: Settings, sqs: Any
) -> None:
    # Given the queue a worker with max_retries=1 sets up (maxReceiveCount 1 + 1 + the spare receives)
    from broker import build_broker

    strict = dataclasses.replace(settings, max_retries=1, spare_receives=2)
    broker = build_broker(strict)
    try:
        broker.declare_queue("crash")
        url = broker.ensure_queue("crash", reconcile=True).url
    finally:
        broker.close()
    sqs.send_message(QueueUrl=url, MessageBody="x")
    # When it is received and never settled, as by workers that die on it, four times
    for _ in range(1 + 1 + 2):
        got = wait_for(
            lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=1).get("Messages"),
            timeout=10,
            what="a receive",
        )
        assert len(got) == 1

    # Then no receive gets it again: SQS moves it to the dead-letter queue (a crash loop is bounded)
    def moved() -> list[dict[str, Any]]:
        again = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=1).get("Messages", [])
        assert again == [], "received a fifth time"
        return drain(sqs, strict.queue_name("crash") + "_dlq", timeout=0.5)

    dead = wait_for(moved, timeout=15, what="a dead letter")
    assert len(dead) == 1
