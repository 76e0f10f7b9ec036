"""The FIFO consumer in one process: a group runs one message at a time in order, other groups in
parallel, retries hold the rest of their group, dead letters keep their group, stops hand back."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.errors import Retry
from dramatiq.middleware import CurrentMessage

from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.errors import PermanentFailure
from tests.conftest import SQS_KIND, InProcessWorker
from tests.support import drain, queue_depth, send_messages, wait_for

pytestmark = pytest.mark.e2e


class Journal:
    """What an actor saw: per run, the group, the number, the attempt, when it started and ended."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def record(self, payload: dict[str, Any], started: float, *, ok: bool) -> None:
        current = CurrentMessage.get_current_message()
        attempt = int(getattr(current, "sqs_receive_count", 0))
        with self.lock:
            self.runs.append({**payload, "attempt": attempt, "start": started, "end": time.monotonic(), "ok": ok})

    def done(self, group: str) -> list[int]:
        with self.lock:
            return [r["n"] for r in self.runs if r["group"] == group and r["ok"]]

    def of(self, group: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.runs if r["group"] == group]


def fifo_actor(
    qm: QMBroker,
    journal: Journal,
    *,
    seconds: float = 0.0,
    fail: Callable[[dict[str, Any], int], Exception | None] = lambda p, a: None,
    **options: Any,
) -> dramatiq.Actor[Any, Any]:
    """The FIFO actor `seq`: records each run in `journal`, raising what `fail(payload, attempt)` gives."""

    def run(payload: dict[str, Any]) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        current = CurrentMessage.get_current_message()
        error = fail(payload, int(getattr(current, "sqs_receive_count", 1)))
        journal.record(payload, started, ok=error is None)
        if error is not None:
            raise error

    return dramatiq.actor(run, broker=qm, actor_name="seq", queue_name="seq", fifo=True, **options)


def send_groups(qm: QMBroker, actor: dramatiq.Actor[Any, Any], groups: dict[str, int]) -> dict[str, list[str]]:
    """Send `count` messages per group, interleaved, in batches of ten; returns the ids per group."""
    messages = []
    for n in range(max(groups.values())):
        for group, count in groups.items():
            if n < count:
                messages.append(actor.message_with_options(args=({"group": group, "n": n},), group_id=group))
    send_messages(qm, messages)
    ids: dict[str, list[str]] = {g: [] for g in groups}
    for m in messages:
        ids[m.options["group_id"]].append(m.message_id)
    return ids


