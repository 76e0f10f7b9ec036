"""The message contract: schemas fail fast naming the file, violations come best first as JSON
pointers, every type has its actor, and webhook destinations are checked against the allow list."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path
from typing import Any

import hypothesis
import jsonschema_rs
import pytest
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from api.app import create_app
from queue_manager.settings import DEFAULT_SCHEMAS_DIR, Settings
from schemas import (
    MAX_MESSAGE_CHARS,
    MAX_VIOLATIONS,
    SchemaLoadError,
    SchemaRegistry,
    Validator,
    Violation,
    json_pointer,
    same_dialect,
    violations,
)
from schemas.checks import check_webhook, destination_error
from tests.conftest import VENV_BIN

GOOD_SCHEMA = '{"type": "object", "required": ["message"]}'

BROKEN_SCHEMAS = [
    pytest.param(
        "broken.json",
        "{not json",
        "not readable JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        id="not-json",
    ),
    pytest.param(
        "broken.json",
        '{"type": 12}',
        "not a valid JSON Schema (draft 2020-12): 12 is not valid under any of the given schemas",
        id="fails-check-schema",
    ),
    pytest.param(
        "broken.json",
        "[]",
        "not a valid JSON Schema (draft 2020-12): [] is not of type 'object', 'boolean'",
        id="an-array",
    ),
    pytest.param("broken.json", "true", "a message schema must be a JSON object.", id="a-boolean-schema"),
    pytest.param(
        "Bad-Name.json", GOOD_SCHEMA, "a message type name must match [a-z][a-z0-9_]{0,31}.", id="bad-type-name"
    ),
]


@pytest.fixture
def schemas_dir(tmp_path: Path) -> Path:
    """A folder holding one good schema, to which a test adds a broken one."""
    folder = tmp_path / "schemas"
    folder.mkdir()
    (folder / "good.json").write_text(GOOD_SCHEMA)
    return folder


# Loading


@pytest.mark.parametrize(("name", "content", "reason"), BROKEN_SCHEMAS)
def test_a_broken_schema_stops_loading_with_an_error_naming_the_file(
    schemas_dir: Path, name: str, content: str, reason: str
) -> None:
    # Given a folder with a good schema and a broken one
    (schemas_dir / name).write_text(content)
    # When it is loaded
    with pytest.raises(SchemaLoadError) as raised:
        SchemaRegistry.load(schemas_dir)
    # Then the error names the broken file and what is wrong with it
    assert str(raised.value) == f"{schemas_dir / name}: {reason}"


UNRESOLVABLE = "cannot be resolved: it must point into the file itself or at the $id of another schema in the folder."


@pytest.mark.parametrize(
    ("content", "ref", "where"),
    [
        pytest.param('{"$ref": "#/$defs/missing"}', "#/$defs/missing", "/", id="pointer-to-nowhere"),
        pytest.param(
            '{"type": "object", "properties": {"a": {"$ref": "other.json"}}}', "other.json", "/properties/a", id="file"
        ),
        pytest.param(
            '{"prefixItems": [true, {"$ref": "urn:nowhere"}]}', "urn:nowhere", "/prefixItems/1", id="urn-in-an-array"
        ),
        pytest.param(
            '{"$defs": {"x": {"$id": "urn:x", "$ref": "#/$defs/y"}}, "properties": {"a": {"$ref": "urn:x"}}}',
            "#/$defs/y",
            "/$defs/x",
            id="relative-to-a-nested-id",
        ),
        pytest.param(
            '{"$ref": "https://example.com/schema.json"}', "https://example.com/schema.json", "/", id="remote"
        ),
    ],
)
def test_a_ref_that_resolves_to_nothing_stops_loading_naming_the_file_and_the_ref(
    schemas_dir: Path, content: str, ref: str, where: str
) -> None:
    # Given a schema with a $ref that points at nothing in it or the folder (or at the network)
    (schemas_dir / "broken.json").write_text(content)
    # When the folder is loaded, or the app built from it
    # Then it stops, naming the file, the ref and where it is; nothing is fetched
    message = f"{schemas_dir / 'broken.json'}: $ref {ref!r} at {where} {UNRESOLVABLE}"
    with pytest.raises(SchemaLoadError) as raised:
        SchemaRegistry.load(schemas_dir)
    assert str(raised.value) == message
    with pytest.raises(SchemaLoadError) as raised:
        create_app(Settings(schemas_dir=schemas_dir))
    assert str(raised.value) == message


def test_refs_within_a_file_and_to_another_schemas_id_resolve(schemas_dir: Path) -> None:
    # Given a schema with an internal $defs ref, and one that refers to the first by its $id
    (schemas_dir / "point.json").write_text(
        '{"$id": "urn:test:point", "type": "object", "properties": {"x": {"$ref": "#/$defs/n"}},'
        ' "required": ["x"], "$defs": {"n": {"type": "integer"}}}'
    )
    (schemas_dir / "line.json").write_text(
        '{"type": "object", "properties": {"from": {"$ref": "urn:test:point"}, "enum": {"enum": [{"$ref": "x"}]}}}'
    )
    # When the folder is loaded
    registry = SchemaRegistry.load(schemas_dir)
    # Then both validate through their refs (a "$ref" inside enum is data, not a reference)
    assert registry.validate("point", {"x": 1}) == []
    assert registry.validate("point", {"x": "1"}) == [Violation("/payload/x", "type", "'1' is not of type 'integer'")]
    assert registry.validate("line", {"from": {"x": "a"}}) == [
        Violation("/payload/from/x", "type", "'a' is not of type 'integer'")
    ]


def test_a_folder_without_schemas_stops_loading(tmp_path: Path) -> None:
    with pytest.raises(SchemaLoadError) as raised:
        SchemaRegistry.load(tmp_path)
    assert str(raised.value) == f"No schema files (*.json) in {tmp_path}."


@pytest.mark.parametrize(("name", "content", "reason"), BROKEN_SCHEMAS[:2])
def test_create_app_fails_on_a_broken_schema(schemas_dir: Path, name: str, content: str, reason: str) -> None:
    # Given settings pointing at a folder with a broken schema
    (schemas_dir / name).write_text(content)
    settings = Settings(schemas_dir=schemas_dir)
    # When the app is built
    # Then it fails, naming the file, before anything is served or sent
    with pytest.raises(SchemaLoadError) as raised:
        create_app(settings)
    assert str(raised.value) == f"{schemas_dir / name}: {reason}"


def test_qm_api_refuses_to_start_on_a_broken_schema_naming_the_file(schemas_dir: Path) -> None:
    # Given QM_SCHEMAS_DIR names a folder with a schema that is not JSON
    (schemas_dir / "broken.json").write_text("{not json")
    # When qm-api is started
    env = {**os.environ, "QM_SCHEMAS_DIR": str(schemas_dir)}
    finished = subprocess.run([str(VENV_BIN / "qm-api")], env=env, capture_output=True, text=True, timeout=60)
    # Then it exits 2, saying why on stderr
    assert finished.returncode == 2, finished.stderr
    assert finished.stderr == (
        f"qm-api: cannot start: {schemas_dir / 'broken.json'}: not readable JSON: "
        "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)\n"
    )


def test_the_shipped_schemas_load_as_one_type_per_file() -> None:
    registry = SchemaRegistry.load(DEFAULT_SCHEMAS_DIR)
    assert registry.types == sorted(p.stem for p in DEFAULT_SCHEMAS_DIR.glob("*.json"))
    assert registry.types == ["log", "ordered", "webhook"]


def test_every_shipped_message_type_has_an_actor_of_the_same_name_and_queue() -> None:
    # Given the shipped schemas and the workers' actors (importing them builds a broker from the environment)
    import actors

    types = SchemaRegistry.load(DEFAULT_SCHEMAS_DIR).types
    registered = actors.broker.actors
    # Then each type has its actor, each actor its type, and each listens on the queue of its name
    assert sorted(registered) == types
    assert {name: actor.queue_name for name, actor in registered.items()} == {t: t for t in types}


# Violations


def test_violations_come_best_match_first_then_by_falling_relevance() -> None:
    # Given a document that breaks its schema at the top, one level down and two levels down
    validator = Draft202012Validator(
        {
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "integer"}}},
                "c": {"type": "string"},
            },
            "required": ["d"],
        }
    )
    document = {"a": {"b": "x"}, "c": 1}
    # When its violations are listed
    found = violations(validator, document)
    # Then the shallowest (jsonschema's best match) comes first, then the deeper ones, shallowest first
    assert found == [
        Violation("", "required", "'d' is a required property"),
        Violation("/c", "type", "1 is not of type 'string'"),
        Violation("/a/b", "type", "'x' is not of type 'integer'"),
    ]


def test_a_valid_document_has_no_violations() -> None:
    assert violations(Draft202012Validator({"type": "object"}), {}) == []


def test_violations_are_capped_keeping_the_most_relevant() -> None:
    # Given a document with one violation at the top, one a level down and more two levels down than are reported
    validator = Draft202012Validator(
        {
            "type": "object",
            "required": ["id"],
            "properties": {
                "name": {"type": "string"},
                "deep": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        }
    )
    document = {"name": 1, "deep": {f"k{i:02}": "x" for i in range(MAX_VIOLATIONS + 10)}}
    # When its violations are listed
    found = violations(validator, document)
    # Then MAX_VIOLATIONS are reported, and the shallow ones are among them, first
    assert len(found) == MAX_VIOLATIONS
    assert found[:2] == [
        Violation("", "required", "'id' is a required property"),
        Violation("/name", "type", "1 is not of type 'string'"),
    ]
    assert all(v.path.startswith("/deep/k") for v in found[2:])


def test_a_long_violation_message_is_cut_to_its_limit() -> None:
    found = violations(Draft202012Validator({"type": "integer"}), "y" * 1000)
    assert found == [Violation("", "type", "'" + "y" * (MAX_MESSAGE_CHARS - 2) + "…")]
    assert len(found[0].message) == MAX_MESSAGE_CHARS


def test_violations_prefix_their_paths() -> None:
    validator = Draft202012Validator({"type": "object", "properties": {"n": {"type": "integer"}}})
    assert violations(validator, {"n": "1"}, prefix=["payload"]) == [
        Violation("/payload/n", "type", "'1' is not of type 'integer'")
    ]


@pytest.mark.parametrize(
    ("parts", "pointer"),
    [
        ([], ""),
        (["payload"], "/payload"),
        (["payload", "a/b"], "/payload/a~1b"),
        (["payload", "c~d"], "/payload/c~0d"),
        (["~1"], "/~01"),
        (["payload", "items", 0], "/payload/items/0"),
        ([""], "/"),
    ],
)
def test_json_pointers_escape_tilde_then_slash(parts: list[object], pointer: str) -> None:
    assert json_pointer(parts) == pointer


def test_violation_paths_are_escaped_json_pointers() -> None:
    # Given property names holding "/" and "~" whose values break the schema
    validator = Draft202012Validator({"type": "object", "additionalProperties": {"type": "integer"}})
    # When the violations are listed
    found = violations(validator, {"a/b": "x", "c~d": "y"})
    # Then their paths escape both (RFC 6901)
    assert sorted(v.path for v in found) == ["/a~1b", "/c~0d"]


# Patterns


@pytest.mark.parametrize(
    ("pattern", "text", "matches"),
    [
        ("^[a-z]+$", "abc", True),
        ("^[a-z]+$", "abc\n", False),
        ("^[a-z$]+$", "a$b", True),
        ("^a\\$$", "a$", True),
        ("^a\\$$", "a$\n", False),
        ("^(x|y)$", "y\n", False),
        ("b", "abc", True),
    ],
    ids=[
        "plain",
        "final-newline",
        "dollar-in-a-class",
        "escaped-dollar",
        "escaped-dollar-final-newline",
        "group",
        "search",
    ],
)
def test_patterns_follow_ecma_262_so_dollar_does_not_match_before_a_final_newline(
    pattern: str, text: str, matches: bool
) -> None:
    assert Validator({"pattern": pattern}).is_valid(text) is matches


def test_a_pattern_violation_names_the_value_and_the_pattern() -> None:
    assert violations(Validator({"pattern": "^[a-z]+$"}), "ab\n") == [
        Violation("", "pattern", "'ab\\n' does not match '^[a-z]+$'")
    ]


# The shipped webhook schema


WEBHOOK = SchemaRegistry.load(DEFAULT_SCHEMAS_DIR)


@pytest.mark.parametrize(
    "url",
    ["http://", "https://", "http:///x", "http://127.0.0.1/x\r\nHost: evil", "http://127.0.0.1/\tx", "http://127.0.0.1/x\n",
     "http://127.0.0.1/a b", "http://127.0.0.1/\x00", "http://127.0.0.1\x7f/"],
    ids=["no-host", "no-host-https", "empty-host", "crlf", "tab", "final-newline", "space", "nul", "del"],
)  # fmt: skip
def test_the_webhook_schema_refuses_urls_without_a_host_or_with_whitespace_or_controls(url: str) -> None:
    assert [(v.path, v.keyword) for v in WEBHOOK.validate("webhook", {"url": url, "body": {}})] == [
        ("/payload/url", "pattern")
    ]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/x", "https://example.com", "http://[::1]:8080/a?b=c#d", "http://h/%0D%0A"]
)
def test_the_webhook_schema_takes_urls_with_a_host(url: str) -> None:
    assert WEBHOOK.validate("webhook", {"url": url, "body": {}}) == []


@pytest.mark.parametrize(
    "value",
    ["a\r\nX-Injected: 1", "a\n", "\r", "a\x00b", "\x1b[31m", "\x7f", "\u20ac"],
    ids=["crlf", "final-lf", "cr", "nul", "escape", "del", "beyond-latin-1"],
)
def test_webhook_header_values_hold_only_field_value_characters(value: str) -> None:
    found = WEBHOOK.validate("webhook", {"url": "http://h/", "body": {}, "headers": {"X-A": value}})
    assert [(v.path, v.keyword) for v in found] == [("/payload/headers/X-A", "pattern")]


def test_webhook_header_values_may_hold_spaces_tabs_and_latin_1() -> None:
    headers = {"X-A": "a b\tc", "X-B": "caf\u00e9", "X-C": ""}
    assert WEBHOOK.validate("webhook", {"url": "http://h/", "body": {}, "headers": headers}) == []


def test_webhook_header_names_with_a_final_newline_are_refused() -> None:
    found = WEBHOOK.validate("webhook", {"url": "http://h/", "body": {}, "headers": {"X-A\n": "1"}})
    assert [(v.path, v.keyword) for v in found] == [("/payload/headers", "pattern")]


# Webhook destinations


ALLOWED = ["127.0.0.1", "localhost", "api.test:8443", "secure.test:443"]
NOT_ALLOWED = "is not in QM_WEBHOOK_ALLOWED_HOSTS (127.0.0.1, localhost, api.test:8443, secure.test:443)"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        pytest.param("http://127.0.0.1/x", None, id="allowed-host"),
        pytest.param("http://127.0.0.1:9000/x", None, id="allowed-host-any-port"),
        pytest.param("https://LOCALHOST/x", None, id="host-case-ignored"),
        pytest.param("http://api.test:8443/x", None, id="allowed-host-and-port"),
        pytest.param("https://secure.test/x", None, id="default-port-matches-host-and-port"),
        pytest.param(
            "http://api.test:9000/x",
            f"host api.test:9000 {NOT_ALLOWED}",
            id="wrong-port",
        ),
        pytest.param(
            "http://api.test/x",
            f"host api.test:80 {NOT_ALLOWED}",
            id="default-port-is-the-wrong-port",
        ),
        pytest.param(
            "https://example.com/x",
            f"host example.com:443 {NOT_ALLOWED}",
            id="other-host",
        ),
        pytest.param(
            "http://127.0.0.1.example.com/x",
            f"host 127.0.0.1.example.com:80 {NOT_ALLOWED}",
            id="allowed-host-as-a-prefix",
        ),
        pytest.param("ftp://127.0.0.1/x", "the scheme must be http or https", id="scheme"),
        pytest.param("127.0.0.1/x", "the scheme must be http or https", id="no-scheme"),
        pytest.param("http:///x", "the URL names no host", id="no-host"),
        pytest.param("http://u:p@127.0.0.1/x", "credentials in the URL are not allowed; use headers", id="credentials"),
        pytest.param("http://u@127.0.0.1/x", "credentials in the URL are not allowed; use headers", id="user-only"),
        pytest.param("http://127.0.0.1:99999/x", "not a valid URL: Port out of range 0-65535", id="port-out-of-range"),
        pytest.param("http://", "the URL names no host", id="nothing-after-the-scheme"),
        pytest.param(
            "http://127.0.0.1/x\r\nHost: evil.test",
            "the URL holds whitespace or a control character ('\\r') at index 18; percent-encode it",
            id="crlf",
        ),
        pytest.param(
            "http://evil.test\t.127.0.0.1/",
            "the URL holds whitespace or a control character ('\\t') at index 16; percent-encode it",
            id="tab-hiding-the-host",
        ),
        pytest.param(
            "http://127.0.0.1/x\n",
            "the URL holds whitespace or a control character ('\\n') at index 18; percent-encode it",
            id="final-newline",
        ),
        pytest.param(
            "http://127.0.0.1/a b",
            "the URL holds whitespace or a control character (' ') at index 18; percent-encode it",
            id="space",
        ),
    ],
)
def test_webhook_destinations_are_checked_against_the_allow_list(url: str, error: str | None) -> None:
    assert destination_error(url, ALLOWED) == error


def test_an_empty_allow_list_allows_nothing_and_says_so() -> None:
    assert destination_error("http://127.0.0.1/x", [" ", ""]) == (
        "host 127.0.0.1:80 is not in QM_WEBHOOK_ALLOWED_HOSTS (empty)"
    )


def test_check_webhook_reports_on_the_url_and_leaves_other_shapes_to_the_schema() -> None:
    assert check_webhook({"url": "https://example.com/", "body": {}}, ["localhost"]) == [
        Violation("/payload/url", "allowedHosts", "host example.com:443 is not in QM_WEBHOOK_ALLOWED_HOSTS (localhost)")
    ]
    assert check_webhook({"url": "http://localhost/", "body": {}}, ["localhost"]) == []
    assert check_webhook([], ["localhost"]) == []
    assert check_webhook({"url": 5}, ["localhost"]) == []


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

#: Values that probe the edges of the shipped schemas: URLs, header names, levels, newlines, non-ASCII digits.
_edges = st.sampled_from(
    ["http://127.0.0.1/x", "https://h.test/\\n", "ftp://x", "http://x\\n", "X-Ok", "bad header", "info", "debug",
     "warning\\n", "١٢٣", "", "a" * 300, "2026-12-02T10:00:00Z", "not-a-date"]
)  # fmt: skip


@st.composite
def _payloads(draw: st.DrawFn) -> Any:
    keys = st.sampled_from(["url", "body", "headers", "message", "level", "fields", "extra"])
    leaf = _edges | _json_values
    return draw(st.dictionaries(keys, leaf | st.dictionaries(_edges, leaf, max_size=3), max_size=5))


@functools.cache
def _shipped_validators() -> tuple[SchemaRegistry, list[tuple[str, Validator, Any]]]:
    """The shipped registry, and per type jsonschema's validator and the compiled one: built once, not per example."""
    registry = SchemaRegistry.load(DEFAULT_SCHEMAS_DIR)
    return registry, [
        (
            message_type,
            # jsonschema with `pattern` read as ECMA-262 (schemas.Validator), as the API validates
            Validator(same_dialect(registry.schema(message_type)), format_checker=Draft202012Validator.FORMAT_CHECKER),
            jsonschema_rs.validator_for(registry.schema(message_type), validate_formats=True),
        )
        for message_type in registry.types
    ]


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(payload=_payloads())
def test_the_compiled_validator_never_accepts_what_jsonschema_refuses(payload: Any) -> None:
    registry, validators = _shipped_validators()
    for message_type, validator, compiled in validators:
        if compiled.is_valid(payload):
            assert validator.is_valid(payload), (message_type, payload)
        # And whatever the path, the verdict is jsonschema's
        assert (registry.validate(message_type, payload) == []) == validator.is_valid(payload)
