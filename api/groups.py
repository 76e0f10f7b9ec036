"""The envelope rules that depend on a type's queue: FIFO types need a group and take no delay, and keep its order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schemas import Violation

#: The envelope fields a FIFO type's messages must have, and those only FIFO types take.
FIFO_REQUIRED = ("group_id",)
FIFO_ONLY = ("deduplication_id",)

#: The envelope fields a FIFO type's messages may not have: SQS delays a FIFO queue only as a whole.
NOT_FIFO = ("delay_seconds",)


def group_violations(document: dict[str, Any], message_type: str, *, fifo: bool) -> list[Violation]:
    """Every way an envelope breaks the rules of its type's queue (FIFO or standard)."""
    errors: list[Violation] = []
    if fifo:
        for name in FIFO_REQUIRED:
            if name not in document:
                errors.append(
                    Violation(
                        f"/{name}",
                        "required",
                        f"'{name}' is a required property: {message_type!r} messages go to a FIFO queue, "
                        "which keeps their order per group",
                    )
                )
        for name in NOT_FIFO:
            if name in document:
                errors.append(
                    Violation(
                        f"/{name}",
                        "additionalProperties",
                        f"'{name}' is not allowed: {message_type!r} messages go to a FIFO queue, which SQS "
                        "cannot delay per message",
                    )
                )
        return errors
    for name in FIFO_ONLY:
        if name in document:
            errors.append(
                Violation(
                    f"/{name}",
                    "additionalProperties",
                    f"'{name}' is not allowed: only FIFO types deduplicate, and {message_type!r} is on a standard "
                    "queue",
                )
            )
    return errors


def fifo_group(envelope: Any, is_fifo: Callable[[str], bool]) -> tuple[str, str] | None:
    """The (type, group_id) whose order a batch entry must keep, or None: only FIFO types keep one.

    Read from the raw envelope, so an entry that fails validation still names the group it holds up.
    """
    if not isinstance(envelope, dict):
        return None
    message_type, group = envelope.get("type"), envelope.get("group_id")
    if not isinstance(message_type, str) or not isinstance(group, str) or not is_fifo(message_type):
        return None
    return message_type, group
