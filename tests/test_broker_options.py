"""QMBroker as a drop-in for dramatiq-sqs's SQSBroker: the stock constructor options and exceptions."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import dramatiq_sqs
import pytest
from botocore.config import Config
from dramatiq.middleware import Retries, TimeLimit

from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.consumer import ConsumerContext, QMConsumer
from queue_manager.sqs.errors import MessageDelayTooLong, MessageTooLarge
from queue_manager.sqs.middleware.retries import RetriesInPlace
from tests.conftest import InProcessWorker
from tests.support import queue_depth, wait_for


@pytest.fixture
def make_broker(settings: Settings, sqs_env: dict[str, str]) -> Iterator[Callable[..., QMBroker]]:
    """Build QMBrokers as dramatiq-sqs users build SQSBrokers, on this test's namespace; closed after."""
    made: list[QMBroker] = []

    def make(*, broker_class: type[QMBroker] = QMBroker, **options: Any) -> QMBroker:
        options = {
            "namespace": settings.queue_prefix,
            "middleware": [],
            "endpoint_url": sqs_env["AWS_ENDPOINT_URL_SQS"],
            "region_name": "us-east-1",
            **options,
        }
        broker = broker_class(**options)
        made.append(broker)
        return broker

    yield make
    for broker in made:
        broker.close()


