"""The extended clients' wire format: the pointer body, the size attribute, and SQS's count of a message's size.

Written as `amazon-sqs-extended-client` (Python) writes it; read as either it or the Java library
(`amazon-sqs-java-extended-client-lib`, old and new names) writes it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from queue_manager.sqs import constants

#: The attribute names that mark an offloaded message, the one written first.
SIZE_ATTRIBUTES: tuple[str, ...] = (constants.ATTR_PAYLOAD_SIZE, constants.ATTR_LEGACY_PAYLOAD_SIZE)

#: The pointer class names read, the one written first.
POINTER_CLASSES: tuple[str, ...] = (constants.PAYLOAD_POINTER_CLASS, constants.LEGACY_PAYLOAD_POINTER_CLASS)


@dataclasses.dataclass(frozen=True)
class Pointer:
    """Where an offloaded body is: its bucket and key, and its size as the message says (None if unsaid)."""

    bucket: str
    key: str
    size_bytes: int | None = None

    def body(self) -> str:
        """The SQS body that points here, as the Python extended client writes it."""
        return json.dumps([constants.PAYLOAD_POINTER_CLASS, {"s3BucketName": self.bucket, "s3Key": self.key}])

    def attribute(self) -> dict[str, str]:
        """The `ExtendedPayloadSize` message attribute of this pointer."""
        return {"DataType": "Number", "StringValue": str(self.size_bytes or 0)}


def parse(body: str, attributes: Mapping[str, Any] | None = None) -> Pointer | None:
    """The pointer an SQS body holds, or None for an ordinary body.

    A body is a pointer when it is a JSON array of a known pointer class and an object naming the
    bucket and key. The size attribute is read when present (the libraries always write it); a body
    of that shape is taken as a pointer even without it, since a Dramatiq body (base64) never is one.
    """
    if not body.startswith("["):
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not (isinstance(document, list) and len(document) == 2 and document[0] in POINTER_CLASSES):
        return None
    where = document[1]
    if not isinstance(where, dict):
        return None
    bucket, key = where.get("s3BucketName"), where.get("s3Key")
    if not (isinstance(bucket, str) and bucket and isinstance(key, str) and key):
        return None
    return Pointer(bucket, key, size_attribute(attributes or {}))


def size_attribute(attributes: Mapping[str, Any]) -> int | None:
    """The offloaded size a message's attributes state (either name), or None."""
    for name in SIZE_ATTRIBUTES:
        value = attributes.get(name)
        if isinstance(value, Mapping):
            try:
                return int(value.get("StringValue", ""))
            except ValueError:
                return None
    return None


def attributes_size(attributes: Mapping[str, Any]) -> int:
    """The bytes SQS counts for message attributes: each name, data type and value (UTF-8)."""
    total = 0
    for name, value in attributes.items():
        total += len(name.encode())
        total += len(str(value.get("DataType", "")).encode())
        if "StringValue" in value:
            total += len(str(value["StringValue"]).encode())
        if "BinaryValue" in value:
            total += len(value["BinaryValue"])
    return total


def message_size(entry: Mapping[str, Any]) -> int:
    """The bytes SQS counts for a SendMessage entry: its body (UTF-8) and its attributes."""
    body = entry.get("MessageBody", "")
    # A Dramatiq body is base64, ASCII: its length is its size, without encoding megabytes to count them.
    size = len(body) if body.isascii() else len(body.encode())
    return size + attributes_size(entry.get("MessageAttributes", {}))
