"""The sender's half: which entries go through S3, the upload, the pointer entry, and the object of a failed send."""

from __future__ import annotations

import logging
from typing import Any

from queue_manager.payloads import wire
from queue_manager.payloads.store import PayloadStore
from queue_manager.payloads.wire import Pointer
from queue_manager.sqs import constants

logger = logging.getLogger(__name__)


class Offloader:
    """Moves the bodies of entries over `threshold_bytes` (body and attributes, as SQS counts) to S3.

    Parameters:
      store: The bucket.
      threshold_bytes: The largest SQS message (body and attributes) sent as it is.
    """

    def __init__(self, store: PayloadStore, *, threshold_bytes: int) -> None:
        self.store = store
        self.threshold_bytes = threshold_bytes

    def needed(self, entry: dict[str, Any]) -> bool:
        """Whether an entry is over the threshold."""
        return wire.message_size(entry) > self.threshold_bytes

    def offload(self, message_type: str, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry with its body in S3 and a pointer in its place (blocking). Raises StorageUnavailable.

        The key is the message's own (type and id), so a re-send of the same message overwrites the
        same object instead of leaving another behind.
        """
        message_id = str(entry["MessageAttributes"][constants.ATTR_MESSAGE_ID]["StringValue"])
        pointer = self.store.put(self.store.key(message_type, message_id), entry["MessageBody"])
        return pointed(entry, pointer)

    def maybe_offload(self, message_type: str, entry: dict[str, Any]) -> dict[str, Any]:
        """The entry as it goes to SQS: offloaded if over the threshold, else as it is."""
        return self.offload(message_type, entry) if self.needed(entry) else entry

    def discard(self, entry: dict[str, Any]) -> None:
        """Delete the object of an offloaded entry SQS surely did not take (best effort)."""
        pointer = wire.parse(entry["MessageBody"], entry.get("MessageAttributes"))
        if pointer is not None:
            self.store.delete([pointer])
            logger.info("Deleted the payload of a message SQS did not take: s3://%s/%s.", pointer.bucket, pointer.key)


def pointed(entry: dict[str, Any], pointer: Pointer) -> dict[str, Any]:
    """A copy of an entry whose body is the pointer, with the `ExtendedPayloadSize` attribute."""
    attributes = dict(entry.get("MessageAttributes", {}))
    attributes[constants.ATTR_PAYLOAD_SIZE] = pointer.attribute()
    return {**entry, "MessageBody": pointer.body(), "MessageAttributes": attributes}
