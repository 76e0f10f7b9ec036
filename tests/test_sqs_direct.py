"""Direct SQS calls (`queue_manager.sqs.direct`): the same answers and errors as botocore's, on a real server."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

from queue_manager.sqs.direct import DirectSQS
from tests.support import drain, free_port

pytestmark = pytest.mark.api  # the moto pass runs these too: two servers read the direct requests


def _client(url: str, **config: Any) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=1, read_timeout=5, **config),
    )


class _Counted:
    """A botocore client and its DirectSQS, with the requests each made, by action."""

    def __init__(self, url: str, *, retries: bool) -> None:
        self.client = _client(url)
        self.through_botocore: Counter[str] = Counter()
        self.direct: Counter[str] = Counter()
        self.client.meta.events.register(
            "before-call.sqs", lambda model, **_: self.through_botocore.update([model.name])
        )
        self.sqs = DirectSQS(self.client, retries=retries, on_request=lambda action: self.direct.update([action]))


@pytest.fixture
def queue(sqs: Any) -> Iterator[str]:
    url = str(sqs.create_queue(QueueName=f"direct-{uuid.uuid4().hex[:8]}")["QueueUrl"])
    yield url
    sqs.delete_queue(QueueUrl=url)


def test_direct_calls_send_receive_hide_and_delete_as_botocore_does(
    sqs_env: dict[str, str], sqs: Any, queue: str
) -> None:
    # Given a direct client on the test server
    counted = _Counted(sqs_env["AWS_ENDPOINT_URL_SQS"], retries=True)
    direct = counted.sqs
    assert direct.enabled
    attributes = {
        "qm_type": {"DataType": "String", "StringValue": "log"},
        "raw": {"DataType": "Binary", "BinaryValue": b"\x00\xffbytes"},
    }
    # When it sends a batch of three and one message alone
    sent = direct.send_message_batch(
        QueueUrl=queue,
        Entries=[
            {"Id": str(i), "MessageBody": json.dumps({"n": i}), "MessageAttributes": attributes} for i in range(3)
        ],
    )
    one = direct.send_message(QueueUrl=queue, MessageBody='{"n": 3}')
    # Then SQS answered each entry, as botocore's parse of the same answer reads
    assert sorted(ok["Id"] for ok in sent["Successful"]) == ["0", "1", "2"] and not sent.get("Failed")
    assert one["MessageId"] and sent["ResponseMetadata"]["HTTPStatusCode"] == 200
    # And direct receives (the tests' drain, through the direct client) bring the messages with their
    # attributes, binary ones as bytes again
    got = drain(direct, queue.rsplit("/", 1)[-1])
    assert sorted(json.loads(m["Body"])["n"] for m in got) == [0, 1, 2, 3]
    with_attributes = [m for m in got if m.get("MessageAttributes")]
    assert len(with_attributes) == 3
    assert all(m["MessageAttributes"]["raw"]["BinaryValue"] == b"\x00\xffbytes" for m in with_attributes)
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in got)
    # And a hide (visibility 0) and a delete are answered per entry
    first, rest = got[0], got[1:]
    hidden = direct.change_message_visibility_batch(
        QueueUrl=queue, Entries=[{"Id": "0", "ReceiptHandle": first["ReceiptHandle"], "VisibilityTimeout": 0}]
    )
    assert [ok["Id"] for ok in hidden["Successful"]] == ["0"]
    deleted = direct.delete_message_batch(
        QueueUrl=queue, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(rest)]
    )
    assert len(deleted["Successful"]) == 3
    # And the message made visible again comes back to a plain botocore client, received twice
    again = sqs.receive_message(
        QueueUrl=queue, WaitTimeSeconds=2, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    assert again[0]["MessageId"] == first["MessageId"] and again[0]["Attributes"]["ApproximateReceiveCount"] == "2"
    # And every call went directly, each counted once, none through botocore's pipeline
    assert counted.direct["SendMessageBatch"] == 1 and counted.direct["SendMessage"] == 1
    assert counted.direct["ChangeMessageVisibilityBatch"] == 1 and counted.direct["DeleteMessageBatch"] == 1
    assert counted.direct["ReceiveMessage"] >= 1
    # And only the other calls (the drain's GetQueueUrl and GetQueueAttributes) went through botocore
    assert set(counted.through_botocore) <= {"GetQueueUrl", "GetQueueAttributes"}, counted.through_botocore
    assert counted.through_botocore["GetQueueUrl"] == 1


def test_an_error_answer_raises_the_exception_botocore_raises_without_a_second_request(
    sqs_env: dict[str, str], queue: str
) -> None:
    # Given a direct client that does not retry, and a queue that does not exist
    counted = _Counted(sqs_env["AWS_ENDPOINT_URL_SQS"], retries=False)
    missing = queue + "-missing"
    # When it sends there, and botocore's own client does the same
    with pytest.raises(Exception) as direct_error:
        counted.sqs.send_message(QueueUrl=missing, MessageBody="x")
    with pytest.raises(Exception) as botocore_error:
        counted.client.send_message(QueueUrl=missing, MessageBody="x")
    # Then both raised the same exception class with the same error code (what errors.classify reads)
    assert type(direct_error.value) is type(botocore_error.value)
    direct_response: Any = getattr(direct_error.value, "response", {})
    botocore_response: Any = getattr(botocore_error.value, "response", {})
    assert direct_response["Error"]["Code"] == botocore_response["Error"]["Code"]
    assert direct_response["ResponseMetadata"]["HTTPStatusCode"] == 400
    # And the direct call was one request, not retried through botocore
    assert counted.direct["SendMessage"] == 1 and counted.through_botocore["SendMessage"] == 1


def test_a_retrying_client_retries_through_botocore_and_one_that_does_not_raises_at_once(
    sqs_env: dict[str, str],
) -> None:
    # Given direct clients pointed at a port nothing listens on
    url = f"http://127.0.0.1:{free_port()}"
    retrying, single = _Counted(url, retries=True), _Counted(url, retries=False)
    params = {"QueueUrl": url + "/000000000000/q", "MaxNumberOfMessages": 1, "WaitTimeSeconds": 0}
    # When each receives
    with pytest.raises(EndpointConnectionError):
        retrying.sqs.receive_message(**params)
    with pytest.raises(EndpointConnectionError):
        single.sqs.receive_message(**params)
    # Then the retrying one tried directly once, then through botocore (which retries as configured);
    # the other raised botocore's own connection error after its one direct try
    assert retrying.direct["ReceiveMessage"] == 1 and retrying.through_botocore["ReceiveMessage"] == 1
    assert single.direct["ReceiveMessage"] == 1 and not single.through_botocore


class _RefusesDirectRequests(BaseHTTPRequestHandler):
    """Answers a direct request (its User-Agent) with a SerializationException, botocore's with an empty receive."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("User-Agent", "").startswith("queue-manager"):
            status, body = 400, b'{"__type": "com.amazon.coral.service#SerializationException", "message": "no"}'
        else:
            status, body = 200, b"{}"
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_a_server_that_refuses_direct_requests_turns_them_off_and_the_call_still_succeeds(
    sqs_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Given an SQS endpoint that reads botocore's requests but refuses the direct ones as malformed
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RefusesDirectRequests)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        counted = _Counted(f"http://127.0.0.1:{server.server_address[1]}", retries=False)
        params = {"QueueUrl": "http://x/000000000000/q", "MaxNumberOfMessages": 1, "WaitTimeSeconds": 0}
        # When a client that never retries receives, twice
        with caplog.at_level(logging.WARNING, logger="queue_manager.sqs.direct"):
            first = counted.sqs.receive_message(**params)
            second = counted.sqs.receive_message(**params)
    finally:
        server.shutdown()
        server.server_close()
    # Then the refused request was made again through botocore, and direct calls are off for good
    assert first.get("Messages") is None and second.get("Messages") is None
    assert not counted.sqs.enabled
    assert counted.direct["ReceiveMessage"] == 1 and counted.through_botocore["ReceiveMessage"] == 2
    assert [r.getMessage() for r in caplog.records if "refused a direct" in r.getMessage()], caplog.text


def test_an_unsigned_client_makes_every_call_through_botocore(sqs_env: dict[str, str]) -> None:
    # Given a client configured not to sign (anonymous)
    client = _client(sqs_env["AWS_ENDPOINT_URL_SQS"], signature_version=UNSIGNED)
    # Then its direct wrapper makes no call itself: signing is botocore's business there
    assert not DirectSQS(client, retries=True).enabled
