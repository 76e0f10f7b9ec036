"""Large messages on the API's side: body limits, the bound on large bodies in memory, and the upload before a send.

The bucket, the wire format and the upload itself are `queue_manager.payloads`; this module holds
what only the API needs. It imports nothing of the API (keys and sender import it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

from botocore.exceptions import ClientError

from queue_manager.payloads.offload import Offloader
from queue_manager.settings import Settings
from queue_manager.sqs.errors import SQSOutcomeUnknown
from queue_manager.sqs.sending import SendResult

logger = logging.getLogger(__name__)

#: A body above this many bytes is large: it waits for one of QM_PAYLOAD_CONCURRENCY turns.
LARGE_BODY_BYTES = 1024 * 1024


def message_body_limit(settings: Settings, default_bytes: int) -> int:
    """The largest body of POST /messages: QM_MAX_MESSAGE_BYTES with S3, else what fits in SQS."""
    return max(settings.max_message_bytes, default_bytes) if settings.payload_bucket else default_bytes


def batch_body_limit(settings: Settings, default_bytes: int) -> int:
    """The largest body of POST /messages/batch: with S3, room for one message of QM_MAX_MESSAGE_BYTES too."""
    return max(settings.max_message_bytes, default_bytes) if settings.payload_bucket else default_bytes


class LargeBodies:
    """Lets `concurrency` large request bodies be read, encoded and uploaded at once; the rest wait their turn.

    Each holds several copies of itself while it is handled (the bytes read, the parsed document,
    Dramatiq's encoding and its base64): the bound keeps 64 clients posting 5 MiB each from taking
    64 times that.
    """

    def __init__(self, concurrency: int) -> None:
        #: 0 takes no turns (large messages off: no body is larger than SQS takes).
        self.concurrency = concurrency
        self._turns = asyncio.Semaphore(concurrency) if concurrency else None

    def turn(self, content_length: int | None) -> _Turn:
        """A turn for a body over LARGE_BODY_BYTES (or of unknown length); a small one goes at once."""
        large = content_length is None or content_length > LARGE_BODY_BYTES
        return _Turn(self._turns if large else None)


class _Turn:
    """`async with`: holds the semaphore, if any, for the block (a plain class: small bodies pay two calls)."""

    __slots__ = ("_semaphore",)

    def __init__(self, semaphore: asyncio.Semaphore | None) -> None:
        self._semaphore = semaphore

    async def __aenter__(self) -> None:
        if self._semaphore is not None:
            await self._semaphore.acquire()

    async def __aexit__(self, *exc: object) -> None:
        if self._semaphore is not None:
            self._semaphore.release()


async def offload_and_send(
    offloader: Offloader,
    executor: Executor,
    submit: Callable[[str, dict[str, Any]], Awaitable[SendResult]],
    message_type: str,
    entry: dict[str, Any],
    outcome: asyncio.Future[SendResult],
) -> None:
    """Upload an entry's body, then send its pointer; `outcome` gets the send's result (or why it failed).

    A send SQS surely did not take has its object deleted (best effort: the bucket's lifecycle rule
    is the backstop); one whose outcome is unknown keeps it (SQS may hold the pointer).
    """
    loop = asyncio.get_running_loop()
    pointed: dict[str, Any] | None = None
    try:
        pointed = await loop.run_in_executor(executor, offloader.offload, message_type, entry)
        del entry  # the body is in S3 now: do not hold it while the send waits
        result = await submit(message_type, pointed)
    except BaseException as exc:  # every waiter must hear of it, whatever it is
        # Refused for sure: SQSUnavailable, SQS's ClientError, or the sender's Overloaded (all but
        # ClientError RuntimeErrors); an unknown outcome or a cancellation keeps the object.
        if isinstance(exc, RuntimeError | ClientError) and not isinstance(exc, SQSOutcomeUnknown):
            _discard(loop, executor, offloader, pointed)
        if not outcome.done():
            outcome.set_exception(exc if isinstance(exc, Exception) else SQSOutcomeUnknown(repr(exc)))
        if not isinstance(exc, Exception):
            raise
        return
    if not result.ok and not result.unknown:
        _discard(loop, executor, offloader, pointed)
    if not outcome.done():
        outcome.set_result(result)


def _discard(
    loop: asyncio.AbstractEventLoop, executor: Executor, offloader: Offloader, pointed: dict[str, Any] | None
) -> None:
    """Delete the object of a send SQS surely refused, without waiting for it."""
    if pointed is None:
        return
    future = loop.run_in_executor(executor, offloader.discard, pointed)
    future.add_done_callback(_log_failure)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.warning("Deleting the payload of a refused message failed: %s.", future.exception())
