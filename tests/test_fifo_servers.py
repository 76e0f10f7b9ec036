"""What the local SQS servers implement of FIFO queues, checked against what AWS documents and our
code relies on. A behaviour a server lacks is an expected failure on that server (strict: the day
it gains it, the mark must go), so the suite says which guarantee each test run had.

AWS: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/FIFO-queues-understanding-logic.html
Not checked here because it cannot be shown deterministically: moto server takes no lock between
concurrent ReceiveMessage calls, so two receivers at once can each take messages of one group
(seen in test_fifo_e2e with two receivers; that test runs one receiver on moto).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from queue_manager.settings import Settings
from tests.conftest import SQS_KIND

pytestmark = pytest.mark.e2e


def lacks(*servers: str, reason: str) -> Any:
    """Mark a test as an expected failure on the servers that do not do what AWS does."""
    return pytest.mark.xfail(SQS_KIND in servers, reason=f"{SQS_KIND} {reason}", strict=True)


@pytest.fixture
def fifo_queue(sqs: Any, settings: Settings) -> Callable[..., str]:
    """Create a FIFO queue of this test's own (deleted with the test's other queues)."""

    def make(suffix: str = "", **attributes: str) -> str:
        name = f"{settings.queue_prefix}_{suffix or uuid.uuid4().hex[:6]}.fifo"
        attrs = {"FifoQueue": "true", "ContentBasedDeduplication": "false", **attributes}
        return str(sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"])

    return make


def send(sqs: Any, url: str, group: str, *bodies: str) -> None:
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=body)


def receive(sqs: Any, url: str, *, visibility: int = 30, most: int = 10) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=most, VisibilityTimeout=visibility, WaitTimeSeconds=0
    ).get("Messages", [])
    return messages


def bodies(messages: list[dict[str, Any]]) -> list[str]:
    return [m["Body"] for m in messages]


def hide(sqs: Any, url: str, message: dict[str, Any], seconds: int) -> None:
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=seconds)


def test_a_group_in_flight_is_handed_to_no_other_receive_until_it_is_deleted(sqs: Any, fifo_queue: Any) -> None:
    url = fifo_queue()
    send(sqs, url, "a", "a1", "a2", "a3")
    send(sqs, url, "b", "b1")
    # One receive may bring several of a group, in order
    first = receive(sqs, url, most=2)
    assert bodies(first) == ["a1", "a2"]
    # While they are in flight the group gives nothing more; other groups do
    assert bodies(receive(sqs, url)) == ["b1"]
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"])
    assert receive(sqs, url) == []  # a2 is still in flight
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first[1]["ReceiptHandle"])
    assert bodies(receive(sqs, url)) == ["a3"]


def test_a_head_hidden_for_its_backoff_keeps_its_released_group_behind_it(sqs: Any, fifo_queue: Any) -> None:
    # What our retry relies on when SQS, not our process, holds the rest: a hidden head blocks the group
    url = fifo_queue()
    send(sqs, url, "a", "a1", "a2", "a3")
    head, *rest = receive(sqs, url)
    hide(sqs, url, head, 2)
    for message in rest:
        hide(sqs, url, message, 0)
    assert receive(sqs, url) == []
    time.sleep(2.5)
    assert bodies(receive(sqs, url)) == ["a1", "a2", "a3"]


@lacks("moto", reason="hands out the last of a group's timed-out messages first (it unlocks a group only once it "
       "has seen every one of them visible again)")  # fmt: skip
def test_in_flight_messages_of_a_group_that_time_out_together_come_back_in_order(sqs: Any, fifo_queue: Any) -> None:
    # What a crashed worker leaves behind: several messages of a group in flight, none deleted
    url = fifo_queue()
    send(sqs, url, "a", "a1", "a2", "a3")
    assert bodies(receive(sqs, url, visibility=1)) == ["a1", "a2", "a3"]
    time.sleep(1.5)
    assert bodies(receive(sqs, url)) == ["a1", "a2", "a3"]


@lacks("moto", reason="forgets a deduplication id as soon as its message is deleted")
def test_a_deduplication_id_holds_for_5_minutes_after_its_message_is_deleted(sqs: Any, fifo_queue: Any) -> None:
    # What makes a client's retry after a lost 202 one message: the same id is dropped, even once processed
    url = fifo_queue()
    send(sqs, url, "a", "same")
    [message] = receive(sqs, url)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    send(sqs, url, "a", "same")
    assert receive(sqs, url) == []


def test_a_second_message_with_a_deduplication_id_is_dropped_while_the_first_is_queued(
    sqs: Any, fifo_queue: Any
) -> None:
    url = fifo_queue()
    sqs.send_message(QueueUrl=url, MessageBody="first", MessageGroupId="a", MessageDeduplicationId="d")
    sqs.send_message(QueueUrl=url, MessageBody="second", MessageGroupId="a", MessageDeduplicationId="d")
    assert bodies(receive(sqs, url)) == ["first"]


@lacks("ministack", reason="fails only the bad entry of a SendMessageBatch and takes the rest of its group")
def test_a_failed_batch_entry_lets_no_later_entry_of_its_group_in(sqs: Any, fifo_queue: Any) -> None:
    # AWS fails the entries of a group behind a failed one (moto fails the whole request); our batcher
    # copes with all three, see test_fifo_api
    url = fifo_queue()
    entries = [
        {"Id": str(i), "MessageBody": f"a{i}", "MessageGroupId": "a", "MessageDeduplicationId": f"a{i}"}
        for i in range(3)
    ]
    entries[1]["DelaySeconds"] = 5  # a FIFO queue takes no per-message delay
    with contextlib.suppress(ClientError):  # the whole request refused: nothing of the group got in either
        sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert bodies(receive(sqs, url)) in ([], ["a0"])


@lacks("ministack", reason="lets a FIFO queue dead-letter into a standard queue")
def test_a_fifo_queue_takes_only_a_fifo_dead_letter_queue(sqs: Any, fifo_queue: Any, settings: Settings) -> None:
    standard = sqs.create_queue(QueueName=f"{settings.queue_prefix}_std")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=standard, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    with pytest.raises(ClientError):
        fifo_queue(RedrivePolicy=f'{{"deadLetterTargetArn": "{arn}", "maxReceiveCount": 2}}')


def test_a_message_without_a_group_is_refused_by_a_fifo_queue(sqs: Any, fifo_queue: Any) -> None:
    url = fifo_queue()
    with pytest.raises(ClientError) as refused:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="x")
    assert refused.value.response["Error"]["Code"] == "MissingParameter"
