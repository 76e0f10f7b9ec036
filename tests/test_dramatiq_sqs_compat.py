"""dramatiq-sqs 0.4.4's own broker tests, re-expressed on our fixtures, on its SQSBroker and on QMBroker.

Each test names in its docstring the upstream test it re-expresses (`tests/test_broker.py` of
Bogdanp/dramatiq_sqs at v0.4.4), so that the two can be compared. The `broker` fixture builds the
broker the way upstream's conftest does, with the same arguments and middleware, for two classes:
`stock` (dramatiq-sqs's SQSBroker: evidence that the re-expression keeps the upstream meaning) and
`qm` (our QMBroker: the drop-in claim). Upstream tests that read the stock consumer's private
attributes are skipped on `qm`; a sibling test checks the same behaviour through public means.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import dramatiq.broker
import pytest
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, TimeLimit
from dramatiq_sqs import SQSBroker
from dramatiq_sqs.exceptions import MessageDelayTooLong, MessageTooLarge

from queue_manager.sqs.broker import QMBroker
from tests.support import drain, queue_depth, wait_for

#: How long a test waits for a queue to empty, in milliseconds.
JOIN_TIMEOUT_MS = 60_000

#: Why two upstream tests do not run on QMBroker.
PRIVATE_REFC = "reads SQSConsumer.message_refc, a private counter of the stock consumer (see the sibling test)"
PRIVATE_BUFFER = "reads SQSConsumer.messages, the stock consumer's private buffer (see the sibling test)"

BROKER_CLASSES = [pytest.param(SQSBroker, id="stock"), pytest.param(QMBroker, id="qm")]


def only_stock(reason: str) -> Any:
    """Parametrise a test over both brokers, skipping it on QMBroker for `reason`."""
    return pytest.mark.parametrize(
        "broker_class",
        [pytest.param(SQSBroker, id="stock"), pytest.param(QMBroker, id="qm", marks=pytest.mark.skip(reason=reason))],
    )


@pytest.fixture(params=BROKER_CLASSES)
def broker_class(request: pytest.FixtureRequest) -> type[SQSBroker]:
    cls: type[SQSBroker] = request.param
    return cls


@pytest.fixture
def namespace(settings: Any) -> str:
    """A namespace of this test's own: the settings fixture deletes its queues afterwards."""
    prefix: str = settings.queue_prefix
    return prefix


@pytest.fixture
def tags() -> dict[str, str]:
    return {"owner": "pytest"}


@pytest.fixture
def dead_letter() -> bool:
    return False


