"""Exceptions raised by queue-manager's SQS machinery and understood by its middleware."""

from __future__ import annotations


class PermanentFailure(Exception):
    """Raised by an actor when retrying cannot help: the message is dead-lettered at once."""


class MessageTooLarge(ValueError):
    """Raised when a message is larger than SQS accepts once encoded."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"The message is {size_bytes} bytes once encoded; SQS accepts at most {limit_bytes} bytes.")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class MessageDelayTooLong(ValueError):
    """Raised when a delay exceeds the 900 s SQS allows on one message."""


class SQSUnavailable(RuntimeError):
    """Raised when SQS cannot be reached, times out or throttles: try again later."""
