"""The envelope rules that depend on a type's queue: FIFO types need a group and take no delay."""

from __future__ import annotations

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
