"""The SQS-native consumer: batched acks, retries in place, heartbeat, sized receives, clean stops."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
from dramatiq.errors import Retry
from dramatiq.middleware import CurrentMessage

from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.errors import PermanentFailure
from tests.conftest import InProcessWorker
from tests.support import drain, queue_depth, send, wait_for


def test_ten_successes_cost_one_delete_message_batch(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given ten messages waiting and an ack interval long enough for all of them to join one batch
    qm = broker(ack_flush_interval_ms=1000)
    done: list[str] = []
    actor = dramatiq.actor(lambda p: done.append(p), broker=qm, actor_name="ok", queue_name="ok")
    send(qm, actor, *[f"m{i}" for i in range(10)])
    # When a worker with ten threads processes them and stops
    w = worker(qm, threads=10)
    wait_for(lambda: len(done) == 10, timeout=10, what="ten messages processed")
    w.stop()
    # Then they were deleted with exactly one DeleteMessageBatch and no single deletes
    counts = qm.request_counts()
    assert counts.get("DeleteMessageBatch") == 1, counts
    assert "DeleteMessage" not in counts
    assert sorted(done) == sorted(f"m{i}" for i in range(10))
    assert queue_depth(sqs, qm.sqs_queue_name("ok")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_pending_acks_are_flushed_when_the_worker_stops(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given acks that would wait up to a second to fill a batch
    qm = broker(ack_flush_interval_ms=1000)
    done: list[str] = []
    actor = dramatiq.actor(lambda p: done.append(p), broker=qm, actor_name="ok", queue_name="ok")
    send(qm, actor, "a", "b", "c")
    w = worker(qm, threads=4)
    wait_for(lambda: len(done) == 3, timeout=10, what="three messages processed")
    # When the worker stops at once
    w.stop()
    # Then nothing is left pending and the queue is empty: no duplicate waits for the next worker
    assert qm.acks.pending_deletes() == 0
    assert queue_depth(sqs, qm.sqs_queue_name("ok")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_failing_message_is_received_max_retries_plus_one_times_then_dead_lettered(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given an actor that always fails, with max_retries=2
    qm = broker(max_retries=2, min_backoff_ms=100, max_backoff_ms=200)
    attempts: list[int] = []

    def always_fails(payload: Any) -> None:
        attempts.append(1)
        raise RuntimeError("boom")

    actor = dramatiq.actor(always_fails, broker=qm, actor_name="fails", queue_name="fails", max_retries=2)
    (message_id,) = send(qm, actor, {"n": 1})
    sends_before = qm.request_counts().get("SendMessage", 0)
    # When a worker runs it until it lands in the dead-letter queue
    w = worker(qm, threads=2)
    dead = wait_for(
        lambda: drain(sqs, qm.sqs_queue_name("fails") + "_dlq", timeout=1), timeout=20, what="a dead letter"
    )
    w.stop()
    # Then it was attempted exactly three times, and the dead letter says why and how often
    assert len(attempts) == 3
    assert len(dead) == 1
    attrs = dead[0]["MessageAttributes"]
    assert attrs["qm-receive-count"]["StringValue"] == "3"
    assert attrs["qm-error"]["StringValue"] == "retries exhausted after 3 attempt(s): RuntimeError: boom"
    assert attrs["qm-message-id"]["StringValue"] == message_id
    assert queue_depth(sqs, qm.sqs_queue_name("fails")) == {"visible": 0, "in_flight": 0, "delayed": 0}
    # And the retries never re-sent the message: one SQS message, three receives
    assert qm.request_counts().get("SendMessage", 0) - sends_before == 1  # the dead-letter copy only


def test_permanent_failure_is_dead_lettered_at_once(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given an actor that says retrying cannot help
    qm = broker(max_retries=5)
    attempts: list[int] = []

    def refuses(payload: Any) -> None:
        attempts.append(1)
        raise PermanentFailure("the receiver said 404")

    actor = dramatiq.actor(refuses, broker=qm, actor_name="perm", queue_name="perm", throws=(PermanentFailure,))
    send(qm, actor, {})
    # When it runs
    w = worker(qm, threads=2)
    dead = wait_for(lambda: drain(sqs, qm.sqs_queue_name("perm") + "_dlq", timeout=1), timeout=15, what="a dead letter")
    w.stop()
    # Then it ran once and went straight to the dead-letter queue
    assert len(attempts) == 1
    [dead_letter] = dead
    assert dead_letter["MessageAttributes"]["qm-error"]["StringValue"] == (
        "permanent failure: PermanentFailure: the receiver said 404"
    )


def test_retry_with_a_20_minute_backoff_is_not_lost(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given an actor that asks to be retried in 20 minutes (past SQS's 15-minute delay limit)
    qm = broker(visibility_timeout_seconds=5)
    attempts: list[int] = []

    def later(payload: Any) -> None:
        attempts.append(1)
        raise Retry("not yet", delay=20 * 60 * 1000)

    actor = dramatiq.actor(later, broker=qm, actor_name="later", queue_name="later")
    send(qm, actor, {})
    # When it runs once and more than a visibility timeout passes
    w = worker(qm, threads=2)
    wait_for(lambda: attempts, timeout=10, what="the first attempt")
    wait_for(lambda: qm.request_counts().get("ChangeMessageVisibilityBatch"), timeout=5, what="the retry")
    time.sleep(6)  # one visibility timeout (5 s) and a margin: the message must stay hidden
    w.stop()
    # Then the same message is still on the queue, hidden for its backoff: not deleted, not dead-lettered
    assert len(attempts) == 1
    assert queue_depth(sqs, qm.sqs_queue_name("later")) == {"visible": 0, "in_flight": 1, "delayed": 0}
    assert queue_depth(sqs, qm.sqs_queue_name("later") + "_dlq")["visible"] == 0
    # And the worker made one visibility change for it, renewed nothing, deleted and sent nothing
    # (the one SendMessage is the test's own)
    counts = qm.request_counts()
    writes = ("SendMessage", "SendMessageBatch", "DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
    assert {action: counts.get(action, 0) for action in writes} == {
        "SendMessage": 1, "SendMessageBatch": 0, "DeleteMessage": 0, "DeleteMessageBatch": 0,
        "ChangeMessageVisibilityBatch": 1,
    }, counts  # fmt: skip


def test_message_running_past_the_visibility_timeout_is_not_delivered_twice(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given a visibility timeout of 5 s and a task that takes 9 s
    qm = broker(visibility_timeout_seconds=5)
    runs: list[str] = []

    def slow(payload: Any) -> None:
        runs.append(payload)
        time.sleep(9)

    actor = dramatiq.actor(slow, broker=qm, actor_name="slow", queue_name="slow")
    send(qm, actor, "only")
    # When two workers share the queue and the task outlives its first lease
    worker(qm, threads=2)
    other = broker(visibility_timeout_seconds=5)  # the same queues: they share the test's prefix
    dramatiq.actor(slow, broker=other, actor_name="slow", queue_name="slow")
    worker(other, threads=2)
    wait_for(
        lambda: queue_depth(sqs, qm.sqs_queue_name("slow"))["in_flight"] == 0 and runs, timeout=20, what="the task done"
    )
    # Then the heartbeat kept it hidden: it ran once
    assert runs == ["only"]
    assert qm.request_counts().get("ChangeMessageVisibilityBatch", 0) >= 1


@pytest.mark.parametrize(("busy_lookahead", "most_held"), [(1, 3 + 1 + 1), (10, 3 + 10 + 1)])
def test_receives_never_hold_more_messages_than_free_threads_and_the_lookahead(
    broker: Callable[..., QMBroker],
    worker: Callable[..., InProcessWorker],
    sqs: Any,
    settings: Settings,
    busy_lookahead: int,
    most_held: int,
) -> None:
    # Given 30 messages of 200 ms each and a worker with 3 threads, a lookahead of 1 (and of
    # `busy_lookahead` while receives come back full)
    qm = broker(busy_lookahead=busy_lookahead)
    active = 0
    peak = 0
    lock = threading.Lock()

    def task(payload: Any) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)
        with lock:
            active -= 1

    actor = dramatiq.actor(task, broker=qm, actor_name="task", queue_name="task")
    send(qm, actor, *range(30))
    w = worker(qm, threads=3)
    # When it works through them, sampling how many received messages it holds unacknowledged
    samples = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        samples.append(qm.capacity.held)
        depth = queue_depth(sqs, qm.sqs_queue_name("task"))
        if depth["visible"] == 0 and depth["in_flight"] == 0:
            break
        time.sleep(0.01)
    w.stop()
    # Then it never held more than its threads and the look-ahead, plus one an idle poll may bring in,
    # and once the queue is empty the lookahead is back to one message
    assert settings.receive_lookahead == 1
    assert max(samples) <= most_held, samples
    assert peak == 3
    assert qm.capacity.lookahead == 1


def test_undecodable_and_unknown_actor_messages_are_dead_lettered_and_the_worker_goes_on(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given a garbage body, a message for an actor nobody defines, and a good message behind them
    qm = broker()
    done: list[str] = []
    actor = dramatiq.actor(lambda p: done.append(p), broker=qm, actor_name="ok", queue_name="ok")
    qm.ensure_queue("ok")
    url = sqs.get_queue_url(QueueName=qm.sqs_queue_name("ok"))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="this is not base64 of a message!")
    ghost = dramatiq.Message(queue_name="ok", actor_name="ghost", args=(), kwargs={}, options={})
    sqs.send_message(QueueUrl=url, MessageBody=base64.b64encode(ghost.encode()).decode())
    send(qm, actor, "good")
    # When a worker runs
    w = worker(qm, threads=2)
    wait_for(lambda: done == ["good"], timeout=10, what="the good message")
    dead = wait_for(
        lambda: (d := drain(sqs, qm.sqs_queue_name("ok") + "_dlq", timeout=1)) and len(d) == 2 and d,
        timeout=10,
        what="2 dead",
    )
    w.stop()
    # Then both bad messages are in the dead-letter queue, once each, with the reason
    errors = sorted(m["MessageAttributes"]["qm-error"]["StringValue"] for m in dead)
    assert [e.split(":")[0] for e in errors] == ["ActorNotFound", "undecodable body"], errors
    assert errors[0] == "ActorNotFound: ghost"
    assert queue_depth(sqs, qm.sqs_queue_name("ok")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_queues_get_a_redrive_policy_of_max_retries_plus_one_plus_the_spare_receives(
    broker: Callable[..., QMBroker], sqs: Any
) -> None:
    # Given an actor with max_retries=4, and the default spare receives (for hand-backs at a stop)
    qm = broker(spare_receives=3)
    dramatiq.actor(lambda p: None, broker=qm, actor_name="r", queue_name="r", max_retries=4)
    # When the worker sets up its queue
    qm.ensure_queue("r", reconcile=True)
    # Then SQS itself dead-letters after 4 + 1 + 3 receives (crash loops included)
    url = sqs.get_queue_url(QueueName=qm.sqs_queue_name("r"))["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attrs["RedrivePolicy"])
    dlq_url = sqs.get_queue_url(QueueName=qm.sqs_queue_name("r") + "_dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    assert int(policy["maxReceiveCount"]) == 8
    assert policy["deadLetterTargetArn"] == dlq_arn
    assert attrs["MaximumMessageSize"] == "1048576"
    assert attrs["VisibilityTimeout"] == "5"


def test_crash_looping_message_is_dead_lettered_by_the_redrive_policy(
    broker: Callable[..., QMBroker], sqs: Any
) -> None:
    # Given a queue set up for max_retries=1 and no spare receives (maxReceiveCount 2) and a message on it
    qm = broker(max_retries=1, spare_receives=0)
    actor = dramatiq.actor(lambda p: None, broker=qm, actor_name="crash", queue_name="crash")
    qm.ensure_queue("crash", reconcile=True)
    send(qm, actor, {})
    url = sqs.get_queue_url(QueueName=qm.sqs_queue_name("crash"))["QueueUrl"]
    # When it is received twice and never acknowledged (as by workers that die mid-task)
    for _ in range(2):
        got = wait_for(
            lambda: sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=1).get("Messages"),
            timeout=10,
            what="a receive",
        )
        assert len(got) == 1
    # Then the next receive finds nothing and the message sits in the dead-letter queue
    time.sleep(1.5)
    assert not sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages")
    dead = wait_for(
        lambda: drain(sqs, qm.sqs_queue_name("crash") + "_dlq", timeout=1), timeout=10, what="a dead letter"
    )
    assert len(dead) == 1


def test_an_idle_worker_long_polls(broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker]) -> None:
    # Given a worker on an empty queue with a 6 s long poll
    qm = broker(receive_wait_seconds=6)
    dramatiq.actor(lambda p: None, broker=qm, actor_name="idle", queue_name="idle")
    w = worker(qm, threads=4)
    # When it idles for 4.5 s
    time.sleep(4.5)
    receives = qm.request_counts().get("ReceiveMessage", 0)
    w.stop()
    # Then it made one receive, not one per second
    assert receives == 1


def test_actor_sees_the_message_id_it_was_sent_with(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker]
) -> None:
    qm = broker()
    seen: list[str] = []

    def record(payload: Any) -> None:
        current = CurrentMessage.get_current_message()
        assert current is not None
        seen.append(current.message_id)

    actor = dramatiq.actor(record, broker=qm, actor_name="rec", queue_name="rec")
    ids = send(qm, actor, 1, 2)
    worker(qm, threads=2)
    wait_for(lambda: len(seen) == 2, timeout=10, what="two messages")
    assert sorted(seen) == sorted(ids)


def _count_in_flight(client: Any, action: str, delay_seconds: float) -> dict[str, int]:
    """Delay every `action` call of `client` by `delay_seconds` and count how many are in flight at once."""
    in_flight = {"now": 0, "most": 0, "calls": 0}
    lock = threading.Lock()

    def slow(**_: Any) -> None:
        with lock:
            in_flight["now"] += 1
            in_flight["calls"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
        time.sleep(delay_seconds)

    def answered(**_: Any) -> None:
        with lock:
            in_flight["now"] -= 1

    client.meta.events.register(f"before-send.sqs.{action}", slow)
    client.meta.events.register(f"after-call.sqs.{action}", answered)
    return in_flight


def test_a_busy_queue_keeps_enough_receives_in_flight_to_fill_its_threads(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker]
) -> None:
    # Given 300 quick messages waiting, and SQS answering each receive 60 ms late (a distant region)
    qm = broker(sqs_direct_calls=False)  # its hooks see only calls made through botocore
    done: list[int] = []
    actor = dramatiq.actor(lambda p: done.append(p), broker=qm, actor_name="busy", queue_name="busy")
    send(qm, actor, *range(300))
    in_flight = _count_in_flight(qm.receive_client, "ReceiveMessage", 0.06)
    # When one worker process with 30 threads drains the queue
    w = worker(qm, threads=30)
    wait_for(lambda: len(done) == 300, timeout=60, what="300 messages processed")
    w.stop()
    # Then it had several receives in flight at once (one per ten free threads), never one at a time
    assert in_flight["most"] >= 3, in_flight
    # And it still received no more than its threads could run: each receive asked for at most ten
    assert sorted(done) == list(range(300))


def test_a_busy_queue_of_quick_messages_is_received_ten_at_a_time(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker]
) -> None:
    # Given 300 quick messages waiting, and SQS answering each receive 15 ms late (as real SQS does)
    qm = broker(sqs_direct_calls=False)  # its hooks see only calls made through botocore
    done: list[int] = []
    actor = dramatiq.actor(lambda p: done.append(p), broker=qm, actor_name="quick", queue_name="quick")
    send(qm, actor, *range(300))
    asked: list[int] = []

    def slow_receive(params: dict[str, Any], **_: Any) -> None:
        asked.append(params["MaxNumberOfMessages"])
        time.sleep(0.015)

    qm.receive_client.meta.events.register("before-parameter-build.sqs.ReceiveMessage", slow_receive)
    # When one worker process with 10 threads drains the queue
    w = worker(qm, threads=10)
    wait_for(lambda: len(done) == 300, timeout=60, what="300 messages processed")
    w.stop()
    # Then its receives waited for the threads to finish rather than fetching the odd message
    # between full ones: about one receive per ten messages, not one per five
    assert sorted(done) == list(range(300))
    full = sum(1 for n in asked if n == 10)
    assert len(asked) <= 300 / 10 * 1.25 + 3, asked
    assert full >= 0.8 * 300 / 10, asked


def test_acks_keep_several_delete_batches_in_flight_when_sqs_answers_late(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given 300 quick messages waiting, and SQS answering each DeleteMessageBatch 60 ms late
    qm = broker(sqs_direct_calls=False)  # its hooks see only calls made through botocore
    done: list[int] = []
    actor = dramatiq.actor(lambda p: done.append(p), broker=qm, actor_name="acked", queue_name="acked")
    send(qm, actor, *range(300))
    deletes = _count_in_flight(qm.client, "DeleteMessageBatch", 0.06)
    # When one worker process with 10 threads drains the queue
    w = worker(qm, threads=10)
    wait_for(lambda: len(done) == 300, timeout=60, what="300 messages processed")
    wait_for(
        lambda: queue_depth(sqs, qm.sqs_queue_name("acked"))["in_flight"] == 0, timeout=30, what="every message deleted"
    )
    w.stop()
    # Then its acks did not queue behind one batch at a time (at most ten per 60 ms), nor did they
    # go in more batches than full ones need
    assert 2 <= deletes["most"] <= 4, deletes
    assert deletes["calls"] <= 300 / 10 + 5, deletes


def test_a_lookahead_of_a_whole_receive_overlaps_receiving_with_work(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker]
) -> None:
    # Given 300 quick messages waiting, SQS answering each receive 30 ms late, and a worker allowed
    # to hold ten messages beyond its ten threads
    qm = broker(receive_lookahead=10, sqs_direct_calls=False)  # hooks see botocore's calls only
    done: list[int] = []
    actor = dramatiq.actor(lambda p: done.append(p), broker=qm, actor_name="ahead", queue_name="ahead")
    send(qm, actor, *range(300))
    receives = _count_in_flight(qm.receive_client, "ReceiveMessage", 0.03)
    held: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            held.append(qm.capacity.held)
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # When one worker process with 10 threads drains the queue
    w = worker(qm, threads=10)
    wait_for(lambda: len(done) == 300, timeout=60, what="300 messages processed")
    sampling.set()
    sampler.join()
    w.stop()
    # Then the next receive went out while the last one's messages ran (it held messages beyond its
    # threads), receives came back full, and it never held more than its threads, its lookahead and
    # what finishes during one receive (at most the lookahead again)
    assert sorted(done) == list(range(300))
    assert receives["calls"] <= 300 // 10 + 4, receives
    assert 10 < max(held) <= 10 + 10 + 10, max(held)


def test_join_returns_once_the_queue_and_its_in_flight_messages_are_gone(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given three messages of half a second each and a worker with two threads
    qm = broker()
    done: list[int] = []

    def slow(payload: int) -> None:
        time.sleep(0.5)
        done.append(payload)

    actor = dramatiq.actor(slow, broker=qm, actor_name="j", queue_name="j")
    send(qm, actor, 1, 2, 3)
    worker(qm, threads=2)
    # When the queue is joined
    qm.join("j", timeout=30_000)
    # Then every message was processed and deleted, not merely received
    assert sorted(done) == [1, 2, 3]
    assert queue_depth(sqs, qm.sqs_queue_name("j")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_join_raises_queue_join_timeout_while_messages_wait(broker: Callable[..., QMBroker]) -> None:
    # Given a message and a delayed one, and no worker
    qm = broker()
    actor = dramatiq.actor(lambda p: None, broker=qm, actor_name="w", queue_name="w")
    send(qm, actor, 1)
    qm.enqueue(actor.message(2), delay=5000)
    # When the queue is joined for half a second
    started = time.monotonic()
    with pytest.raises(dramatiq.QueueJoinTimeout):
        qm.join("w", timeout=500)
    # Then it gave up after about that long (the timeout is in milliseconds, as Dramatiq's)
    assert 0.5 <= time.monotonic() - started < 3


def test_join_of_an_undeclared_queue_raises_queue_not_found(broker: Callable[..., QMBroker]) -> None:
    qm = broker()
    with pytest.raises(dramatiq.QueueNotFound):
        qm.join("nobody", timeout=100)


def test_a_consumer_holds_no_more_messages_than_its_prefetch(broker: Callable[..., QMBroker], sqs: Any) -> None:
    # Given five messages and a consumer with prefetch 2 (Dramatiq counts messages in progress too)
    qm = broker()
    actor = dramatiq.actor(lambda p: None, broker=qm, actor_name="p", queue_name="p")
    send(qm, actor, *range(5))
    consumer = qm.consume("p", prefetch=2, timeout=200)
    try:
        held = [wait_for(lambda: next(consumer), timeout=10, what="a message") for _ in range(2)]
        # When it is asked for more while it holds both
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            assert next(consumer) is None
        # Then it received no more: two in flight, three still on the queue
        assert queue_depth(sqs, qm.sqs_queue_name("p")) == {"visible": 3, "in_flight": 2, "delayed": 0}
        # When one is acknowledged, Then it takes exactly one more
        consumer.ack(held[0])
        assert wait_for(lambda: next(consumer), timeout=10, what="a third message") is not None
        wait_for(
            lambda: queue_depth(sqs, qm.sqs_queue_name("p")) == {"visible": 2, "in_flight": 2, "delayed": 0},
            timeout=5,
            what="two held and two waiting",
        )
        assert next(consumer) is None
    finally:
        consumer.close()


def test_a_worker_runs_no_more_of_a_queue_than_its_prefetch(
    broker: Callable[..., QMBroker], worker: Callable[..., InProcessWorker], sqs: Any
) -> None:
    # Given six messages that each hold a thread until released, and a worker with four threads
    # but a queue prefetch of two
    qm = broker()
    started: list[int] = []
    release = threading.Event()

    def hold(payload: int) -> None:
        started.append(payload)
        release.wait(30)

    actor = dramatiq.actor(hold, broker=qm, actor_name="hold", queue_name="hold")
    send(qm, actor, *range(6))
    worker(qm, threads=4, prefetch=2)
    wait_for(lambda: len(started) == 2, timeout=10, what="two messages started")
    # When it runs for a second with two threads idle
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        # Then it runs two and leaves the other four on the queue
        assert len(started) == 2
        assert queue_depth(sqs, qm.sqs_queue_name("hold")) == {"visible": 4, "in_flight": 2, "delayed": 0}
        time.sleep(0.1)
    # And once released it works through the rest
    release.set()
    qm.join("hold", timeout=30_000)
    assert sorted(started) == list(range(6))


def test_the_consume_timeout_is_the_long_poll_of_a_broker_given_no_receive_wait(
    settings: Settings, sqs_env: dict[str, str]
) -> None:
    # Given a broker built as dramatiq-sqs users build theirs: no receive wait of its own
    broker = QMBroker(
        namespace=settings.queue_prefix, middleware=[], endpoint_url=sqs_env["AWS_ENDPOINT_URL_SQS"],
        region_name="us-east-1", direct_calls=False,  # botocore's hooks see only calls made through it
    )  # fmt: skip
    dramatiq.actor(lambda: None, broker=broker, actor_name="lp", queue_name="lp")
    waits: list[int] = []
    broker.receive_client.meta.events.register(
        "provide-client-params.sqs.ReceiveMessage", lambda params, **_: waits.append(params["WaitTimeSeconds"])
    )
    # When a consumer with a 3 s timeout is asked for a message on an empty queue
    consumer = broker.consume("lp", prefetch=1, timeout=3000)
    try:
        started = time.monotonic()
        message = next(consumer)
        elapsed = time.monotonic() - started
    finally:
        consumer.close()
        broker.close()
    # Then it waited that long for one, and its receive long-polled for those 3 s
    assert message is None
    assert 2.5 <= elapsed < 5, elapsed
    assert waits and waits[0] == 3, waits
