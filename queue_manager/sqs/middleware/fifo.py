"""FIFO message types: the `fifo` actor option, and the message group in every log record."""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.logging import get_logger

from queue_manager import logs
from queue_manager.sqs import constants


class FifoQueues(dramatiq.Middleware):
    """Accepts the actor option `fifo` and adds a message's group to each of its log records.

    A message type's queue kind is declared in its schema (`"x-qm-queue": "fifo"`); an actor may
    say `fifo=True` as well (a broker used without schemas reads it). The broker creates such
    queues as FIFO, the API requires a `group_id` for their messages, and the consumer runs each
    group's messages one after another. The group in every log record lets a group be followed.
    """

    def __init__(self) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]

    @property
    def actor_options(self) -> set[str]:
        return {constants.FIFO_OPTION}

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        group_id = message.options.get(constants.GROUP_ID_OPTION)
        context = logs.message_context.get()
        if group_id is not None and context is not None:
            logs.message_context.set({**context, "group_id": group_id})
