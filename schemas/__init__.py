"""The message contract: one JSON Schema (draft 2020-12) per message type, loaded and checked once."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match, relevance
from jsonschema.protocols import Validator as ValidatorProtocol
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

#: A message type's name: also its schema's file name, its actor's name and its queue's name.
TYPE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")

#: The keyword by which a schema declares its type's queue kind: "standard" (the default) or "fifo"
#: (an SQS FIFO queue: every message needs a `group_id`, and a group's messages run one at a time).
QUEUE_KEYWORD = "x-qm-queue"
QUEUE_KINDS = ("standard", "fifo")

#: The most violations reported for one payload.
MAX_VIOLATIONS = 50

#: The longest violation message: jsonschema quotes the offending value, which may be huge.
MAX_MESSAGE_CHARS = 300


class SchemaLoadError(ValueError):
    """Raised at start-up when a schema file is unreadable, not a valid JSON Schema, or refers to nothing."""


@functools.lru_cache(maxsize=512)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile a JSON Schema `pattern` so that `$` means what it does in ECMA-262, JSON Schema's dialect.

    There `$` matches only at the end of the string; in Python it also matches before a final
    newline, so `^[a-z]+$` would accept "abc\\n". Outside character classes it becomes `\\Z`.
    """
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            out.append(r"\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with ECMA-262 semantics for `pattern` (see ecma_regex): every validator here uses it.
Validator: type[ValidatorProtocol] = validators.extend(Draft202012Validator, validators={"pattern": _pattern})


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
_compiled: dict[int, tuple[ValidatorProtocol, Any]] = {}


def _compiled_twin(validator: ValidatorProtocol) -> Any:
    """The validator's schema compiled by jsonschema-rs, or None where it cannot be (an external $ref)."""
    entry = _compiled.get(id(validator))
    if entry is None:
        try:
            twin: Any = jsonschema_rs.validator_for(validator.schema, validate_formats=True)
        except (ValueError, jsonschema_rs.ReferencingError):
            twin = None
        entry = _compiled[id(validator)] = (validator, twin)
    return entry[1]


def violations(validator: ValidatorProtocol, document: Any, *, prefix: Iterable[Any] = ()) -> list[Violation]:
    """Every violation of `document`, the most relevant first, paths prefixed by `prefix`.

    The happy path asks jsonschema-rs (compiled, about 20x cheaper); anything it refuses is judged
    by jsonschema, which alone decides what is wrong and words the violations. jsonschema-rs checks
    formats jsonschema may skip, never fewer, and reads `pattern` as ECMA-262 as `Validator` does, so
    it accepts nothing jsonschema refuses (a test keeps that true for the shipped schemas).
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
        self.registry = schema_registry(self._schemas.values())
        # With a registry of their own, validators never fetch a $ref from the network.
        self._validators = {
            name: Validator(
                same_dialect(schema), registry=self.registry, format_checker=Draft202012Validator.FORMAT_CHECKER
            )
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
            kind = schema.get(QUEUE_KEYWORD, QUEUE_KINDS[0])
            if kind not in QUEUE_KINDS:
                raise SchemaLoadError(
                    f"{path}: {QUEUE_KEYWORD!r} must be one of {', '.join(map(repr, QUEUE_KINDS))}, not {kind!r}."
                )
            schemas[name] = schema
        registry = schema_registry(schemas.values())
        for name, schema in schemas.items():
            found = unresolvable_ref(schema, registry)
            if found is not None:
                ref, where = found
                raise SchemaLoadError(
                    f"{folder / (name + '.json')}: $ref {ref!r} at {where or '/'} cannot be resolved: it must point "
                    "into the file itself or at the $id of another schema in the folder."
                )
        return cls(schemas)

    @property
    def types(self) -> list[str]:
        return list(self._schemas)

    @property
    def fifo_types(self) -> frozenset[str]:
        """The types whose schema declares an SQS FIFO queue (`"x-qm-queue": "fifo"`)."""
        return frozenset(name for name, schema in self._schemas.items() if schema.get(QUEUE_KEYWORD) == "fifo")

    def __contains__(self, message_type: object) -> bool:
        return message_type in self._schemas

    def schema(self, message_type: str) -> dict[str, Any]:
        return self._schemas[message_type]

    def validate(self, message_type: str, payload: Any, *, prefix: Iterable[Any] = ("payload",)) -> list[Violation]:
        """Every way `payload` breaks the schema of `message_type`, the most relevant first."""
        return violations(self._validators[message_type], payload, prefix=prefix)


def same_dialect(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` without its `$schema`, which would make jsonschema switch back to its own Draft 2020-12
    class (and Python's `$`) wherever validation enters it; every schema here is Draft 2020-12."""
    return {k: v for k, v in schema.items() if k != "$schema"}


def schema_registry(schemas: Iterable[dict[str, Any]]) -> Registry[Any]:
    """A registry of the schemas that have an `$id`, so that one schema may refer to another."""
    resources = [DRAFT202012.create_resource(same_dialect(schema)) for schema in schemas]
    return Registry().with_resources((uri, resource) for resource in resources if (uri := resource.id()))


#: Keywords whose value maps names to subschemas (not a subschema itself).
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})

#: Keywords whose value is data, never a subschema: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


def unresolvable_ref(schema: dict[str, Any], registry: Registry[Any]) -> tuple[str, str] | None:
    """The first `$ref` of `schema` that points at nothing, and where (a JSON pointer), or None."""
    resolver = registry.resolver_with_root(DRAFT202012.create_resource(schema))
    return _first_unresolvable(schema, resolver, ())


def _first_unresolvable(node: Any, resolver: Any, where: tuple[Any, ...]) -> tuple[str, str] | None:
    # Iterating nested schemas recursively is bounded by the schema file's own depth (a trusted file).
    if isinstance(node, list):
        for index, item in enumerate(node):
            found = _first_unresolvable(item, resolver, (*where, index))
            if found is not None:
                return found
        return None
    if not isinstance(node, dict):
        return None
    if isinstance(node.get("$id"), str):  # a new base URI for the refs below
        resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
    ref = node.get("$ref")
    if isinstance(ref, str):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            return ref, json_pointer(where)
    for key, value in node.items():
        if key in _DATA_KEYWORDS:
            continue
        children = value.items() if key in _SCHEMA_MAPS and isinstance(value, dict) else [(None, value)]
        for name, child in children:
            path = (*where, key) if name is None else (*where, key, name)
            found = _first_unresolvable(child, resolver, path)
            if found is not None:
                return found
    return None
