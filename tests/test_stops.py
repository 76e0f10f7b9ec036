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
from schemas import SchemaRegistry
from tests.conftest import Proc, Receiver
from tests.support import drain, post_json, queue_depth, wait_for

pytestmark = pytest.mark.e2e

#: How soon the `dramatiq` master exits once nothing of its worker runs any more: the issue's figure.
#: Dramatiq 2.2's CLI polls once a second at three places on the way out; the broker cuts two of
#: them from inside the worker process (queue_manager/sqs/quickstop.py: the worker threads'
#: work-queue wait, the worker process's sleep loop). The third, the master's log watcher, waits its
#: 1 s after the last worker's log pipe closes. Measured on a loaded 2-core machine (load 7-12):
#: idle 1.28-1.63 s over 14 runs (was 2.3-3.8 s), busy 1.2-1.3 s after the last message over 5.
QUICK_STOP_SECONDS = 3.0

#: Our part of it: from the worker's "Shutting down..." to "Worker has been shut down.", whatever
#: long polls are in flight (measured 0.05-0.08 s; 0.9-1 s while the threads' 1 s wait was in it).
OUR_STOP_SECONDS = 0.5

#: From Dramatiq's "Stopping worker process..." to its "Shutting down...": the broker's drain of an
#: idle worker (two looks 0.05 s apart), not the CLI's sleep loop (0-1 s) before it.
STOP_BEGINS_SECONDS = 0.5


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


def set_up_queues(settings: Settings) -> None:
    """Create every shipped type's queues beforehand, as a worker does at its first start.

    A worker sets its queues up on its consumer threads after "ready"; a first creation takes
    seconds on a loaded machine, and a stop waits for a set-up under way. The timed stops here are
    of a worker consuming, not of one still setting up.
    """
    from broker import build_broker

    registry = SchemaRegistry.load(settings.schemas_dir)
    broker = build_broker(settings, fifo_types=registry.fifo_types)
    try:
        for name in registry.types:
            broker.declare_queue(name)
            broker.ensure_queue(name, reconcile=True)
    finally:
        broker.close()


def stop_and_time(worker: Proc) -> float:
    """SIGTERM the worker; the seconds until it exited."""
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.output()
    return time.monotonic() - started


def log_times(output: str, message: str) -> dict[int, datetime.datetime]:
    """When each worker process (by pid) logged `message` (the last time)."""
    times: dict[int, datetime.datetime] = {}
    for line in output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record["message"] == message:
                times[record["pid"]] = datetime.datetime.strptime(record["time"], "%Y-%m-%d %H:%M:%S,%f")
    return times


def seconds_between(output: str, first: str, then: str) -> list[float]:
    """Each worker process's time from its log line `first` to its line `then`."""
    began, ended = log_times(output, first), log_times(output, then)
    return [(ended[pid] - at).total_seconds() for pid, at in began.items() if pid in ended]


def shutdown_seconds(output: str) -> list[float]:
    """Each worker process's time from "Shutting down..." to "Worker has been shut down." (its log)."""
    return seconds_between(output, "Shutting down...", "Worker has been shut down.")


def test_an_idle_worker_stops_within_seconds_whatever_its_long_polls_do(
    worker_process: Callable[..., Proc], settings: Settings
) -> None:
    # Given a worker of two processes of 10 threads (the command line) idling on every
    # shipped queue with 20 s long polls in flight
    idle = dataclasses.replace(settings, receive_wait_seconds=20)
    set_up_queues(idle)
    worker = worker_process(processes=2, threads=10, test_settings=idle)
    time.sleep(1.0)  # the polls go out after "ready": let them be in flight
    # When it is told to stop
    took = stop_and_time(worker)
    # Then it exits without waiting out a poll (before: 11 s and more), nor Dramatiq's own polls
    assert took < QUICK_STOP_SECONDS, worker.output()
    ours = shutdown_seconds(worker.output())
    assert len(ours) == 2 and max(ours) < OUR_STOP_SECONDS, ours
    # And each process began its stop at the signal, not after the CLI's sleep loop's next turn
    began = seconds_between(worker.output(), "Stopping worker process...", "Shutting down...")
    assert len(began) == 2 and max(began) < STOP_BEGINS_SECONDS, began
    # And it stopped once: Dramatiq's stop lines appear once per process
    assert worker.output().count("Worker has been shut down.") == 2, worker.output()


def test_a_busy_worker_stops_soon_after_its_last_message_and_loses_nothing(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given 1.5 s webhooks being worked on by two processes of 10 threads, more waiting on the
    # queue, the other queues idle in 20 s long polls
    receiver.delays["/slow"] = 1.5
    _, api = api_process()
    ids = post_webhooks(api, receiver.url("/slow"), 40)
    busy = dataclasses.replace(settings, receive_wait_seconds=20)
    worker = worker_process(processes=2, threads=10, test_settings=busy)
    wait_for(lambda: len(receiver.to("/slow")) >= 20, timeout=30, what="work under way")
    # When it is told to stop mid-run
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, worker.output()
    exited = time.monotonic()
    # Then it exited within seconds of the last message it ran finishing (the receiver answers
    # 1.5 s after a request arrives)
    last_done = max(r.at for r in receiver.to("/slow")) + 1.5
    assert exited - last_done < QUICK_STOP_SECONDS, worker.output()
    # And a new worker delivers the rest: every message once at least, none dead-lettered
    worker_process(processes=2, threads=10, test_settings=busy)
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
    assert_every_one_ran_and_none_dead_lettered(receiver, "/slow", ids, sqs, strict)


def test_messages_sent_while_a_worker_stops_are_all_run_and_cost_no_attempt(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given no retries at all (a hand-back charged as an attempt would dead-letter a message) and an
    # idle worker of two processes whose 20 s long polls are in flight
    strict = dataclasses.replace(settings, max_retries=0, receive_wait_seconds=20)
    _, api = api_process()
    set_up_queues(strict)
    worker = worker_process(processes=2, threads=10, test_settings=strict)
    time.sleep(1.0)  # the polls go out after "ready": let them be in flight
    # When messages keep arriving from its SIGTERM until it has exited
    worker.signal(signal.SIGTERM)
    ids: list[str] = []
    while not ids or worker.process.poll() is None:
        status, answer = post_json(
            api + "/messages", {"type": "webhook", "payload": {"url": receiver.url("/late"), "body": {"n": len(ids)}}}
        )
        assert status == 202, answer
        ids.append(answer["id"])
    assert worker.wait(timeout=60) == 0, worker.output()
    # Then a new worker runs every one of them (those a stopping long poll took come back after
    # their visibility timeout), and none reaches the dead-letter queue
    worker_process(threads=4, test_settings=strict)
    assert_every_one_ran_and_none_dead_lettered(receiver, "/late", ids, sqs, strict)


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


def assert_every_one_ran_and_none_dead_lettered(
    receiver: Receiver, path: str, ids: list[str], sqs: Any, settings: Settings
) -> None:
    """Every webhook in `ids` reached `path`, the webhook queue emptied, and its dead-letter queue is empty."""
    wait_for(lambda: {r.headers["Idempotency-Key"] for r in receiver.to(path)} >= set(ids), timeout=60, what="all")
    wait_for(
        lambda: queue_depth(sqs, settings.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0},
        timeout=30,
        what="the queue empty",
    )
    assert drain(sqs, settings.queue_name("webhook") + "_dlq", timeout=1) == []