@pytest.fixture
def broker(
    broker_class: type[SQSBroker], namespace: str, dead_letter: bool, tags: dict[str, str], sqs_env: dict[str, str]
) -> Iterator[SQSBroker]:
    """The broker as upstream's conftest builds it, pointed at this session's SQS server."""
    previous = dramatiq.broker.global_broker
    broker = broker_class(
        namespace=namespace,
        middleware=[
            AgeLimit(),
            TimeLimit(),
            Callbacks(),
            Pipelines(),
            Retries(min_backoff=1000, max_backoff=900000, max_retries=96),
        ],
        dead_letter=dead_letter,
        tags=tags,
        region_name="us-east-1",
        endpoint_url=sqs_env["AWS_ENDPOINT_URL_SQS"],
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    dramatiq.set_broker(broker)
    yield broker
    broker.close()
    dramatiq.broker.global_broker = previous


@pytest.fixture
def queue_name() -> str:
    return f"queue_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def worker(broker: SQSBroker) -> Iterator[dramatiq.Worker]:
    """A worker with Dramatiq's defaults (8 threads, 1 s timeout), as upstream's."""
    worker = dramatiq.Worker(broker)
    worker.start()
    yield worker
    worker.stop(timeout=JOIN_TIMEOUT_MS)


def join(broker: SQSBroker, queue_name: str) -> None:
    """Wait for the queue to empty, bounded: Dramatiq's join takes milliseconds, dramatiq-sqs 0.4.4's seconds."""
    broker.join(queue_name, timeout=JOIN_TIMEOUT_MS if isinstance(broker, QMBroker) else JOIN_TIMEOUT_MS // 1000)


def sqs_name(namespace: str, queue_name: str) -> str:
    return f"{namespace}_{queue_name}"


def queues_of(sqs: Any, namespace: str) -> set[str]:
    """The SQS queue names under `namespace`."""
    return {url.rsplit("/", 1)[1] for url in sqs.list_queues(QueueNamePrefix=namespace).get("QueueUrls", [])}


def test_can_enqueue_and_process_messages(broker: SQSBroker, worker: dramatiq.Worker, queue_name: str) -> None:
    """Upstream: test_can_enqueue_and_process_messages."""
    # Given an actor that stores what it receives
    db: list[int] = []

    @dramatiq.actor(queue_name=queue_name)
    def do_work(x: int) -> None:
        db.append(x)

    # When it is sent a message and the queue is joined
    do_work.send(1)
    join(broker, queue_name)
    # Then that message was processed, once
    assert db == [1]


def test_failed_messages_are_deleted_from_queue(
    broker: SQSBroker, worker: dramatiq.Worker, queue_name: str, sqs: Any, namespace: str
) -> None:
    """Upstream: test_failed_messages_are_deleted_from_queue."""
    # Given an actor that always fails and may not retry
    attempts: list[int] = []

    @dramatiq.actor(queue_name=queue_name, max_retries=0)
    def do_work() -> None:
        attempts.append(1)
        raise RuntimeError()

    # When it is sent a message
    do_work.send()
    # Then the queue empties after one attempt (join returns), and with dead_letter off no DLQ exists
    join(broker, queue_name)
    assert attempts == [1]
    assert queues_of(sqs, namespace) == {sqs_name(namespace, queue_name)}


@pytest.mark.parametrize("dead_letter", [True])
@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 5), (3, 5)])
def test_failed_messages_are_sent_to_dlq(
    broker: SQSBroker, worker: dramatiq.Worker, queue_name: str, max_retries: int, attempts: int, sqs: Any,
    namespace: str,
) -> None:  # fmt: skip
    """Upstream: test_failed_messages_are_sent_to_dlq."""

    # Given an actor that always fails, with `max_retries` retries
    @dramatiq.actor(queue_name=queue_name, max_retries=max_retries)
    def do_work() -> None:
        raise RuntimeError()

    # When it is sent `attempts` messages and the queue empties
    for _ in range(attempts):
        do_work.send()
    join(broker, queue_name)
    # Then every one of them is on the dead-letter queue
    dead = drain(sqs, sqs_name(namespace, queue_name) + "_dlq")
    assert len(dead) == attempts


def test_limits_prefetch_while_if_queue_is_full(
    broker: SQSBroker, worker: dramatiq.Worker, queue_name: str, sqs: Any, namespace: str
) -> None:
    """Upstream: test_limits_prefetch_while_if_queue_is_full (an event stands in for its 10 s sleep)."""
    # Given a worker whose queue prefetch is 1 and an actor that holds its thread until released
    db: list[int] = []
    release = threading.Event()
    worker.queue_prefetch = 1

    @dramatiq.actor(queue_name=queue_name)
    def do_work(x: int) -> None:
        db.append(x)
        release.wait(30)

    # When it is sent two messages
    do_work.send(1)
    do_work.send(2)
    wait_for(lambda: len(db) == 1, timeout=20, what="the first message to start")
    # Then for the upstream's 2 s it runs one and leaves the other on the queue, though threads are free
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert len(db) == 1, db
        assert queue_depth(sqs, sqs_name(namespace, queue_name))["visible"] == 1
        time.sleep(0.1)
    # And once the first is done, the second runs
    release.set()
    join(broker, queue_name)
    assert sorted(db) == [1, 2]


def test_can_enqueue_delayed_messages(broker: SQSBroker, worker: dramatiq.Worker, queue_name: str) -> None:
    """Upstream: test_can_enqueue_delayed_messages."""
    # Given an actor that stores what it receives
    db: list[int] = []

    @dramatiq.actor(queue_name=queue_name)
    def do_work(x: int) -> None:
        db.append(x)

    # When it is sent a message delayed by 5 s and the queue is joined
    start = time.monotonic()
    do_work.send_with_options(args=(1,), delay=5000)
    join(broker, queue_name)
    # Then the message was processed, and no sooner than its delay
    assert db == [1]
    assert time.monotonic() - start >= 5