def attributes(sqs: Any, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs: dict[str, str] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return attrs


def tags_of(sqs: Any, name: str) -> dict[str, str]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    tags: dict[str, str] = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    return tags


def test_retention_and_dead_letter_retention_set_each_queues_retention_period(
    make_broker: Callable[..., QMBroker], sqs: Any
) -> None:
    # Given a broker with a retention of one hour and two hours for dead letters
    broker = make_broker(retention=3600, dead_letter_retention=7200)
    broker.declare_queue("keep")
    # When its queues are created
    broker.ensure_queue("keep")
    # Then each queue keeps messages as long as asked
    assert attributes(sqs, broker.sqs_queue_name("keep"))["MessageRetentionPeriod"] == "3600"
    assert attributes(sqs, broker.sqs_queue_name("keep") + "_dlq")["MessageRetentionPeriod"] == "7200"


def test_tags_are_set_on_new_queues_and_added_to_existing_ones(make_broker: Callable[..., QMBroker], sqs: Any) -> None:
    # Given one queue that already exists untagged, and a broker with tags
    broker = make_broker(tags={"team": "payments", "env": "test"})
    sqs.create_queue(QueueName=broker.sqs_queue_name("old"))
    broker.declare_queue("old")
    broker.declare_queue("new")
    # When the broker sets up both queues
    broker.ensure_queue("old")
    broker.ensure_queue("new")
    # Then all four queues carry the tags
    for name in ("old", "old_dlq", "new", "new_dlq"):
        assert tags_of(sqs, f"{broker.namespace}_{name}") == {"team": "payments", "env": "test"}, name


def test_the_stock_visibility_timeout_option_sets_the_queue_and_the_heartbeat(
    make_broker: Callable[..., QMBroker], sqs: Any
) -> None:
    # Given a broker built with dramatiq-sqs's option name
    broker = make_broker(visibility_timeout=45)
    broker.declare_queue("vt")
    # When its queue is created
    broker.ensure_queue("vt")
    # Then received messages are hidden for that long, and the heartbeat extends by that much
    assert attributes(sqs, broker.sqs_queue_name("vt"))["VisibilityTimeout"] == "45"
    assert broker.visibility_timeout_seconds == 45
    assert broker.acks.visibility_timeout_seconds == 45


def test_max_receives_sets_the_redrive_policys_receive_count(make_broker: Callable[..., QMBroker], sqs: Any) -> None:
    # Given a broker with dramatiq-sqs 0.3's max_receives, and an actor allowing more retries
    broker = make_broker(max_receives=3, middleware=None)
    dramatiq.actor(lambda: None, broker=broker, actor_name="mr", queue_name="mr", max_retries=10)
    # When its queue is created
    broker.ensure_queue("mr")
    # Then SQS dead-letters after three receives
    policy = json.loads(attributes(sqs, broker.sqs_queue_name("mr"))["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == 3


def test_without_dead_letter_a_failed_message_is_deleted_and_no_dead_letter_queue_exists(
    make_broker: Callable[..., QMBroker],
    worker: Callable[..., InProcessWorker],
    sqs: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a broker without a dead-letter queue, as dramatiq-sqs's dead_letter=False, and an
    # actor that fails with no retries
    broker = make_broker(dead_letter=False, middleware=None)
    attempts: list[int] = []

    def fails() -> None:
        attempts.append(1)
        raise RuntimeError("boom")

    actor = dramatiq.actor(fails, broker=broker, actor_name="nodlq", queue_name="nodlq", max_retries=0)
    actor.send()
    # When a worker runs it
    running = worker(broker, threads=2)
    with caplog.at_level(logging.WARNING, logger="queue_manager.sqs.consumer"):
        broker.join("nodlq", timeout=20_000)
    running.stop()
    # Then it ran once, is gone from the queue, no dead-letter queue was made, and the deletion is logged
    assert attempts == [1]
    assert queue_depth(sqs, broker.sqs_queue_name("nodlq")) == {"visible": 0, "in_flight": 0, "delayed": 0}
    names = [u.rsplit("/", 1)[1] for u in sqs.list_queues(QueueNamePrefix=broker.namespace).get("QueueUrls", [])]
    assert names == [broker.sqs_queue_name("nodlq")]
    assert "RedrivePolicy" not in attributes(sqs, broker.sqs_queue_name("nodlq"))
    assert any("no dead-letter queue" in r.getMessage() and "boom" in r.getMessage() for r in caplog.records)


def test_without_a_namespace_queues_are_named_as_declared(make_broker: Callable[..., QMBroker], sqs: Any) -> None:
    # Given a broker without a namespace, as dramatiq-sqs allows
    broker = make_broker(namespace=None)
    name = "nons" + uuid.uuid4().hex[:12]
    broker.declare_queue(name)
    try:
        # When its queue is created
        urls = broker.ensure_queue(name)
        # Then the SQS queue has the declared name and its dead-letter queue that name plus _dlq
        assert urls.url == sqs.get_queue_url(QueueName=name)["QueueUrl"]
        assert urls.dead_letter_url == sqs.get_queue_url(QueueName=name + "_dlq")["QueueUrl"]
    finally:
        for queue in (name, name + "_dlq"):
            sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=queue)["QueueUrl"])


def test_the_stock_queue_dictionaries_hold_the_queues_set_up(make_broker: Callable[..., QMBroker]) -> None:
    # Given a broker whose queue was set up
    broker = make_broker()
    broker.declare_queue("dicts")
    urls = broker.ensure_queue("dicts")
    # Then dramatiq-sqs's `queues` and `dead_letter_queues` name them as boto3 Queue resources
    assert broker.queues["dicts"].url == urls.url
    assert broker.dead_letter_queues["dicts"].url == urls.dead_letter_url


def test_no_middleware_means_dramatiqs_defaults_with_retries_in_place(make_broker: Callable[..., QMBroker]) -> None:
    # When a broker is built with middleware=None, as SQSBroker's default
    broker = make_broker(middleware=None, max_retries=7)
    kinds = [type(m) for m in broker.middleware]
    # Then it has Dramatiq's defaults, its Retries replaced by retries in place that agree with the
    # queues' redrive policy
    assert kinds == [RetriesInPlace if cls is Retries else cls for cls in dramatiq.middleware.default_middleware]
    retries = next(m for m in broker.middleware if isinstance(m, RetriesInPlace))
    assert retries.max_retries == 7


def test_an_explicit_middleware_list_is_kept_and_the_broker_still_sizes_receives_to_the_threads(
    make_broker: Callable[..., QMBroker],
) -> None:
    # Given a broker with a stock middleware list, nothing of ours in it
    broker = make_broker(middleware=[TimeLimit(), Retries(max_retries=3)], receive_lookahead=0)
    assert [type(m) for m in broker.middleware] == [TimeLimit, Retries]
    broker.declare_queue("sized")
    # When a worker with 3 threads boots on it, and stops
    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=100)
    worker.start()
    try:
        # Then the broker itself learnt the thread count (it owns its lifecycle, no middleware needed)
        assert broker.capacity.total == 3
        assert not broker.stopping.is_set()
    finally:
        worker.stop(timeout=10_000)
    assert broker.stopping.is_set()


def test_a_consumer_class_override_builds_every_standard_queues_consumer(make_broker: Callable[..., QMBroker]) -> None:
    # Given a broker whose consumer_class is a user's subclass, as dramatiq-sqs allows
    built: list[ConsumerContext] = []

    class Counting(QMConsumer):
        def __init__(self, context: ConsumerContext) -> None:
            built.append(context)
            super().__init__(context)

    class Mine(QMBroker):
        @property
        def consumer_class(self) -> type[QMConsumer]:
            return Counting

    broker = make_broker(broker_class=Mine)
    broker.declare_queue("mine")
    # When it consumes the queue
    consumer = broker.consume("mine", prefetch=4, timeout=100)
    try:
        # Then the consumer is the user's, given exactly the queue's context
        assert type(consumer) is Counting
        assert [(c.queue_name, c.prefetch, c.timeout_ms) for c in built] == [("mine", 4, 100)]
        assert built[0].urls == broker.ensure_queue("mine")
    finally:
        consumer.close()


def test_boto3_options_reach_both_clients_and_a_given_config_is_merged(make_broker: Callable[..., QMBroker]) -> None:
    # When a broker is given credentials and a botocore Config of the user's
    broker = make_broker(
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret", config=Config(user_agent_extra="mine/1.0"),
        sqs_timeout_seconds=3,
    )  # fmt: skip
    # Then all its clients use them, and keep our timeouts
    for client in (broker.client, broker.receive_client, broker.send_client):
        assert client._request_signer._credentials.access_key == "AKIDEXAMPLE"
        assert client.meta.config.user_agent_extra == "mine/1.0"
        assert client.meta.config.connect_timeout == 3


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"retention": 59}, "retention"),
        ({"retention": 14 * 86400 + 1}, "retention"),
        ({"dead_letter_retention": 30 * 86400}, "dead_letter_retention"),
        ({"visibility_timeout": 12 * 3600 + 1}, "visibility_timeout"),
        ({"visibility_timeout": 2}, "visibility_timeout"),
        ({"max_message_size": 0}, "max_message_size"),
        ({"max_receives": 0}, "max_receives"),
        ({"max_receives": 1001}, "max_receives"),
        ({"receive_wait_seconds": 21}, "receive_wait_seconds"),
        ({"visibility_timeout": 40, "visibility_timeout_seconds": 50}, "visibility_timeout"),
    ],
)
def test_out_of_range_options_are_refused_naming_the_option(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        QMBroker(namespace="x", middleware=[], region_name="us-east-1", **options)


def test_our_exceptions_are_dramatiq_sqs_exceptions() -> None:
    # Given our two enqueue errors
    too_large = MessageTooLarge(2_000_000, 1_048_576)
    too_long = MessageDelayTooLong("SQS delays a message by at most 900 s, not 3600 s.")
    # Then code written for dramatiq-sqs catches them, and ours keeps catching them as ValueError
    assert isinstance(too_large, dramatiq_sqs.MessageTooLarge)
    assert isinstance(too_large, ValueError)
    assert isinstance(too_long, dramatiq_sqs.MessageDelayTooLong)
    assert isinstance(too_long, ValueError)
    # And they keep their fields and messages
    assert (too_large.size_bytes, too_large.limit_bytes) == (2_000_000, 1_048_576)
    assert str(too_large) == "The message is 2000000 bytes once encoded; SQS accepts at most 1048576 bytes."
    assert str(too_long) == "SQS delays a message by at most 900 s, not 3600 s."


def test_the_broker_raises_dramatiq_sqs_exceptions_with_its_own_limit(broker: Callable[..., QMBroker]) -> None:
    # Given our broker with its max message size lowered as dramatiq-sqs users may
    qm = broker()
    qm.max_message_size = 1024
    message = dramatiq.Message(queue_name="big", actor_name="big", args=("a" * 2048,), kwargs={}, options={})
    # When a message over it is prepared, or one delayed past SQS's 15 minutes
    # Then dramatiq-sqs's exceptions come out, the size one naming both sizes
    with pytest.raises(dramatiq_sqs.MessageTooLarge) as too_large:
        qm.build_entry(message, None)
    assert isinstance(too_large.value, MessageTooLarge)
    assert too_large.value.limit_bytes == 1024
    assert too_large.value.size_bytes > 1024
    small = message.copy(args=("a",))
    with pytest.raises(dramatiq_sqs.MessageDelayTooLong):
        qm.build_entry(small, 901_000)


def test_join_waits_for_a_message_in_flight_to_be_acknowledged(make_broker: Callable[..., QMBroker]) -> None:
    # Given a message received but not yet acknowledged
    broker = make_broker()
    actor = dramatiq.actor(lambda: None, broker=broker, actor_name="jw", queue_name="jw")
    actor.send()
    consumer = broker.consume("jw", prefetch=1, timeout=1000)
    try:
        message = wait_for(lambda: next(consumer), timeout=10, what="the message")
        # When the queue is joined, Then it does not count as done
        with pytest.raises(dramatiq.QueueJoinTimeout):
            broker.join("jw", timeout=300)
        # And once acknowledged, it does
        consumer.ack(message)
        broker.join("jw", timeout=10_000)
    finally:
        consumer.close()
