"""The envelope every POST /messages body must match, around the payload's own schema."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

from schemas import TYPE_NAME_PATTERN, Violation, violations
from sqs import constants

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
    },
    "required": ["type", "payload"],
    "additionalProperties": False,
}

_ENVELOPE = Draft202012Validator(ENVELOPE_SCHEMA)


def envelope_violations(document: Any) -> list[Violation]:
    """Every way `document` breaks the envelope schema, the most relevant first."""
    return violations(_ENVELOPE, document)
