"""The message contract: one JSON Schema (draft 2020-12) per message type, loaded and checked once."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match, relevance

#: A message type's name: also its schema's file name, its actor's name and its queue's name.
TYPE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")

#: The most violations reported for one payload.
MAX_VIOLATIONS = 50

#: The longest violation message: jsonschema quotes the offending value, which may be huge.
MAX_MESSAGE_CHARS = 300


class SchemaLoadError(ValueError):
    """Raised at start-up when a schema file is unreadable or not a valid JSON Schema."""


@dataclasses.dataclass(frozen=True)
class Violation:
    """One way a document breaks its schema: where (a JSON pointer), which keyword, and why."""

    path: str
    keyword: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def json_pointer(parts: Iterable[Any]) -> str:
    """Render path parts as an RFC 6901 JSON pointer."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


#: Compiled (jsonschema-rs) twins of the validators, by id; each entry keeps its validator alive.
_compiled: dict[int, tuple[Draft202012Validator, Any]] = {}


def _compiled_twin(validator: Draft202012Validator) -> Any:
    """The validator's schema compiled by jsonschema-rs, or None where it cannot be (an external $ref)."""
    entry = _compiled.get(id(validator))
    if entry is None:
        try:
            twin: Any = jsonschema_rs.validator_for(validator.schema, validate_formats=True)
        except (ValueError, jsonschema_rs.ReferencingError):
            twin = None
        entry = _compiled[id(validator)] = (validator, twin)
    return entry[1]


def violations(validator: Draft202012Validator, document: Any, *, prefix: Iterable[Any] = ()) -> list[Violation]:
    """Every violation of `document`, the most relevant first, paths prefixed by `prefix`.

    The happy path asks jsonschema-rs (compiled, about 20x cheaper); anything it refuses is judged
    by jsonschema, which alone decides what is wrong and words the violations. jsonschema-rs checks
    formats jsonschema may skip, never fewer, so it accepts nothing jsonschema refuses (a test keeps
    that true for the shipped schemas).
    """
    twin = _compiled_twin(validator)
    if twin is not None and twin.is_valid(document):
        return []
    if validator.is_valid(document):
        return []
    errors = list(validator.iter_errors(document))
    best = best_match(errors)
    ordered = [best, *sorted((e for e in errors if e is not best), key=relevance, reverse=True)]
    base = list(prefix)
    return [_violation(e, base) for e in ordered[:MAX_VIOLATIONS]]


def _violation(error: ValidationError, base: list[Any]) -> Violation:
    message = error.message
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return Violation(path=json_pointer(base + list(error.absolute_path)), keyword=str(error.validator), message=message)


class SchemaRegistry:
    """The message types and their validators, built once from a folder of schema files."""

    def __init__(self, schemas: dict[str, dict[str, Any]]) -> None:
        self._schemas = dict(sorted(schemas.items()))
        self._validators = {
            name: Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            for name, schema in self._schemas.items()
        }

    @classmethod
    def load(cls, folder: Path) -> SchemaRegistry:
        """Load and check every `<type>.json` in `folder`; a bad file stops start-up, named."""
        schemas: dict[str, dict[str, Any]] = {}
        files = sorted(folder.glob("*.json"))
        if not files:
            raise SchemaLoadError(f"No schema files (*.json) in {folder}.")
        for path in files:
            name = path.stem
            if not TYPE_NAME_PATTERN.fullmatch(name):
                raise SchemaLoadError(f"{path}: a message type name must match {TYPE_NAME_PATTERN.pattern}.")
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SchemaLoadError(f"{path}: not readable JSON: {exc}") from exc
            try:
                Draft202012Validator.check_schema(schema)
            except Exception as exc:  # SchemaError, or a bad $ref the meta-schema check trips on
                detail = getattr(exc, "message", str(exc))
                raise SchemaLoadError(f"{path}: not a valid JSON Schema (draft 2020-12): {detail}") from exc
            if not isinstance(schema, dict):
                raise SchemaLoadError(f"{path}: a message schema must be a JSON object.")
            schemas[name] = schema
        return cls(schemas)

    @property
    def types(self) -> list[str]:
        return list(self._schemas)

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._schemas

    def schema(self, message_type: str) -> dict[str, Any]:
        return self._schemas[message_type]

    def validate(self, message_type: str, payload: Any, *, prefix: Iterable[Any] = ("payload",)) -> list[Violation]:
        """Every way `payload` breaks the schema of `message_type`, the most relevant first."""
        return violations(self._validators[message_type], payload, prefix=prefix)