def test_a_group_runs_one_message_at_a_time_in_order_while_groups_run_in_parallel(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given 3 groups of 15 messages on a FIFO queue, each taking 30 ms
    qm = broker()
    journal = Journal()
    actor = fifo_actor(qm, journal, seconds=0.03)
    send_groups(qm, actor, {"a": 15, "b": 15, "c": 15})
    # When one process with 9 threads works them (one receiver: moto server lets two concurrent
    # receives take messages of one group, see test_fifo_e2e)
    w = worker(qm, threads=9)
    wait_for(lambda: all(len(journal.done(g)) == 15 for g in "abc"), timeout=30, what="every message processed")
    w.stop()
    # Then each group ran in order, no two of its messages at once, each on its first attempt
    for group in "abc":
        runs = journal.of(group)
        assert [r["n"] for r in runs] == list(range(15))
        assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(runs)), group
        assert {r["attempt"] for r in runs} == {1}
    # And the groups did run side by side
    everything = sorted(journal.runs, key=lambda r: r["start"])
    assert any(b["start"] < a["end"] for a, b in itertools.pairwise(everything))
    assert queue_depth(sqs, qm.sqs_queue_name("seq")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_failed_message_is_retried_in_place_before_the_rest_of_its_group(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given a group whose fourth message fails its first attempt and asks for a 500 ms pause
    qm = broker(max_retries=2)
    journal = Journal()

    def once(payload: dict[str, Any], attempt: int) -> Exception | None:
        return Retry("not yet", delay=500) if payload == {"group": "a", "n": 3} and attempt == 1 else None

    actor = fifo_actor(qm, journal, fail=once)
    send_groups(qm, actor, {"a": 10, "b": 10})
    # When one process works them
    w = worker(qm, threads=4)
    wait_for(lambda: len(journal.done("a")) == 10 and len(journal.done("b")) == 10, timeout=30, what="all processed")
    w.stop()
    # Then the failed one ran again after its pause, as attempt 2, before anything after it in its group
    runs = journal.of("a")
    assert [(r["n"], r["ok"]) for r in runs] == [(0, True), (1, True), (2, True), (3, False)] + [
        (n, True) for n in range(3, 10)
    ]
    failed, retried = runs[3], runs[4]
    assert retried["start"] - failed["end"] >= 0.45
    assert retried["attempt"] == 2
    # And the messages held behind it were never handed back to SQS: they ran on their first receive
    assert {r["attempt"] for r in runs[5:]} == {1}
    # And the other group never waited for it
    assert [r["n"] for r in journal.of("b")] == list(range(10))
    assert queue_depth(sqs, qm.sqs_queue_name("seq")) == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert queue_depth(sqs, qm.dead_letter_queue_name("seq"))["visible"] == 0


def test_a_message_out_of_retries_goes_to_the_fifo_dead_letter_queue_with_its_group_and_the_group_goes_on(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given a group whose third message always fails, with one retry allowed
    qm = broker(max_retries=1)
    journal = Journal()
    actor = fifo_actor(qm, journal, fail=lambda p, a: RuntimeError("boom") if p["n"] == 2 else None, max_retries=1)
    ids = send_groups(qm, actor, {"a": 6})
    # When a worker runs them
    w = worker(qm, threads=4)
    wait_for(lambda: len(journal.done("a")) == 5, timeout=30, what="the rest of the group")
    w.stop()
    # Then it was tried twice, dead-lettered, and the group went on in order after it
    assert [(r["n"], r["ok"]) for r in journal.of("a")] == [
        (0, True), (1, True), (2, False), (2, False), (3, True), (4, True), (5, True),
    ]  # fmt: skip
    # And the FIFO dead-letter queue holds it with its group and its deduplication id (the message id)
    [dead] = drain(sqs, qm.dead_letter_queue_name("seq"))
    assert dead["Attributes"]["MessageGroupId"] == "a"
    assert dead["Attributes"]["MessageDeduplicationId"] == ids["a"][2]
    assert dead["MessageAttributes"]["qm-message-id"]["StringValue"] == ids["a"][2]
    assert (
        dead["MessageAttributes"]["qm-error"]["StringValue"]
        == "retries exhausted after 2 attempt(s): RuntimeError: boom"
    )


def test_a_permanent_failure_is_dead_lettered_at_once_and_the_group_goes_on(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    qm = broker(max_retries=5)
    journal = Journal()
    actor = fifo_actor(
        qm, journal, fail=lambda p, a: PermanentFailure("no") if p["n"] == 1 else None, throws=(PermanentFailure,)
    )
    send_groups(qm, actor, {"a": 4})
    w = worker(qm, threads=2)
    wait_for(lambda: len(journal.done("a")) == 3, timeout=30, what="the rest of the group")
    w.stop()
    assert [(r["n"], r["ok"]) for r in journal.of("a")] == [(0, True), (1, False), (2, True), (3, True)]
    [dead] = drain(sqs, qm.dead_letter_queue_name("seq"))
    assert dead["Attributes"]["MessageGroupId"] == "a"


def test_a_stopping_worker_hands_back_what_it_holds_and_the_next_one_carries_on_in_order(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given a worker holding a group of 10 slow messages (0.3 s each), 2 of them done
    qm = broker()
    journal = Journal()
    actor = fifo_actor(qm, journal, seconds=0.3)
    send_groups(qm, actor, {"a": 10})
    w = worker(qm, threads=4)
    wait_for(lambda: len(journal.done("a")) >= 2, timeout=30, what="two processed")
    # When it stops
    w.stop()
    stopped_after = len(journal.done("a"))
    assert stopped_after < 10
    # Then nothing stays hidden: what it held is visible again at once
    assert queue_depth(sqs, qm.sqs_queue_name("seq"))["in_flight"] == 0
    # And another worker runs the rest in order, none twice
    other = broker()  # the same queues: they share the test's prefix
    second = Journal()
    fifo_actor(other, second, seconds=0.01)
    other_worker = worker(other, threads=4)
    wait_for(lambda: len(journal.done("a")) + len(second.done("a")) >= 10, timeout=30, what="the rest processed")
    other_worker.stop()
    assert journal.done("a") + second.done("a") == list(range(10))


def test_a_dead_letter_redriven_to_a_fifo_queue_keeps_its_group(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given a message of group a dead-lettered within seconds of being sent
    qm = broker(max_retries=0)
    journal = Journal()
    actor = fifo_actor(qm, journal, fail=lambda p, a: None if journal.runs else PermanentFailure("no"))
    send_groups(qm, actor, {"a": 1})
    w = worker(qm, threads=2)
    wait_for(lambda: journal.runs, timeout=20, what="the first attempt")
    urls = qm.ensure_queue("seq")
    wait_for(lambda: queue_depth(sqs, qm.dead_letter_queue_name("seq"))["visible"], timeout=10, what="dlq")
    # When it is redriven at once (well inside the 5-minute deduplication window of its first send)
    result = qm.dead_letters.redrive(urls.dead_letter_url, urls.url)
    # Then it is back on the FIFO queue, not dropped as a duplicate, and runs again
    assert result.moved == 1, result
    wait_for(lambda: journal.done("a") == [0], timeout=20, what="the redriven message processed")
    w.stop()
    assert [r["attempt"] for r in journal.of("a")] == [1, 1]


def test_a_quick_retry_that_succeeds_sends_no_visibility_change_for_its_backoff(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given acks batched for a second, and a message that fails once with a 20 ms backoff
    qm = broker(ack_flush_interval_ms=1000)
    journal = Journal()
    actor = fifo_actor(qm, journal, fail=lambda p, a: Retry("again", delay=20) if a == 1 else None)
    send_groups(qm, actor, {"a": 1})
    # When it is retried and succeeds before its backoff's visibility change was sent
    w = worker(qm, threads=2)
    wait_for(lambda: journal.done("a") == [0], timeout=20, what="the retry")
    w.stop()
    # Then its delete replaced that change: no ChangeMessageVisibility for a message already gone
    assert [r["attempt"] for r in journal.of("a")] == [1, 2]
    assert qm.request_counts().get("ChangeMessageVisibilityBatch", 0) == 0, qm.request_counts()
    assert queue_depth(sqs, qm.sqs_queue_name("seq")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_fifo_receive_whose_answer_is_lost_is_retried_with_the_same_attempt_id(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given 2 groups of 5 messages, and the answer to each first try of a receive lost (a 500; the
    # hooks that lose it see only calls made through botocore)
    qm = broker(sqs_direct_calls=False)
    journal = Journal()
    actor = fifo_actor(qm, journal)
    send_groups(qm, actor, {"a": 5, "b": 5})
    tries: list[str] = []
    lost = threading.Lock()

    def record_attempt(params: dict[str, Any], **_: Any) -> None:
        tries.append(str(params.get("ReceiveRequestAttemptId")))

    def answer(request: Any, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        body = json.loads(request.body or b"{}")
        attempt = body.get("ReceiveRequestAttemptId")
        sends.append(attempt)
        with lost:
            first = attempt not in answered
            answered.add(attempt)
        if first:
            return AWSResponse(request.url, 500, {}, _Raw(b'{"__type": "InternalFailure"}'))
        return None

    answered: set[str | None] = set()
    sends: list[str | None] = []
    events = qm.receive_client.meta.events
    events.register("before-parameter-build.sqs.ReceiveMessage", record_attempt)
    events.register("before-send.sqs.ReceiveMessage", answer)
    # When one process works them
    w = worker(qm, threads=4)
    wait_for(lambda: all(len(journal.done(g)) == 5 for g in "ab"), timeout=30, what="every message processed")
    w.stop()
    # Then every receive carried an attempt id of its own, each was answered on its retry (the
    # server saw the same id twice), and each message ran once, in order, on its first attempt
    assert "None" not in tries and len(set(tries)) == len(tries), tries
    assert None not in answered
    assert sorted(sends) == sorted(tries * 2), (sends, tries)
    for group in "ab":
        assert [r["n"] for r in journal.of(group)] == list(range(5))
        assert {r["attempt"] for r in journal.of(group)} == {1}


class _Raw:
    """A response body botocore can read, for a response made up in a before-send hook."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Any:
        yield self.data

    def read(self, *_: Any) -> bytes:
        data, self.data = self.data, b""
        return data


@pytest.mark.skipif(SQS_KIND == "moto", reason="moto server hands out one message of a group per receive: none waits")
def test_what_waits_behind_its_group_counts_as_blocked_not_held_for_a_thread(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given one group of 8 messages of 200 ms each, and a process of 4 threads
    qm = broker()
    journal = Journal()
    actor = fifo_actor(qm, journal, seconds=0.2)
    send_groups(qm, actor, {"a": 8})
    queue = qm.sqs_queue_name("seq")
    seen: list[tuple[int, int, int]] = []
    # When it works them
    w = worker(qm, threads=4)

    def sample() -> bool:
        load = qm.workload.snapshot().get("seq")
        if load is not None:
            seen.append((load.held, load.running, load.blocked))
        return len(journal.done("a")) == 8

    wait_for(sample, timeout=30, interval=0.02, what="all processed")
    w.stop()
    # Then what a receive brought beyond the running one waited as blocked, never as held for a thread
    assert max(blocked for _, _, blocked in seen) >= 1, seen
    assert all(running <= 1 for _, running, _ in seen), seen
    assert all(held <= 1 for held, _, _ in seen), seen  # at most the one just let out, before a thread takes it
    assert qm.workload.snapshot()["seq"].blocked == 0
    assert queue_depth(sqs, queue) == {"visible": 0, "in_flight": 0, "delayed": 0}