def test_cant_delay_messages_for_longer_than_15_seconds(
    broker: SQSBroker, queue_name: str, sqs: Any, namespace: str
) -> None:
    """Upstream: test_cant_delay_messages_for_longer_than_15_seconds (the limit is 15 minutes)."""

    # Given an actor
    @dramatiq.actor(queue_name=queue_name)
    def do_work() -> None:
        pass

    # When it is sent a message delayed by an hour, Then dramatiq-sqs's MessageDelayTooLong is raised
    with pytest.raises(MessageDelayTooLong):
        do_work.send_with_options(delay=3_600_000)
    # And nothing was sent
    assert queue_depth(sqs, sqs_name(namespace, queue_name)) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_cant_enqueue_messages_that_are_too_large(broker: SQSBroker, queue_name: str) -> None:
    """Upstream: test_cant_enqueue_messages_that_are_too_large."""

    # Given an actor
    @dramatiq.actor(queue_name=queue_name)
    def do_work(s: str) -> None:
        pass

    # When it is sent 768 KiB, over 1 MiB once base64-encoded, Then dramatiq-sqs's MessageTooLarge is raised
    with pytest.raises(MessageTooLarge):
        do_work.send("a" * 768 * 1024)


def test_max_message_size_is_configurable(broker: SQSBroker, queue_name: str) -> None:
    """Upstream: test_max_message_size_is_configurable."""
    # Given a broker whose max message size is lowered to 1 KiB after it was built
    broker.max_message_size = 1024

    @dramatiq.actor(queue_name=queue_name)
    def do_work(s: str) -> None:
        pass

    # When a message over that limit is sent, Then MessageTooLarge is raised
    with pytest.raises(MessageTooLarge):
        do_work.send("a" * 2048)


@pytest.mark.parametrize("broker_class", BROKER_CLASSES)
def test_max_message_size_is_validated(broker_class: type[SQSBroker]) -> None:
    """Upstream: test_max_message_size_is_validated."""
    # When a broker is built with a max message size that is not positive, Then ValueError is raised
    with pytest.raises(ValueError):
        broker_class(max_message_size=0)


@pytest.mark.parametrize("broker_class", BROKER_CLASSES)
def test_retention_period_is_validated(broker_class: type[SQSBroker]) -> None:
    """Upstream: test_retention_period_is_validated."""
    # When a broker is built with a retention over SQS's 14 days, Then ValueError is raised
    with pytest.raises(ValueError):
        broker_class(retention=30 * 86400)


def test_can_requeue_consumed_messages(broker: SQSBroker, queue_name: str) -> None:
    """Upstream: test_can_requeue_consumed_messages."""

    # Given an actor and one message for it, received by a consumer
    @dramatiq.actor(queue_name=queue_name)
    def do_work() -> None:
        pass

    do_work.send()
    consumer = broker.consume(queue_name)
    try:
        first = next(consumer)
        assert first is not None
        # When the consumer requeues it
        consumer.requeue([first])
        # Then the same message can be consumed again at once
        second = next(consumer)
        assert second is not None
        assert first == second
    finally:
        consumer.close()


@only_stock(PRIVATE_REFC)
def test_consumer_backs_off_when_prefetch_limit_reached(broker: SQSBroker, queue_name: str) -> None:
    """Upstream: test_consumer_backs_off_when_prefetch_limit_reached."""

    # Given a consumer with prefetch 1 holding one message it has not acknowledged
    @dramatiq.actor(queue_name=queue_name)
    def do_work() -> None:
        pass

    do_work.send()
    consumer: Any = broker.consume(queue_name, prefetch=1, timeout=1000)
    in_flight = next(consumer)
    assert in_flight is not None
    assert consumer.message_refc == 1
    # When it is asked for more for a second, Then it answers None, backing off instead of spinning
    deadline = time.monotonic() + 1.0
    calls = 0
    while time.monotonic() < deadline:
        assert next(consumer) is None
        calls += 1
    assert calls < 50
    consumer.ack(in_flight)


