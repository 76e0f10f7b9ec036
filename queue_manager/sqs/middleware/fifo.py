"""FIFO message types: the `fifo` actor option, and the message group in every log record."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.logging import get_logger

from queue_manager import logs
from queue_manager.sqs import fifo


class FifoQueues(dramatiq.Middleware):
    """Accepts the actor option `fifo`: the actor's queue is an SQS FIFO queue (`<prefix>_<type>.fifo`).

    The broker creates such queues as FIFO, the API requires a `group_id` for their messages, and
    the consumer runs each group's messages one after another. This middleware adds the group to
    each log record of a message that has one, so a group can be followed through the logs.
    """

    def __init__(self) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]

    @property
    def actor_options(self) -> set[str]:
        return {fifo.FIFO_OPTION}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        group_id = message.options.get(fifo.GROUP_ID_OPTION)
        context = logs.message_context.get()
        if group_id is not None and context is not None:
            logs.message_context.set({**context, "group_id": group_id})
