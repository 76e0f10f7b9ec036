"""Retries in place: a failed attempt hides the same SQS message for its backoff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dramatiq
from dramatiq.common import compute_backoff
from dramatiq.errors import Retry
from dramatiq.logging import get_logger

from queue_manager.sqs import constants
from queue_manager.sqs.constants import DEAD_LETTER_REASON_OPTION, RETRY_DELAY_OPTION
from queue_manager.sqs.errors import PermanentFailure
from queue_manager.sqs.message import attempt as attempt_of
from queue_manager.state.base import StatusEvents
from queue_manager.state.status import runs_before

#: Retries after the first attempt, unless the actor says otherwise.
DEFAULT_MAX_RETRIES = 5

#: The first retry's backoff, in milliseconds; it doubles with each attempt.
DEFAULT_MIN_BACKOFF_MS = 1_000

#: The longest backoff, in milliseconds: SQS hides a message for at most 12 h from its receipt.
DEFAULT_MAX_BACKOFF_MS = 3_600_000


class RetriesInPlace(dramatiq.Middleware):
    """Retry failed messages by changing their visibility, so SQS keeps one message per job.

    The attempt number is SQS's ApproximateReceiveCount. The retry budget counts runs: a receive
    that a stopping worker handed back unrun is a receive SQS counts, so when a message fails on a
    later receive, the status store (the `started` events of its earlier attempts) says how many
    of them ran. Without a status store, or when it cannot be read, the receive count stands in
    (a hand-back then costs a retry). A message whose retries are spent, whose actor `throws` the
    exception, or that raised PermanentFailure is dead-lettered at once. The queue's redrive policy
    (maxReceiveCount = max_retries + 1 + spare receives) catches the rest, such as a worker that
    crashes on every attempt, whose runs the status store may not have heard of.

    Parameters:
      max_retries: Retries after the first attempt.
      min_backoff: The first retry's backoff in milliseconds.
      max_backoff: The longest backoff in milliseconds (at most 12 h).
      status: The status store to count earlier runs in (None: count receives).
    """

    def __init__(
        self,
        *,
        max_retries: int = DEFAULT_MAX_RETRIES,
        min_backoff: int = DEFAULT_MIN_BACKOFF_MS,
        max_backoff: int = DEFAULT_MAX_BACKOFF_MS,
        status: StatusEvents | None = None,
    ) -> None:
        self.logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.status = status
        self.max_retries = max_retries
        self.min_backoff = min_backoff
        self.max_backoff = min(max_backoff, constants.MAX_VISIBILITY_TIMEOUT_MS)

    @property
    def actor_options(self) -> set[str]:
        return {"max_retries", "min_backoff", "max_backoff", "retry_when", "throws"}

    def _option(self, message: dramatiq.MessageProxy, actor: dramatiq.Actor[Any, Any] | None, name: str) -> Any:
        default = getattr(self, name, None)
        actor_value = actor.options.get(name, default) if actor is not None else default
        return message.options.get(name, actor_value)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None:
            return
        actor = broker.actors.get(message.actor_name)
        attempt = attempt_of(message)
        throws = self._option(message, actor, "throws")
        if isinstance(exception, PermanentFailure) or (throws and isinstance(exception, throws)):
            self._dead_letter(message, f"permanent failure: {type(exception).__name__}: {exception}")
            return
        max_retries = self._option(message, actor, "max_retries")
        retry_when: Callable[[int, BaseException], bool] | None = self._option(message, actor, "retry_when")
        retries_so_far = self._retries_so_far(message, attempt)
        if retry_when is not None:
            give_up = not retry_when(retries_so_far, exception)
        else:
            give_up = max_retries is not None and retries_so_far >= max_retries
        if give_up:
            runs = retries_so_far + 1
            self._dead_letter(
                message, f"retries exhausted after {runs} attempt(s): {type(exception).__name__}: {exception}"
            )
            return
        if isinstance(exception, Retry) and exception.delay is not None:
            delay_ms = int(exception.delay)
        else:
            min_backoff = self._option(message, actor, "min_backoff")
            max_backoff = min(self._option(message, actor, "max_backoff"), constants.MAX_VISIBILITY_TIMEOUT_MS)
            _, delay_ms = compute_backoff(retries_so_far, factor=min_backoff, max_backoff=max_backoff)
        delay_ms = max(0, min(delay_ms, constants.MAX_VISIBILITY_TIMEOUT_MS))
        self.logger.info("Retrying message %r (attempt %d) in %d ms.", message.message_id, retries_so_far + 2, delay_ms)
        message.options[RETRY_DELAY_OPTION] = delay_ms
        message.fail()

    def _retries_so_far(self, message: dramatiq.MessageProxy, attempt: int) -> int:
        """The runs before this one: receives before it, less those the status store shows never ran."""
        if attempt <= 1 or self.status is None:
            return attempt - 1
        try:
            ran = runs_before(self.status.read(message.message_id), attempt)
        except Exception as exc:  # best effort, as every status read: the receive count stands in
            self.logger.debug("Counting the retries of %r by receives: %s", message.message_id, exc)
            return attempt - 1
        if ran < attempt - 1:
            self.logger.info(
                "Message %r: %d of its %d earlier receive(s) ran (the others were handed back).",
                message.message_id,
                ran,
                attempt - 1,
            )
        return ran

    def _dead_letter(self, message: dramatiq.MessageProxy, reason: str) -> None:
        self.logger.warning("Message %r goes to the dead-letter queue: %s.", message.message_id, reason)
        message.options[DEAD_LETTER_REASON_OPTION] = reason
        message.fail()