def test_consumer_backs_off_when_prefetch_limit_reached_public(
    broker: SQSBroker, queue_name: str, sqs: Any, namespace: str
) -> None:
    """Upstream: test_consumer_backs_off_when_prefetch_limit_reached, checked without private attributes.

    Instead of the consumer's reference count, SQS itself shows that the consumer holds one
    message and leaves the second alone while its prefetch of one is taken.
    """

    # Given a consumer with prefetch 1 holding one of two messages, unacknowledged
    @dramatiq.actor(queue_name=queue_name)
    def do_work() -> None:
        pass

    do_work.send()
    do_work.send()
    consumer = broker.consume(queue_name, prefetch=1, timeout=1000)
    try:
        in_flight = next(consumer)
        assert in_flight is not None
        # When it is asked for more for a second
        deadline = time.monotonic() + 1.0
        calls = 0
        while time.monotonic() < deadline:
            assert next(consumer) is None
            calls += 1
        # Then it answered None without spinning, and received nothing more
        assert calls < 50
        assert queue_depth(sqs, sqs_name(namespace, queue_name)) == {"visible": 1, "in_flight": 1, "delayed": 0}
        # And once the first is acknowledged, it hands out the second
        consumer.ack(in_flight)
        assert wait_for(lambda: next(consumer), timeout=10, what="the second message") is not None
    finally:
        consumer.close()


@only_stock(PRIVATE_BUFFER)
def test_close_requeues_prefetched_messages(broker: SQSBroker, queue_name: str) -> None:
    """Upstream: test_close_requeues_prefetched_messages."""

    # Given three messages and a consumer with prefetch 5 that has handed out one of them
    @dramatiq.actor(queue_name=queue_name)
    def do_work() -> None:
        pass

    for _ in range(3):
        do_work.send()
    consumer: Any = broker.consume(queue_name, prefetch=5)
    assert next(consumer) is not None
    buffered_count = len(consumer.messages)
    assert buffered_count >= 1
    # When it is closed, Then its buffer is drained and a new consumer gets those messages at once
    consumer.close()
    assert len(consumer.messages) == 0
    new_consumer = broker.consume(queue_name, prefetch=5)
    for _ in range(buffered_count):
        assert next(new_consumer) is not None


def test_close_requeues_prefetched_messages_public(
    broker: SQSBroker, queue_name: str, sqs: Any, namespace: str
) -> None:
    """Upstream: test_close_requeues_prefetched_messages, checked without private attributes.

    Instead of the consumer's buffer, SQS shows what was handed out (in flight) and what was
    released on close (visible again), and a second consumer gets the released ones at once.
    """

    # Given three messages and a consumer with prefetch 5 that has handed out one of them
    @dramatiq.actor(queue_name=queue_name)
    def do_work() -> None:
        pass

    for _ in range(3):
        do_work.send()
    consumer = broker.consume(queue_name, prefetch=5)
    assert next(consumer) is not None
    # When it is closed
    consumer.close()
    # Then the two it had not handed out are visible again at once, not after a visibility timeout
    assert queue_depth(sqs, sqs_name(namespace, queue_name)) == {"visible": 2, "in_flight": 1, "delayed": 0}
    new_consumer = broker.consume(queue_name, prefetch=5)
    try:
        got = [wait_for(lambda: next(new_consumer), timeout=10, what="a released message") for _ in range(2)]
        assert all(m is not None for m in got)
    finally:
        new_consumer.close()


@pytest.fixture(params=["consume", "enqueue"])
def ensure_queue_trigger(request: pytest.FixtureRequest, broker: SQSBroker) -> Callable[[str], Any]:
    """What makes a declared queue exist on SQS: a consumer or a message."""
    if request.param == "consume":
        return lambda queue_name: broker.consume(queue_name)
    return lambda queue_name: broker.enqueue(dramatiq.Message(queue_name, "test", (), {}, {}))


@pytest.mark.parametrize(
    ("queue_name", "dead_letter", "suffixes"),
    [("queue42", False, [""]), ("queue42", True, ["", "_dlq"])],
)
def test_declare_queue(
    queue_name: str, suffixes: list[str], broker: SQSBroker, namespace: str, tags: dict[str, str], sqs: Any,
    ensure_queue_trigger: Callable[[str], Any],
) -> None:  # fmt: skip
    """Upstream: test_declare_queue (exact queue sets, under this test's namespace)."""
    # When a queue is declared, Then it is known to the broker but not yet created on SQS
    broker.declare_queue(queue_name)
    assert broker.get_declared_queues() == {queue_name}
    assert queues_of(sqs, namespace) == set()
    # When a consumer or a message needs it
    ensure_queue_trigger(queue_name)
    # Then it exists (with its dead-letter queue if asked for), tagged with the broker's tags
    expected = {sqs_name(namespace, queue_name) + suffix for suffix in suffixes}
    assert queues_of(sqs, namespace) == expected
    for name in expected:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        assert sqs.list_queue_tags(QueueUrl=url)["Tags"] == tags
