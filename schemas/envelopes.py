"""The rules of an envelope beyond its JSON Schema, and how a refused message is worded.

The API and the `qm` client (which imports no server module) both judge a message here, each
with its own copy of the schemas, so that both name the same violations in the same words and
the same order: the envelope's first, then those of the type's queue (a FIFO type needs a group
and takes no delay), then the payload's, all in one answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from schemas import Violation

#: The envelope fields a FIFO type's messages must have, and those only FIFO types take.
FIFO_REQUIRED = ("group_id",)
FIFO_ONLY = ("deduplication_id",)

#: The envelope fields a FIFO type's messages may not have: SQS delays a FIFO queue only as a whole.
NOT_FIFO = ("delay_seconds",)

#: Where the payload's violations are: everything else is the envelope's.
PAYLOAD_PATH = "/payload"


def message_violations(
    document: Any,
    *,
    envelope: Callable[[Any], list[Violation]],
    types: Sequence[str],
    is_fifo: Callable[[str], bool],
    payload: Callable[[str, Any], list[Violation]],
) -> tuple[str, list[Violation]]:
    """Every way a message breaks its rules, and the sentence that sums them up (empty when none).

    `envelope` checks the envelope's JSON Schema, `payload(type, payload)` the payload's (paths
    under /payload); `types` are the known message types and `is_fifo` tells which are FIFO.
    """
    errors = envelope(document)
    message_type = document.get("type") if isinstance(document, dict) else None
    if not isinstance(message_type, str) or message_type not in types:
        if isinstance(message_type, str) and not any(v.path == "/type" for v in errors):
            errors.append(Violation("/type", "enum", f"{message_type!r} is not one of {list(types)}"))
            if len(errors) == 1:
                return f"Unknown message type {message_type!r}.", errors
        return "The envelope is not valid.", errors
    queue = queue_violations(document, message_type, fifo=is_fifo(message_type))
    # A field the queue refuses outright is named once, with the reason, not also for its value.
    refused = {v.path for v in queue if v.keyword == "additionalProperties"}
    errors = [v for v in errors if v.path not in refused] + queue
    if "payload" in document:
        errors += payload(message_type, document["payload"])
    return (refusal(message_type, errors) if errors else ""), errors


def refusal(message_type: str, errors: Sequence[Violation]) -> str:
    """The detail of a refused message of a known type: whether its envelope, its payload, or both broke."""
    in_payload = [v.path == PAYLOAD_PATH or v.path.startswith(PAYLOAD_PATH + "/") for v in errors]
    if all(in_payload):
        return f"The payload is not a valid {message_type!r} message."
    if any(in_payload):
        return f"The envelope and the payload are not valid for {with_article(message_type)} message."
    return f"The envelope is not valid for {with_article(message_type)} message."


def with_article(message_type: str) -> str:
    """The quoted type name after its indefinite article: "a 'log'", "an 'ordered'" (by its first letter)."""
    return f"{'an' if message_type[:1].lower() in 'aeiou' else 'a'} {message_type!r}"


def queue_violations(document: dict[str, Any], message_type: str, *, fifo: bool) -> list[Violation]:
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


def waiting_detail(group: tuple[str, str], first: int) -> str:
    """What a batch entry held back behind entry `first` of its FIFO group is told, by the API and the client."""
    message_type, group_id = group
    return (
        f"Not sent: entry {first} of group {group_id!r} of type {message_type!r} was refused, and a FIFO group is sent "
        f"in order; send the group's entries again from entry {first} on."
    )
