"""Large messages through S3, end to end: the real `qm-api` and `dramatiq actors`, SQS and S3 on the test server."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import dramatiq
import pytest

from queue_manager.payloads import wire
from queue_manager.settings import Settings
from queue_manager.sqs import constants
from tests.conftest import Proc, Receiver
from tests.support import drain, free_port, post_json, queue_depth, wait_for

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@pytest.fixture
def s3(sqs_env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=sqs_env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any, settings: Settings) -> Iterator[str]:
    """A bucket of this test's own, emptied and deleted afterwards."""
    name = f"{settings.queue_prefix}-payloads"
    s3.create_bucket(Bucket=name)
    yield name
    for item in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


@pytest.fixture
def payload_env(bucket: str) -> dict[str, str]:
    return {"QM_PAYLOAD_BUCKET": bucket}


def objects(s3: Any, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def webhook(url: str, body: Any) -> dict[str, Any]:
    return {"type": "webhook", "payload": {"url": url, "body": body}}


def big(n_bytes: int, tag: str = "x") -> str:
    return tag * n_bytes


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_a_5_mib_message_is_delivered_whole_and_its_object_deleted_after_its_ack(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    payload_env: dict[str, str],
    s3: Any,
    bucket: str,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given the API and a worker with large messages on, and no worker running yet
    _, api = api_process(env=payload_env)
    # When a 5 MiB webhook is posted
    status, answer = post_json(api + "/messages", webhook(receiver.url("/big"), {"blob": big(5 * MIB)}))
    assert status == 202, answer
    # Then SQS holds a pointer in the Python extended client's format, and S3 the body SQS would have carried
    queued = drain(sqs, settings.queue_name("webhook"))
    assert len(queued) == 1
    pointer = wire.parse(queued[0]["Body"], queued[0]["MessageAttributes"])
    assert json.loads(queued[0]["Body"])[0] == "software.amazon.payloadoffloading.PayloadS3Pointer"
    assert pointer is not None and pointer.bucket == bucket
    assert pointer.key == f"{settings.queue_prefix}/webhook/{answer['id']}"
    stored = s3.get_object(Bucket=bucket, Key=pointer.key)["Body"].read()
    assert pointer.size_bytes == len(stored)
    assert queued[0]["MessageAttributes"][constants.ATTR_PAYLOAD_SIZE]["DataType"] == "Number"
    message = json.loads(base64.b64decode(stored))
    assert message["message_id"] == answer["id"] and len(message["args"][0]["body"]["blob"]) == 5 * MIB
    sqs.change_message_visibility(
        QueueUrl=sqs.get_queue_url(QueueName=settings.queue_name("webhook"))["QueueUrl"],
        ReceiptHandle=queued[0]["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    # When a worker runs
    worker_process(env=payload_env)
    # Then the receiver gets the whole body, and the object is deleted once the message's delete went through
    wait_for(lambda: receiver.to("/big"), timeout=60, what="the delivery")
    assert receiver.to("/big")[0].body == {"blob": big(5 * MIB)}
    wait_for(lambda: objects(s3, bucket) == [], timeout=20, what="the object's delete after the ack")
    assert queue_depth(sqs, settings.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_batch_offloads_what_is_over_the_threshold_and_sends_the_rest_as_it_is(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    payload_env: dict[str, str],
    s3: Any,
    bucket: str,
) -> None:
    # Given the API and a worker with large messages on
    _, api = api_process(env=payload_env)
    worker_process(env=payload_env)
    # When a batch of one 5 MiB message, two of 600 KB (together past a batch's 1 MiB) and three small ones is posted
    bodies = [{"blob": big(5 * MIB, "a")}, {"blob": big(600_000, "b")}, {"blob": big(600_000, "c")}]
    bodies += [{"n": i} for i in range(3)]
    status, answer = post_json(
        api + "/messages/batch", {"messages": [webhook(receiver.url("/batch"), b) for b in bodies]}
    )
    # Then every entry is accepted and delivered whole
    assert status == 202, answer
    assert [r["status"] for r in answer["results"]] == [202] * 6
    wait_for(lambda: len(receiver.to("/batch")) >= 6, timeout=60, what="six deliveries")
    assert sorted(json.dumps(r.body) for r in receiver.to("/batch")) == sorted(json.dumps(b) for b in bodies)
    wait_for(lambda: objects(s3, bucket) == [], timeout=20, what="the object's delete after the ack")


def test_a_message_exactly_at_the_threshold_goes_as_it_is_and_one_byte_over_goes_through_s3(
    broker: Callable[..., Any], settings: Settings, bucket: str, sqs: Any, s3: Any
) -> None:
    # Given a broker with large messages on and the default threshold (1 MiB, attributes counted), and
    # one whose threshold is a byte less
    at_default = broker(payload_bucket=bucket)
    threshold = settings.payload_threshold_bytes
    assert threshold == constants.MAX_MESSAGE_SIZE_BYTES
    a_byte_less = broker(payload_bucket=bucket, payload_threshold_bytes=threshold - 1)
    for sending in (at_default, a_byte_less):
        sending.declare_queue("sizes")

    def message(actor: str, pad: int) -> dramatiq.Message[Any]:
        return dramatiq.Message(queue_name="sizes", actor_name=actor, args=("p" * pad,), kwargs={}, options={})

    # And an actor name and padding that make a message exactly the threshold: body (base64, 4 bytes
    # per 3) and attributes, as SQS counts them
    for length in range(1, 13):
        actor = "s" * length
        empty = wire.message_size(at_default.build_entry(message(actor, 0), None))
        if (threshold - empty) % 4 == 0:
            pad = (threshold - empty) // 4 * 3
            break
    exact, over = message(actor, pad), message(actor, pad)
    assert wire.message_size(at_default.build_entry(exact, None)) == threshold
    assert wire.message_size(a_byte_less.build_entry(over, None)) == threshold
    assert a_byte_less.offloader is not None and a_byte_less.offloader.threshold_bytes == threshold - 1
    # When one is sent with the default threshold, the other with a byte less (it is one byte over)
    at_default.enqueue(exact)
    a_byte_less.enqueue(over)
    # Then SQS took the first whole, 1 MiB with its attributes, and the second as a pointer to S3
    queued = {
        m["MessageAttributes"][constants.ATTR_MESSAGE_ID]["StringValue"]: m
        for m in drain(sqs, settings.queue_name("sizes"))
    }
    assert set(queued) == {exact.message_id, over.message_id}
    assert wire.parse(queued[exact.message_id]["Body"]) is None
    assert constants.ATTR_PAYLOAD_SIZE not in queued[exact.message_id]["MessageAttributes"]
    assert wire.parse(queued[over.message_id]["Body"]) is not None
    assert objects(s3, bucket) == [f"{settings.queue_prefix}/sizes/{over.message_id}"]


def test_a_fifo_type_offloads_and_keeps_its_group_order(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    payload_env: dict[str, str],
    s3: Any,
    bucket: str,
) -> None:
    # Given the API and a worker with large messages on
    _, api = api_process(env=payload_env)
    worker_process(env=payload_env)
    # When a group of the FIFO type gets a small, a 2 MiB and a small message, in that order
    bodies = [{"n": 0}, {"n": 1, "blob": big(2 * MIB)}, {"n": 2}]
    for body in bodies:
        envelope = {"type": "ordered", "group_id": "g1", "payload": {"url": receiver.url("/fifo"), "body": body}}
        status, answer = post_json(api + "/messages", envelope)
        assert status == 202, answer
    # Then they arrive in that order, the large one whole, and its object goes after its ack
    wait_for(lambda: len(receiver.to("/fifo")) >= 3, timeout=60, what="three deliveries")
    assert [r.body for r in receiver.to("/fifo")] == bodies
    wait_for(lambda: objects(s3, bucket) == [], timeout=20, what="the object's delete after the ack")


def test_the_same_message_sent_twice_writes_one_object(
    api_process: Callable[..., tuple[Proc, str]],
    payload_env: dict[str, str],
    s3: Any,
    bucket: str,
    settings: Settings,
    tmp_path: Any,
) -> None:
    # Given two API processes that share no idempotency store (the worst case: each sends the message)
    _, first = api_process(env={**payload_env, "QM_STATE_DIR": str(tmp_path / "a")})
    _, second = api_process(env={**payload_env, "QM_STATE_DIR": str(tmp_path / "b")})
    envelope = {**webhook("http://127.0.0.1:9/x", {"blob": big(2 * MIB)}), "idempotency_key": "order-42"}
    # When the same keyed message is posted to both, and retried on the first
    answers = [post_json(url + "/messages", envelope) for url in (first, second, first)]
    # Then all are accepted with one message id, and S3 holds one object for it
    assert [status for status, _ in answers] == [202, 202, 202]
    ids = {answer["id"] for _, answer in answers}
    assert len(ids) == 1
    assert objects(s3, bucket) == [f"{settings.queue_prefix}/webhook/{ids.pop()}"]


def test_s3_unreachable_is_a_503_and_nothing_reaches_sqs(
    api_process: Callable[..., tuple[Proc, str]],
    payload_env: dict[str, str],
    settings: Settings,
    sqs: Any,
) -> None:
    # Given the API whose S3 endpoint is a port nobody listens on
    dead = f"http://127.0.0.1:{free_port()}"
    _, api = api_process(env={**payload_env, "AWS_ENDPOINT_URL_S3": dead, "QM_SQS_TIMEOUT_SECONDS": "1"})
    # When a 2 MiB message is posted
    status, answer = post_json(api + "/messages", webhook("http://127.0.0.1:9/x", {"blob": big(2 * MIB)}))
    # Then the answer is 503 storage-unavailable, and SQS got nothing
    assert status == 503, answer
    assert answer["type"] == "urn:queue-manager:problem:storage-unavailable"
    assert queue_depth(sqs, settings.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0}
    # And a small message still goes, S3 or not
    status, answer = post_json(api + "/messages", webhook("http://127.0.0.1:9/x", {"n": 1}))
    assert status == 202, answer


def test_a_body_over_the_limit_is_refused_and_an_invalid_large_one_is_refused_before_any_upload(
    api_process: Callable[..., tuple[Proc, str]],
    payload_env: dict[str, str],
    s3: Any,
    bucket: str,
) -> None:
    # Given the API with large messages on and a 3 MiB limit
    _, api = api_process(env={**payload_env, "QM_MAX_MESSAGE_BYTES": str(3 * MIB)})
    # When a 4 MiB message is posted, and then a 2 MiB one that breaks its schema
    status, too_large = post_json(api + "/messages", webhook("http://127.0.0.1:9/x", {"blob": big(4 * MIB)}))
    status_invalid, invalid = post_json(
        api + "/messages", {"type": "webhook", "payload": {"url": "ftp://nowhere", "body": big(2 * MIB)}}
    )
    # Then the first is a 413 naming the setting, the second a 422, and S3 holds nothing
    assert status == 413 and "QM_MAX_MESSAGE_BYTES" in too_large["detail"]
    assert status_invalid == 422, invalid
    assert objects(s3, bucket) == []


def test_a_missing_object_dead_letters_its_message_alone_and_a_redrive_delivers_it_once_restored(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    payload_env: dict[str, str],
    s3: Any,
    bucket: str,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given two large messages and a small one queued, no worker running
    _, api = api_process(env=payload_env)
    ids = []
    for body in ({"n": "lost", "blob": big(2 * MIB)}, {"n": "kept", "blob": big(2 * MIB)}, {"n": "small"}):
        status, answer = post_json(api + "/messages", webhook(receiver.url("/dl"), body))
        assert status == 202, answer
        ids.append(answer["id"])
    # And the first one's object deleted behind its back (kept aside, to restore it later)
    lost_key = f"{settings.queue_prefix}/webhook/{ids[0]}"
    kept_aside = s3.get_object(Bucket=bucket, Key=lost_key)["Body"].read()
    s3.delete_object(Bucket=bucket, Key=lost_key)
    # When a worker runs
    worker_process(env=payload_env)
    # Then the other two are delivered, and the first is dead-lettered with reason payload-missing
    wait_for(lambda: len(receiver.to("/dl")) >= 2, timeout=60, what="two deliveries")
    dlq = settings.queue_name("webhook") + "_dlq"
    wait_for(lambda: queue_depth(sqs, dlq)["visible"] == 1, timeout=30, what="the dead letter")
    assert sorted(r.body["n"] for r in receiver.to("/dl")) == ["kept", "small"]
    # And the listing shows its pointer's size and where to download it
    status, listing = get_json(api + "/queues/webhook/dead-letters")
    assert status == 200, listing
    [shown] = listing["messages"]
    assert shown["id"] == ids[0] and shown["error"].startswith("payload-missing")
    assert shown["payload_bytes"] == len(kept_aside)
    assert shown["payload_url"] == f"/queues/webhook/dead-letters/{ids[0]}/payload"
    # When the object is restored: it can be downloaded from the listing's link
    s3.put_object(Bucket=bucket, Key=lost_key, Body=kept_aside)
    status, downloaded = get_json(api + shown["payload_url"])
    assert status == 200 and downloaded["message_id"] == ids[0]
    # And a redrive sends the pointer back, and the worker delivers it whole
    status, moved = post_json(api + "/queues/webhook/redrive", {})
    assert status == 200, moved
    wait_for(lambda: len(receiver.to("/dl")) >= 3, timeout=60, what="the redriven delivery")
    assert sorted(r.body["n"] for r in receiver.to("/dl")) == ["kept", "lost", "small"]
    wait_for(lambda: objects(s3, bucket) == [], timeout=20, what="the objects' deletes after the acks")


def _extended_session_class() -> Any:
    """The extended client library's session class, without its side effect on this process.

    Importing `sqs_extended_client` replaces `boto3.Session` (and the default session) with its own, so
    every SQS client made afterwards in the process, the tests' own included, would resolve S3 pointers
    when it receives: a later test then read a pointer message as its whole body. The import's
    replacements are undone at once; the class itself is all the tests use.
    """
    saved = (boto3.session.Session, boto3.Session, boto3.DEFAULT_SESSION)
    try:
        from sqs_extended_client import SQSExtendedClientSession
    finally:
        boto3.session.Session, boto3.Session, boto3.DEFAULT_SESSION = saved
    return SQSExtendedClientSession


def extended_client(sqs_env: dict[str, str], bucket: str, *, legacy: bool = False) -> Any:
    """An SQS client of AWS's Python extended client library (`amazon-sqs-extended-client`) on the test server."""
    client = _extended_session_class()(region_name="us-east-1").client(
        "sqs", endpoint_url=sqs_env["AWS_ENDPOINT_URL_SQS"]
    )
    client.large_payload_support = bucket
    client.use_legacy_attribute = legacy  # the Java library's older names: SQSLargePayloadSize, MessageS3Pointer
    client.delete_payload_from_s3 = True
    return client


@pytest.mark.parametrize("legacy", [False, True], ids=["current-names", "legacy-java-names"])
def test_a_message_the_extended_client_library_offloaded_is_processed_by_our_workers(
    broker: Callable[..., Any],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    payload_env: dict[str, str],
    sqs_env: dict[str, str],
    s3: Any,
    bucket: str,
    settings: Settings,
    sqs: Any,
    legacy: bool,
) -> None:
    # Given the type's queues, and a worker with large messages on
    declaring = broker()
    declaring.declare_queue("webhook")
    url = declaring.ensure_queue("webhook").url
    worker_process(env=payload_env)
    # When a producer on AWS's extended client library sends a 2 MiB Dramatiq message to the queue
    producer = extended_client(sqs_env, bucket, legacy=legacy)
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="webhook",
        actor_name="webhook",
        args=({"url": receiver.url("/interop"), "body": {"blob": big(2 * MIB)}},),
        kwargs={},
        options={},
    )
    producer.send_message(QueueUrl=url, MessageBody=base64.b64encode(message.encode()).decode())
    # (it really went through S3, in the library's own format)
    assert len(objects(s3, bucket)) == 1
    # Then our worker delivers it whole, and deletes the library's object after the ack
    wait_for(lambda: receiver.to("/interop"), timeout=60, what="the delivery")
    [delivered] = receiver.to("/interop")
    assert delivered.body == {"blob": big(2 * MIB)}
    assert delivered.headers["Idempotency-Key"] == message.message_id
    wait_for(lambda: objects(s3, bucket) == [], timeout=20, what="the object's delete after the ack")


def test_a_message_our_api_offloaded_is_read_whole_by_the_extended_client_library(
    api_process: Callable[..., tuple[Proc, str]],
    payload_env: dict[str, str],
    sqs_env: dict[str, str],
    s3: Any,
    bucket: str,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given the API with large messages on, and a 3 MiB message posted to it
    _, api = api_process(env=payload_env)
    status, answer = post_json(api + "/messages", webhook("http://127.0.0.1:9/x", {"blob": big(3 * MIB)}))
    assert status == 202, answer
    # When a consumer on AWS's extended client library receives it
    consumer = extended_client(sqs_env, bucket)
    url = sqs.get_queue_url(QueueName=settings.queue_name("webhook"))["QueueUrl"]
    received = wait_for(
        lambda: consumer.receive_message(QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1).get(
            "Messages"
        ),
        timeout=20,
        what="the library's receive",
    )
    # Then it gets the body SQS would have carried: base64 of the Dramatiq message, whole
    [got] = received
    message = json.loads(base64.b64decode(got["Body"]))
    assert message["message_id"] == answer["id"]
    assert message["args"][0]["body"] == {"blob": big(3 * MIB)}
    # And the library's delete removes the object; the message goes with its real receipt handle (the
    # library's own delete recovers it with split('-'), which breaks on a handle holding a '-', as this
    # server's do)
    consumer.delete_message_from_s3(got["ReceiptHandle"])
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got["ReceiptHandle"].split("-..s3Key..-")[-1])
    assert objects(s3, bucket) == []
    assert queue_depth(sqs, settings.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_the_lifecycle_rule_covers_the_prefix_the_iam_policy_allows_and_the_server_takes_it(
    s3: Any, bucket: str
) -> None:
    # Given the documented lifecycle rule and IAM policy
    from tests.conftest import ROOT

    rule = json.loads((ROOT / "deploy" / "s3-lifecycle.json").read_text())
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    [s3_statement] = [s for s in policy["Statement"] if any(a.startswith("s3:") for a in s["Action"])]
    # Then the rule expires what the policy lets queue-manager write (the default bucket and prefix)
    prefix = rule["Rules"][0]["Filter"]["Prefix"]
    assert s3_statement["Resource"] == f"arn:aws:s3:::qm-payloads/{prefix}*"
    assert rule["Rules"][0]["Expiration"]["Days"] > 2 * constants.MAX_RETENTION_SECONDS // 86400
    # And S3 accepts it as written
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration=rule)
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"][0]["Filter"]["Prefix"] == prefix


def test_a_worker_that_cannot_reach_s3_retries_the_message_and_another_delivers_it(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    payload_env: dict[str, str],
    settings: Settings,
    sqs: Any,
) -> None:
    # Given a 2 MiB message queued, and a worker whose S3 endpoint is a port nobody listens on
    _, api = api_process(env=payload_env)
    status, answer = post_json(api + "/messages", webhook(receiver.url("/later"), {"blob": big(2 * MIB)}))
    assert status == 202, answer
    dead = f"http://127.0.0.1:{free_port()}"
    cut_off = worker_process(env={**payload_env, "AWS_ENDPOINT_URL_S3": dead, "QM_SQS_TIMEOUT_SECONDS": "1"})
    # When it tries the message
    wait_for(lambda: "S3 could not serve the payload" in cut_off.output(), timeout=30, what="the failed fetch")
    cut_off.kill_all()
    cut_off.wait(timeout=10)
    # Then the message was put back for a retry, not dead-lettered, and a worker that reaches S3 delivers it
    assert queue_depth(sqs, settings.queue_name("webhook") + "_dlq")["visible"] == 0
    worker_process(env=payload_env)
    wait_for(lambda: receiver.to("/later"), timeout=60, what="the delivery")
    assert receiver.to("/later")[0].body == {"blob": big(2 * MIB)}


def test_with_a_kms_key_objects_are_written_with_sse_kms(
    broker: Callable[..., Any], settings: Settings, bucket: str, sqs: Any, s3: Any
) -> None:
    # Given a broker with large messages on and QM_PAYLOAD_KMS_KEY_ID set
    sending = broker(payload_bucket=bucket, payload_kms_key_id="alias/qm-payloads")
    sending.declare_queue("kms")
    # When a 2 MiB message is sent
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="kms", actor_name="kms", args=(big(2 * MIB),), kwargs={}, options={}
    )
    sending.enqueue(message)
    # Then its object was written with SSE-KMS under that key
    head = s3.head_object(Bucket=bucket, Key=f"{settings.queue_prefix}/kms/{message.message_id}")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith("alias/qm-payloads")


def test_an_object_in_another_bucket_is_read_and_left_in_place(
    broker: Callable[..., Any],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    payload_env: dict[str, str],
    sqs_env: dict[str, str],
    s3: Any,
    bucket: str,
    settings: Settings,
) -> None:
    # Given a worker whose bucket is the test's, and a producer on the extended client using another bucket
    other = f"{settings.queue_prefix}-elsewhere"
    s3.create_bucket(Bucket=other)
    declaring = broker()
    declaring.declare_queue("webhook")
    url = declaring.ensure_queue("webhook").url
    worker_process(env=payload_env)
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="webhook",
        actor_name="webhook",
        args=({"url": receiver.url("/elsewhere"), "body": {"blob": big(MIB)}},),
        kwargs={},
        options={},
    )
    extended_client(sqs_env, other).send_message(QueueUrl=url, MessageBody=base64.b64encode(message.encode()).decode())
    # When the worker processes it
    wait_for(lambda: receiver.to("/elsewhere"), timeout=60, what="the delivery")
    # Then it was read whole
    assert receiver.to("/elsewhere")[0].body == {"blob": big(MIB)}
    # And once a later message of our own bucket has had its object deleted after its ack (deletes go
    # in order), the other bucket's object is still there: only our own bucket's are deleted
    later = message.copy(message_id="later-" + message.message_id)
    extended_client(sqs_env, bucket).send_message(QueueUrl=url, MessageBody=base64.b64encode(later.encode()).decode())
    wait_for(lambda: len(receiver.to("/elsewhere")) == 2, timeout=60, what="the later delivery")
    wait_for(lambda: objects(s3, bucket) == [], timeout=20, what="our own object's delete after the ack")
    assert len(objects(s3, other)) == 1
    for key in objects(s3, other):
        s3.delete_object(Bucket=other, Key=key)
    s3.delete_bucket(Bucket=other)


def test_the_extended_client_library_leaves_the_processs_other_sqs_clients_alone(sqs_env: dict[str, str]) -> None:
    # Given an extended client made in this process (its import replaces boto3's Session)
    extended = extended_client(sqs_env, "any-bucket")

    # Then it has the library's receive, and a client made afterwards the usual way has not
    plain = boto3.client("sqs", endpoint_url=sqs_env["AWS_ENDPOINT_URL_SQS"], region_name="us-east-1")
    assert hasattr(extended, "large_payload_support")
    assert not hasattr(plain, "large_payload_support")
    assert boto3.Session is boto3.session.Session and not hasattr(boto3.session.Session(), "add_client_attributes")
