"""The worker's half: a stand-in for an offloaded message until its body is fetched, and deletes after acks.

The receive does not fetch (it would hold up every message of the receive, and a missing object
would fail them all): an offloaded message is handed out as a stand-in that names its actor and
carries its pointer; the `Payloads` middleware fetches and swaps in the real message on the worker
thread, inside the actor's time limit. Its object is deleted once the DeleteMessageBatch that acked
the message succeeded (never on a dead letter: that keeps the pointer, and so the object).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import dramatiq

from queue_manager.payloads import wire
from queue_manager.payloads.store import PayloadStore
from queue_manager.payloads.wire import Pointer
from queue_manager.sqs import constants
from queue_manager.sqs.message import decode

logger = logging.getLogger(__name__)

#: The message option a stand-in carries its pointer in (`[bucket, key, size]`); the real message has none.
POINTER_OPTION = "qm_payload_pointer"

#: Acked messages whose DeleteMessageBatch has not answered yet, at most (the oldest are forgotten beyond).
MAX_AWAITING_DELETE = 100_000

#: How long the deleting thread gathers objects into one DeleteObjects request.
DELETE_GATHER_SECONDS = 0.2


def stand_in(
    pointer: Pointer,
    *,
    queue_name: str,
    attributes: dict[str, Any],
    system_attributes: dict[str, Any],
    sqs_message_id: str,
) -> dramatiq.Message[Any]:
    """The message handed out for an offloaded body until it is fetched.

    Its actor is the type the message says (`qm-type`), else its queue's (a type's queue and actor
    share its name); its id is `qm-message-id`, else SQS's id; its time is SQS's SentTimestamp.
    """
    type_attr = attributes.get(constants.ATTR_TYPE, {}).get("StringValue")
    id_attr = attributes.get(constants.ATTR_MESSAGE_ID, {}).get("StringValue")
    try:
        sent_ms = int(system_attributes.get("SentTimestamp", 0)) or int(time.time() * 1000)
    except (TypeError, ValueError):
        sent_ms = int(time.time() * 1000)
    options: dict[str, Any] = {POINTER_OPTION: [pointer.bucket, pointer.key, pointer.size_bytes]}
    group = system_attributes.get("MessageGroupId")
    if group:
        options[constants.GROUP_ID_OPTION] = group
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=str(type_attr or queue_name),
        args=(),
        kwargs={},
        options=options,
        message_id=str(id_attr or sqs_message_id),
        message_timestamp=sent_ms,
    )


def pointer_of(message: dramatiq.Message[Any] | dramatiq.MessageProxy) -> Pointer | None:
    """The pointer a stand-in carries, or None for a message that is not one (or no longer)."""
    raw = message.options.get(POINTER_OPTION)
    if not isinstance(raw, list) or len(raw) != 3:
        return None
    return Pointer(str(raw[0]), str(raw[1]), raw[2])


class ClaimCheck:
    """What a consumer and the middleware of one worker process share: the bucket, and the acked objects.

    Parameters:
      store: The bucket (objects are read from whichever bucket a pointer names).
      delete_after_ack: Whether an object is deleted once its message's delete succeeded.
    """

    def __init__(self, store: PayloadStore, *, delete_after_ack: bool = True) -> None:
        self.store = store
        self.delete_after_ack = delete_after_ack
        #: (queue URL, receipt handle) of acked messages, and their objects, until SQS deletes them.
        self._awaiting: OrderedDict[tuple[str, str], Pointer] = OrderedDict()
        self._lock = threading.Lock()
        self._deletes: queue.Queue[Pointer | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def decode(
        self,
        queue_name: str,
        body: str,
        attributes: dict[str, Any],
        system_attributes: dict[str, Any],
        sqs_message_id: str,
    ) -> dramatiq.Message[Any]:
        """The message a body holds: decoded, or a stand-in for an offloaded one. Raises UndecodableBody."""
        pointer = wire.parse(body, attributes)
        if pointer is None:
            return decode(body)
        return stand_in(
            pointer,
            queue_name=queue_name,
            attributes=attributes,
            system_attributes=system_attributes,
            sqs_message_id=sqs_message_id,
        )

    def fetch(self, pointer: Pointer) -> dramatiq.Message[Any]:
        """The message an offloaded body holds. Raises PayloadMissing, StorageUnavailable or UndecodableBody."""
        # From the object's bytes: a str copy of a large body would be one more copy per thread.
        return decode(self.store.get_bytes(pointer))

    def acked(self, queue_url: str, receipt_handle: str, pointer: Pointer) -> None:
        """Remember an acked message's object: it is deleted once SQS confirms the message's delete.

        Only an object of our own bucket: one a pointer names elsewhere is read, never deleted here.
        """
        if not self.delete_after_ack or pointer.bucket != self.store.bucket:
            return
        with self._lock:
            self._awaiting[(queue_url, receipt_handle)] = pointer
            while len(self._awaiting) > MAX_AWAITING_DELETE:
                self._awaiting.popitem(last=False)

    def deleted(self, queue_url: str, receipt_handles: Iterable[str]) -> None:
        """SQS deleted these messages (a DeleteMessageBatch's successes): their objects may go now."""
        with self._lock:
            if not self._awaiting:
                return
            pointers = [p for h in receipt_handles if (p := self._awaiting.pop((queue_url, h), None)) is not None]
        if not pointers:
            return
        self._ensure_thread()
        for pointer in pointers:
            self._deletes.put(pointer)

    def close(self, timeout_seconds: float = 5.0) -> None:
        """Delete what is waiting, then stop the deleting thread."""
        if self._thread is None:
            return
        self._deletes.put(None)
        self._thread.join(timeout_seconds)
        self._thread = None

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="qm-payload-deletes", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        # Deletes run here, never on the acks' threads: an S3 call must not delay an ack.
        while True:
            first = self._deletes.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + DELETE_GATHER_SECONDS
            stop = False
            while (left := deadline - time.monotonic()) > 0:
                try:
                    item = self._deletes.get(timeout=left)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                self.store.delete(batch)
            except Exception:  # the thread must outlive any one failure; the lifecycle rule is the backstop
                logger.exception("Deleting %d payload object(s) failed unexpectedly.", len(batch))
            if stop:
                return
