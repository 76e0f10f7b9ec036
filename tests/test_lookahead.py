"""A busy queue keeps its worker's threads fed: whole receives, sent early enough; queues set up side by side."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest

from queue_manager.settings import Settings
from queue_manager.sqs import queues
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.consumer import QMConsumer
from tests.conftest import VENV_BIN, InProcessWorker, Proc, settings_env
from tests.support import queue_depth, send, send_messages, wait_for

#: How long the test actor takes: short, so a drain of a few hundred messages takes a second or two.
TASK_SECONDS = 0.02


def test_a_busy_queues_receives_ask_for_a_whole_receive_and_hold_at_most_one_beyond_the_threads(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 300 messages of a 20 ms task waiting on one queue, and every receive noted as it goes out
    qm = broker()
    done: list[int] = []

    def task(n: int) -> None:
        time.sleep(TASK_SECONDS)
        done.append(n)

    actor = dramatiq.actor(broker=qm, actor_name="busy_task", queue_name="busy")(task)
    send(qm, actor, *range(300))
    receives: list[tuple[bool, int, int, int]] = []  # (idle, asked, held beyond the prefetch, got)
    shipped_receive = QMConsumer._receive

    def noted(self: QMConsumer, most: int, *, wait_seconds: int) -> list[dict[str, Any]]:
        idle, beyond = self.idle, self.held - self.prefetch
        got = shipped_receive(self, most, wait_seconds=wait_seconds)
        receives.append((idle, most, beyond, len(got)))
        return got

    monkeypatch.setattr(QMConsumer, "_receive", noted)
    # When a worker of 10 threads drains it
    worker(qm, threads=10)
    wait_for(lambda: len(done) >= 300, timeout=30, what="the 300 tasks")
    # Then, once the queue is busy, its receives ask for a whole receive (ten), not for the one or
    # two messages free at the moment they could go (a receive then holds the receiver for a round
    # trip while the messages held ready run out) ...
    busy = [(asked, got) for idle, asked, _, got in receives if not idle and got]
    assert len(busy) >= 20, receives
    part = [asked for asked, _ in busy if asked < 10]
    assert len(part) <= len(busy) // 10, f"{len(part)} of {len(busy)} busy receives asked for fewer than ten: {part}"
    # ... and what a receive counts on freeing while it is in flight never takes the consumer beyond
    # its prefetch (here the threads plus one receive) by more than one receive
    assert max(beyond for _, _, beyond, _ in receives) <= 10


def test_a_busy_queue_keeps_a_second_whole_receive_in_flight_while_the_last_ones_messages_run(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 400 messages of a quick task on one queue, and SQS slow to answer a receive (50 ms: a
    # round trip under load), every busy receive noted while it is in flight
    qm = broker()
    done: list[int] = []
    actor = dramatiq.actor(broker=qm, actor_name="quick_task", queue_name="quick")(done.append)
    send(qm, actor, *range(400))
    lock = threading.Lock()
    in_flight = [0]
    most_in_flight = [0]
    asked: list[int] = []
    shipped_receive = QMConsumer._receive

    def slow(self: QMConsumer, most: int, *, wait_seconds: int) -> list[dict[str, Any]]:
        busy = not self.idle
        if busy:
            with lock:
                in_flight[0] += 1
                most_in_flight[0] = max(most_in_flight[0], in_flight[0])
                asked.append(most)
        try:
            time.sleep(0.05)
            return shipped_receive(self, most, wait_seconds=wait_seconds)
        finally:
            if busy:
                with lock:
                    in_flight[0] -= 1

    monkeypatch.setattr(QMConsumer, "_receive", slow)
    # When a worker of 10 threads drains it
    worker(qm, threads=10)
    wait_for(lambda: len(done) >= 400, timeout=30, what="the 400 tasks")
    # Then while the queue is busy a second receive is in flight beside the first (one receive's
    # round trip, not the threads, bounded the rate), never more than the threads plus one receive
    # call for (two) ...
    assert most_in_flight[0] == 2, most_in_flight
    # ... and the receives still ask for ten: the second goes out for a whole receive or not at all
    part = [n for n in asked if n < 10]
    assert len(part) <= len(asked) // 10, f"{len(part)} of {len(asked)} busy receives asked for fewer than ten"


def test_a_workers_queues_are_set_up_side_by_side(
    broker: Callable[..., QMBroker], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a broker of two queues, the set-up of the first held up (a slow SQS, say)
    qm = broker()
    for name in ("first", "second"):
        qm.declare_queue(name)
    began, release = threading.Event(), threading.Event()
    shipped_ensure = queues.ensure_queue

    def slow_first(client: Any, name: str, **options: Any) -> queues.QueueUrls:
        if name.endswith("_first"):
            began.set()
            release.wait(10)
        return shipped_ensure(client, name, **options)

    monkeypatch.setattr(queues, "ensure_queue", slow_first)
    first = threading.Thread(target=qm.ensure_queue, args=("first",), kwargs={"reconcile": True}, daemon=True)
    first.start()
    try:
        assert began.wait(5), "the first queue's set-up did not begin"
        # When the second queue is set up meanwhile
        got: list[queues.QueueUrls] = []
        second = threading.Thread(target=lambda: got.append(qm.ensure_queue("second", reconcile=True)), daemon=True)
        second.start()
        second.join(timeout=5)
        # Then it does not wait for the first: each queue's consumer starts receiving once its own queue is there
        assert got and got[0].url.endswith("_second"), "the second queue's set-up waited for the first's"
        assert "first" not in qm.urls
    finally:
        release.set()
        first.join(timeout=10)
    assert qm.urls["first"].url.endswith("_first")


def test_a_worker_process_drains_a_busy_queue_in_whole_receives(
    broker: Callable[..., QMBroker], spawn: Callable[..., Proc], settings: Settings
) -> None:
    # Given 200 messages of the bench's 50 ms actor waiting on its queue
    qm = broker()
    sleep_actor = dramatiq.actor(broker=qm, actor_name="bench_sleep", queue_name="sleep")(lambda: None)
    send_messages(qm, [sleep_actor.message() for _ in range(200)])
    # When a `dramatiq` process of 10 threads drains it, and stops
    command = [
        str(VENV_BIN / "dramatiq"),
        "bench.worker_ours",
        "--queues",
        "sleep",
        "--processes",
        "1",
        "--threads",
        "10",
    ]
    proc = spawn(command, env=settings_env(settings), name="worker")
    name = f"{settings.queue_prefix}_sleep"
    wait_for(lambda: not any(queue_depth(qm.client, name).values()), timeout=30, what="the drain")
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, proc.output()
    # Then it took about one receive per ten messages (when a busy receive went out for the one or two
    # messages free at a moment, about 50 receives brought the 200)
    line = next(x for x in proc.output().splitlines() if "SQS requests by action" in x)
    counts = json.loads(json.loads(line)["message"].split(": ", 1)[1].rstrip("."))
    assert counts["ReceiveMessage"] <= 200 // 10 + 8, counts
