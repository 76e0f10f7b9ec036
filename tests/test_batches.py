"""The shared batch call and the one SQS error classifier, against a real SQS server."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError, ReadTimeoutError

from queue_manager.settings import Settings
from queue_manager.sqs.batches import call_batch, chunks
from queue_manager.sqs.errors import Fault, classify, classify_exception


def test_a_batch_reports_each_entry_and_a_stale_receipt_as_lost(sqs: Any, settings: Settings) -> None:
    client = sqs
    # Given a queue holding two received messages
    url = client.create_queue(QueueName=settings.queue_prefix + "_batches")["QueueUrl"]
    sent = call_batch(client.send_message_batch, url, [{"MessageBody": "a"}, {"MessageBody": "b"}])
    assert sorted(sent.succeeded) == [0, 1] and sent.failed == []
    received: list[dict[str, Any]] = []
    while len(received) < 2:
        received += client.receive_message(QueueUrl=url, MaxNumberOfMessages=2, WaitTimeSeconds=1).get("Messages", [])
    # When one delete names a real receipt and the other a made-up one
    outcome = call_batch(
        client.delete_message_batch,
        url,
        [{"ReceiptHandle": received[0]["ReceiptHandle"]}, {"ReceiptHandle": "no-such-receipt"}],
    )
    # Then the first is done and the second is a lost receipt, by its index
    assert list(outcome.succeeded) == [0]
    assert [(f.index, f.fault) for f in outcome.failed] == [(1, Fault.LOST_RECEIPT)]


def test_a_batch_of_more_than_ten_is_refused_before_any_request() -> None:
    with pytest.raises(ValueError, match="1 to 10 entries, not 11"):
        call_batch(lambda **_: {}, "url", [{}] * 11)


def test_an_entry_sqs_does_not_answer_has_an_unknown_outcome() -> None:
    outcome = call_batch(lambda **_: {"Successful": [{"Id": "0"}]}, "url", [{}, {}])
    assert [(f.index, f.fault) for f in outcome.failed] == [(1, Fault.UNKNOWN_OUTCOME)]


def test_chunks_keep_order_and_both_limits() -> None:
    assert list(chunks([1] * 23)) == [list(range(10)), list(range(10, 20)), [20, 21, 22]]
    assert list(chunks([600, 600, 100, 900], max_bytes=1000)) == [[0], [1, 2], [3]]


@pytest.mark.parametrize(
    ("code", "status", "sender_fault", "fault"),
    [
        ("ThrottlingException", 400, True, Fault.TRANSIENT),
        ("InternalError", 500, False, Fault.TRANSIENT),
        ("Whatever", 503, None, Fault.TRANSIENT),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, True, Fault.MISSING_QUEUE),
        ("ReceiptHandleIsInvalid", 400, True, Fault.LOST_RECEIPT),
        ("InvalidParameterValue", 400, True, Fault.LOST_RECEIPT),
        ("AccessDenied", 403, True, Fault.REFUSED),
        ("AnEntryErrorOnSQSSide", 0, False, Fault.TRANSIENT),
    ],
)
def test_sqs_errors_are_classified_once(code: str, status: int, sender_fault: bool | None, fault: Fault) -> None:
    assert classify(code, status=status, sender_fault=sender_fault) is fault


def test_a_read_timeout_is_an_unknown_outcome_but_a_refused_connection_is_retryable() -> None:
    assert classify_exception(ReadTimeoutError(endpoint_url="http://x")) is Fault.UNKNOWN_OUTCOME
    assert classify_exception(ConnectTimeoutError(endpoint_url="http://x")) is Fault.TRANSIENT
    assert classify_exception(EndpointConnectionError(endpoint_url="http://x")) is Fault.TRANSIENT
    assert not Fault.UNKNOWN_OUTCOME.retryable and Fault.TRANSIENT.retryable
    denied = ClientError({"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Send")
    assert classify_exception(denied) is Fault.REFUSED
