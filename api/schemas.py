"""The envelope every POST /messages body must match, around the payload's own schema."""

from __future__ import annotations

from typing import Any

from queue_manager.sqs import constants
from schemas import TYPE_NAME_PATTERN, Validator, Violation, same_dialect, violations

#: An idempotency key: 1 to 255 visible ASCII characters (a JSON Schema pattern).
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"

#: The request body of POST /messages.
ENVELOPE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:queue-manager:schema:envelope",
    "title": "Message envelope",
    "type": "object",
    "properties": {
        "type": {
            "type": "string",
            "pattern": f"^{TYPE_NAME_PATTERN.pattern}$",
            "description": "The message type: names a schema in GET /schemas and the actor that handles it.",
        },
        "payload": {"description": "The message itself, valid against the schema of its type."},
        "delay_seconds": {
            "type": "integer",
            "minimum": 0,
            "maximum": constants.MAX_DELAY_SECONDS,
            "description": "Seconds before the message may be processed.",
        },
        "idempotency_key": {
            "type": "string",
            "pattern": IDEMPOTENCY_KEY_PATTERN,
            "description": "A retried request with the same key returns the first answer instead of sending again.",
        },
        "group_id": {
            "type": "string",
            "pattern": constants.GROUP_ID_PATTERN,
            "description": "The SQS MessageGroupId: 1 to 128 letters, digits or ASCII punctuation. Required by FIFO "
            "types, whose messages of one group are processed one at a time in the order accepted; on other "
            "types it names the tenant of an SQS fair queue.",
        },
        "deduplication_id": {
            "type": "string",
            "pattern": constants.GROUP_ID_PATTERN,
            "description": "FIFO types only: the SQS MessageDeduplicationId. A second message with the same id "
            "within 5 minutes of the first is accepted and dropped. Defaults to the message id.",
        },
    },
    "required": ["type", "payload"],
    "additionalProperties": False,
}

#: The most envelopes in one POST /messages/batch.
MAX_BATCH_MESSAGES = 100

#: The largest body of POST /messages: the largest JSON SQS can carry, plus room for the envelope.
MAX_MESSAGE_BODY_BYTES = constants.MAX_ENCODED_JSON_BYTES + 4096

#: The largest body of POST /messages/batch: 100 messages leave in at least ten SendMessageBatch
#: calls, each carrying at most 1 MiB, so a batch may hold ten times what one message's body may.
MAX_BATCH_BODY_BYTES = MAX_MESSAGE_BODY_BYTES * (MAX_BATCH_MESSAGES // constants.MAX_BATCH_ENTRIES)

#: The request body of POST /messages/batch; each envelope is then checked on its own.
BATCH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:queue-manager:schema:batch",
    "title": "Message batch",
    "type": "object",
    "properties": {
        "messages": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH_MESSAGES,
            "items": {"$ref": "urn:queue-manager:schema:envelope"},
            "description": "Envelopes, each validated and sent on its own.",
        }
    },
    "required": ["messages"],
    "additionalProperties": False,
}

_ENVELOPE = Validator(same_dialect(ENVELOPE_SCHEMA))
# The outer shape only: each envelope is validated on its own, so one bad entry fails alone.
_BATCH = Validator(
    same_dialect({**BATCH_SCHEMA, "properties": {"messages": {**BATCH_SCHEMA["properties"]["messages"], "items": {}}}})
)


def batch_violations(document: Any) -> list[Violation]:
    """Every way `document` breaks the batch's outer shape (its envelopes are checked one by one)."""
    return violations(_BATCH, document)


def envelope_violations(document: Any) -> list[Violation]:
    """Every way `document` breaks the envelope schema, the most relevant first."""
    return violations(_ENVELOPE, document)
