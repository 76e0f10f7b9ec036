"""Large messages: the extended clients' wire format and the threshold, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from queue_manager.payloads import wire
from queue_manager.payloads.offload import Offloader, pointed
from queue_manager.payloads.store import PayloadStore
from queue_manager.payloads.wire import Pointer
from queue_manager.sqs import constants


def test_a_pointer_is_written_as_the_python_library_writes_it() -> None:
    pointer = Pointer("bucket", "qm/webhook/id-1", 123)
    assert json.loads(pointer.body()) == [
        "software.amazon.payloadoffloading.PayloadS3Pointer",
        {"s3BucketName": "bucket", "s3Key": "qm/webhook/id-1"},
    ]
    assert pointer.attribute() == {"DataType": "Number", "StringValue": "123"}


@pytest.mark.parametrize(
    ("pointer_class", "attribute"),
    [
        ("software.amazon.payloadoffloading.PayloadS3Pointer", "ExtendedPayloadSize"),
        ("com.amazon.sqs.javamessaging.MessageS3Pointer", "SQSLargePayloadSize"),
    ],
)
def test_both_pointer_classes_and_both_size_attributes_are_read(pointer_class: str, attribute: str) -> None:
    body = json.dumps([pointer_class, {"s3BucketName": "b", "s3Key": "k"}])
    attributes = {attribute: {"DataType": "Number", "StringValue": "4096"}}
    assert wire.parse(body, attributes) == Pointer("b", "k", 4096)


@pytest.mark.parametrize(
    "body",
    [
        "eyJhIjoxfQ==",  # a Dramatiq body: base64
        "[1, 2]",
        '["software.amazon.payloadoffloading.PayloadS3Pointer"]',
        '["some.other.Class", {"s3BucketName": "b", "s3Key": "k"}]',
        '["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "b"}]',
        '["software.amazon.payloadoffloading.PayloadS3Pointer", {"s3BucketName": "", "s3Key": "k"}]',
        "[not json",
    ],
)
def test_anything_else_is_an_ordinary_body(body: str) -> None:
    assert wire.parse(body, {}) is None


def test_sqs_counts_the_body_and_every_attribute_name_type_and_value() -> None:
    entry = {
        "MessageBody": "abcd",
        "MessageAttributes": {
            "qm-type": {"DataType": "String", "StringValue": "log"},
            "n": {"DataType": "Number", "StringValue": "12"},
            "bin": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    }
    assert wire.message_size(entry) == 4 + (7 + 6 + 3) + (1 + 6 + 2) + (3 + 6 + 2)
    assert wire.message_size({"MessageBody": "é"}) == 2  # UTF-8 bytes, not characters


def entry(body_bytes: int) -> dict[str, Any]:
    return {
        "MessageBody": "x" * body_bytes,
        "MessageAttributes": {constants.ATTR_MESSAGE_ID: {"DataType": "String", "StringValue": "id"}},
    }


def test_the_threshold_counts_attributes_and_offloads_only_what_is_over_it() -> None:
    attributes = wire.message_size(entry(0))
    offloader = Offloader(PayloadStore(None, bucket="b", key_prefix="qm"), threshold_bytes=1000)
    assert not offloader.needed(entry(1000 - attributes))
    assert offloader.needed(entry(1001 - attributes))


def test_a_pointed_entry_keeps_its_attributes_and_adds_the_size() -> None:
    original = entry(10)
    result = pointed(original, Pointer("b", "qm/t/id", 10))
    assert wire.parse(result["MessageBody"], result["MessageAttributes"]) == Pointer("b", "qm/t/id", 10)
    assert set(result["MessageAttributes"]) == {constants.ATTR_MESSAGE_ID, constants.ATTR_PAYLOAD_SIZE}
    assert original["MessageBody"] == "x" * 10 and constants.ATTR_PAYLOAD_SIZE not in original["MessageAttributes"]
