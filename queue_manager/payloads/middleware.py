"""Fetch an offloaded body before its actor runs, and hand its object to deletion once the message is acked."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.logging import get_logger
from dramatiq.middleware import SkipMessage

from queue_manager.payloads import wire
from queue_manager.payloads.fetch import ClaimCheck, pointer_of
from queue_manager.payloads.store import PayloadMissing, StorageUnavailable
from queue_manager.sqs import constants
from queue_manager.sqs.message import UndecodableBody
from queue_manager.sqs.message import attempt as attempt_of

#: The backoff of a message whose object S3 could not serve now (not missing: unreachable), per attempt.
STORAGE_RETRY_MS = 5_000

#: The longest such backoff.
MAX_STORAGE_RETRY_MS = 300_000


class Payloads(dramatiq.Middleware):
    """Swaps a stand-in for the message its S3 object holds, on the worker thread, before the actor runs.

    Put it last: the time limit and the metrics have started when it fetches, so the fetch counts
    as the message's processing. An object that is gone or unreadable dead-letters that message
    alone (reason `payload-missing`), keeping its pointer; S3 unreachable retries it after a backoff.

    Parameters:
      claim_check: The process's bucket and acked objects.
    """

    def __init__(self, *, claim_check: ClaimCheck) -> None:
        self.logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.claim_check = claim_check

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        pointer = pointer_of(message)
        if pointer is None or message.failed:
            return
        started = time.monotonic()
        try:
            real = self.claim_check.fetch(pointer)
        except (PayloadMissing, UndecodableBody) as exc:
            self.logger.warning(
                "The payload of message %r cannot be read (%s); dead-lettering it.", message.message_id, exc
            )
            message.options[constants.DEAD_LETTER_REASON_OPTION] = f"{constants.PAYLOAD_MISSING_REASON}: {exc}"
            message.fail()
            raise SkipMessage(str(exc)) from None
        except StorageUnavailable as exc:
            delay_ms = min(STORAGE_RETRY_MS * attempt_of(message), MAX_STORAGE_RETRY_MS)
            self.logger.warning(
                "S3 could not serve the payload of message %r (%s); retrying in %d ms.",
                message.message_id,
                exc,
                delay_ms,
            )
            message.options[constants.RETRY_DELAY_OPTION] = delay_ms
            message.fail()
            raise SkipMessage(str(exc)) from None
        message._message = real
        self.logger.debug(
            "Fetched the payload of message %r (%s bytes) in %.1f ms.",
            real.message_id,
            pointer.size_bytes,
            (time.monotonic() - started) * 1000,
        )

    def before_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        body: str = getattr(message, "sqs_body", "")
        pointer = wire.parse(body, getattr(message, "sqs_attributes", None)) if body.startswith("[") else None
        if pointer is not None:
            self.claim_check.acked(message.sqs_queue_url, message.sqs_receipt_handle, pointer)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.claim_check.close()
