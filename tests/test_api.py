"""The HTTP contract of the API: every status a client can cause, with its exact problem body,
against the real SQS server the fixtures start."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import dramatiq
import pytest
from aiohttp import ClientSession

from api.handlers import OLDEST_AGE_NOTE
from queue_manager.settings import DEFAULT_SCHEMAS_DIR, Settings
from queue_manager.sqs import constants
from tests.conftest import SQSServer
from tests.support import JSON, LOG, drain, problem, queue_depth

pytestmark = pytest.mark.api

#: The largest body POST /messages reads: the most JSON SQS carries once base64-encoded, plus the envelope.
MESSAGES_BODY_LIMIT_BYTES = constants.MAX_MESSAGE_SIZE_BYTES // 4 * 3 + 4096

#: The shipped webhook schema's patterns, as its violations quote them.
_WEBHOOK = json.loads((DEFAULT_SCHEMAS_DIR / "webhook.json").read_text())["properties"]
WEBHOOK_URL_PATTERN = _WEBHOOK["url"]["pattern"]
HEADER_VALUE_PATTERN = _WEBHOOK["headers"]["additionalProperties"]["pattern"]


def invalid(detail: str, errors: list[dict[str, str]]) -> dict[str, Any]:
    """The whole 422 problem body for `detail` and its violations."""
    return {
        "type": "urn:queue-manager:problem:invalid-message",
        "title": "Invalid Message",
        "status": 422,
        "detail": detail,
        "errors": errors,
    }


def malformed(detail: str) -> dict[str, Any]:
    """The whole 400 problem body for `detail`."""
    return {
        "type": "urn:queue-manager:problem:malformed-json",
        "title": "Malformed JSON",
        "status": 400,
        "detail": detail,
    }


def too_large(detail: str) -> dict[str, Any]:
    """The whole 413 problem body for `detail`."""
    return {
        "type": "urn:queue-manager:problem:payload-too-large",
        "title": "Payload Too Large",
        "status": 413,
        "detail": detail,
    }


def encoded_overhead_bytes() -> int:
    """The bytes Dramatiq's JSON adds around an empty webhook body (ids and timestamps are fixed width)."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="webhook",
        actor_name="webhook",
        args=({"url": "http://127.0.0.1/x", "body": ""},),
        kwargs={},
        options={},
    )
    return len(message.encode())


async def chunked(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """`data` in pieces, so the request goes without a Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# POST /messages: accepted


async def test_a_valid_message_is_202_with_its_id_type_and_queue_once_sqs_has_it(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given a valid log message
    # When it is posted
    response = await api_client.post("/messages", json=LOG)
    # Then the answer is 202 with its id, type and queue, and nothing else
    assert response.status == 202
    assert response.content_type == "application/json"
    answer = await response.json()
    assert answer == {"id": answer["id"], "type": "log", "queue": f"{settings.queue_prefix}_log"}
    assert str(uuid.UUID(answer["id"])) == answer["id"]
    # And SQS already holds it: the 202 came after SQS accepted it
    assert queue_depth(sqs, f"{settings.queue_prefix}_log") == {"visible": 1, "in_flight": 0, "delayed": 0}


async def test_a_posted_message_is_a_dramatiq_message_for_the_actor_of_its_type(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given a log message with every field
    payload = {"message": "hello", "level": "warning", "fields": {"user": 42, "tags": ["a", "b"]}}
    # When it is posted
    answer = await (await api_client.post("/messages", json={"type": "log", "payload": payload})).json()
    # Then its queue holds exactly one message: base64 of a Dramatiq message for the log actor
    (message,) = await asyncio.to_thread(drain, sqs, f"{settings.queue_prefix}_log")
    decoded = json.loads(base64.b64decode(message["Body"]))
    assert decoded["actor_name"] == "log"
    assert decoded["queue_name"] == "log"
    assert decoded["args"] == [payload]
    assert decoded["kwargs"] == {}
    assert decoded["message_id"] == answer["id"]
    # And its attributes name the type and the message id
    assert message["MessageAttributes"] == {
        "qm-type": {"StringValue": "log", "DataType": "String"},
        "qm-message-id": {"StringValue": answer["id"], "DataType": "String"},
    }


async def test_delay_seconds_holds_the_message_back_as_delayed(api_client: Any, settings: Settings, sqs: Any) -> None:
    # Given a message to be processed in 5 seconds
    # When it is posted
    response = await api_client.post("/messages", json={**LOG, "delay_seconds": 5})
    # Then it is accepted and waits on its queue as a delayed message
    assert response.status == 202
    assert queue_depth(sqs, f"{settings.queue_prefix}_log") == {"visible": 0, "in_flight": 0, "delayed": 1}


async def test_application_json_with_a_utf8_charset_is_accepted(api_client: Any) -> None:
    # Given a valid message sent as application/json with the (redundant) UTF-8 charset
    # When it is posted
    headers = {"Content-Type": "application/json; charset=utf-8"}
    response = await api_client.post("/messages", data=json.dumps(LOG), headers=headers)
    # Then it is accepted (other +json media types are 415: see test_api_input.py)
    assert response.status == 202, await response.text()


async def test_a_webhook_to_an_allowed_host_and_port_is_accepted(api_client: Any) -> None:
    # Given a webhook to a loopback host on the allow list (any port is allowed for a bare host)
    document = {"type": "webhook", "payload": {"url": "http://localhost:8080/hook", "body": [1, 2]}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then it is accepted
    assert response.status == 202, await response.text()


async def test_the_largest_message_sqs_takes_is_accepted(api_client: Any, settings: Settings, sqs: Any) -> None:
    # Given a webhook whose message is exactly 1 MiB once base64-encoded for SQS
    length = constants.MAX_MESSAGE_SIZE_BYTES // 4 * 3 - encoded_overhead_bytes()
    document = {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": "a" * length}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then it is accepted, and SQS holds all 1,048,576 bytes of it
    assert response.status == 202, await response.text()
    (message,) = await asyncio.to_thread(drain, sqs, f"{settings.queue_prefix}_webhook")
    assert len(message["Body"]) == 1_048_576


# POST /messages: refused


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_a_message_over_sqs_limit_once_base64_encoded_is_413_naming_both_sizes(api_client: Any) -> None:
    # Given a webhook body of ~786,000 characters: under the HTTP limit, one byte of JSON past what SQS carries
    length = constants.MAX_MESSAGE_SIZE_BYTES // 4 * 3 - encoded_overhead_bytes() + 1
    document = {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": "a" * length}}
    assert len(json.dumps(document)) < MESSAGES_BODY_LIMIT_BYTES
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then the answer is 413 with the encoded size and SQS's limit
    assert await problem(response, 413) == too_large(
        "The message is 1048580 bytes once encoded for SQS (base64 of its JSON); the limit is 1048576 bytes, "
        "about 786432 bytes of JSON."
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize("sent_as", ["content-length", "chunked"])
async def test_a_body_over_the_limit_is_413_naming_the_limit(api_client: Any, sent_as: str) -> None:
    # Given a body one byte over the most POST /messages reads
    body = b" " * (MESSAGES_BODY_LIMIT_BYTES + 1)
    # When it is posted with a Content-Length, or chunked without one
    data = body if sent_as == "content-length" else chunked(body)
    response = await api_client.post("/messages", data=data, headers=JSON)
    # Then the answer is 413 naming the limit
    assert await problem(response, 413) == too_large(
        "The request body is larger than 790528 bytes, the most /messages accepts "
        "(a message must fit in SQS's 1 MiB once base64-encoded)."
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_a_chunked_body_over_the_server_wide_limit_is_the_same_413(api_client: Any) -> None:
    # Given a chunked body past the application's client_max_size (the batch endpoint's limit)
    body = b" " * (10 * 1024 * 1024 + 1)
    # When it is posted to /messages
    response = await api_client.post("/messages", data=chunked(body, 1024 * 1024), headers=JSON)
    # Then the answer names the limit of /messages, as for any other body over it
    assert await problem(response, 413) == too_large(
        "The request body is larger than 790528 bytes, the most /messages accepts "
        "(a message must fit in SQS's 1 MiB once base64-encoded)."
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(b'{"type": ', "The body is not valid JSON: Expecting value at line 1, column 10.", id="truncated"),
        pytest.param(b"", "The body is not valid JSON: Expecting value at line 1, column 1.", id="empty"),
        pytest.param(
            b'{"type": "log"\n"payload": {}}',
            "The body is not valid JSON: Expecting ',' delimiter at line 2, column 1.",
            id="two-lines",
        ),
        pytest.param(b'{"x": "\xff"}', "The body is not UTF-8: invalid start byte at byte 7.", id="not-utf8"),
        pytest.param(
            b'{"type": "log", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "The body nests arrays and objects more than 64 levels deep, the most the API reads.",
            id="deeply-nested",
        ),
        pytest.param(
            b'{"type": "log", "payload": {"message": "x", "fields": {"n": NaN}}}',
            "The body is not valid JSON: NaN is not a JSON number.",
            id="nan",
        ),
        pytest.param(
            b'{"type": "log", "payload": {"message": "x", "fields": {"n": -Infinity}}}',
            "The body is not valid JSON: -Infinity is not a JSON number.",
            id="infinity",
        ),
        pytest.param(
            b'{"type": "log", "payload": {"message": "x", "fields": {"n": 1e400}}}',
            "The body is not valid JSON: the number 1e400 is out of range.",
            id="float-overflow",
        ),
        pytest.param(
            b'{"type": "log", "payload": {"message": "x", "fields": {"n": ' + b"9" * 5000 + b"}}}",
            f"The body is not valid JSON: an integer has more than {sys.get_int_max_str_digits()} digits.",
            id="integer-too-long",
        ),
    ],
)
async def test_a_body_that_is_not_json_is_400_saying_why(api_client: Any, body: bytes, detail: str) -> None:
    # Given a body that is not JSON (or not JSON other parsers would read)
    # When it is posted as application/json
    response = await api_client.post("/messages", data=body, headers=JSON)
    # Then the answer is 400 saying where or why
    assert await problem(response, 400) == malformed(detail)


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"Content-Type": "text/plain"}, "text/plain"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, "application/x-www-form-urlencoded"),
        ({}, "application/octet-stream"),
    ],
    ids=["text", "form", "none"],
)
async def test_another_content_type_is_415_naming_it(api_client: Any, headers: dict[str, str], named: str) -> None:
    # Given a JSON body labelled as something else (or not labelled)
    # When it is posted
    response = await api_client.post("/messages", data=json.dumps(LOG).encode(), headers=headers)
    # Then the answer is 415 naming the media type it was sent as
    assert await problem(response, 415) == {
        "type": "urn:queue-manager:problem:unsupported-media-type",
        "title": "Unsupported Media Type",
        "status": 415,
        "detail": f"The body must be application/json, not {named}.",
    }


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_an_unknown_type_is_422_naming_the_known_types(api_client: Any) -> None:
    # Given a message of a type no schema describes
    # When it is posted
    response = await api_client.post("/messages", json={"type": "sms", "payload": {}})
    # Then the answer is 422 naming the types there are
    assert await problem(response, 422) == invalid(
        "Unknown message type 'sms'.",
        [{"path": "/type", "keyword": "enum", "message": "'sms' is not one of ['log', 'ordered', 'webhook']"}],
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_an_envelope_error_is_422_naming_every_violation_best_first(api_client: Any) -> None:
    # Given an envelope with no type, a delay past 900 s and a field of its own
    # When it is posted
    response = await api_client.post("/messages", json={"payload": 1, "delay_seconds": 901, "extra": True})
    # Then the answer is 422 naming all three, the most relevant first
    assert await problem(response, 422) == invalid(
        "The envelope is not valid.",
        [
            {"path": "", "keyword": "required", "message": "'type' is a required property"},
            {
                "path": "",
                "keyword": "additionalProperties",
                "message": "Additional properties are not allowed ('extra' was unexpected)",
            },
            {"path": "/delay_seconds", "keyword": "maximum", "message": "901 is greater than the maximum of 900"},
        ],
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_a_payload_breaking_its_schema_is_422_naming_every_violation_best_first(api_client: Any) -> None:
    # Given a log payload with no message, a bad level, fields that are not an object and an unknown field
    payload = {"level": "loud", "fields": [], "colour": "red"}
    # When it is posted
    response = await api_client.post("/messages", json={"type": "log", "payload": payload})
    # Then the answer is 422 naming all four, the best match first, paths as JSON pointers
    assert await problem(response, 422) == invalid(
        "The payload is not a valid 'log' message.",
        [
            {"path": "/payload", "keyword": "required", "message": "'message' is a required property"},
            {
                "path": "/payload",
                "keyword": "additionalProperties",
                "message": "Additional properties are not allowed ('colour' was unexpected)",
            },
            {
                "path": "/payload/level",
                "keyword": "enum",
                "message": "'loud' is not one of ['debug', 'info', 'warning', 'error']",
            },
            {"path": "/payload/fields", "keyword": "type", "message": "[] is not of type 'object'"},
        ],
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_envelope_and_payload_violations_come_in_one_answer(api_client: Any) -> None:
    # Given a log message with a negative delay and a payload with no message and a bad level
    document = {"type": "log", "delay_seconds": -1, "payload": {"level": "loud"}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then one 422 names the envelope's violation and the payload's, the envelope's first
    assert await problem(response, 422) == invalid(
        "The envelope and the payload are not valid for a 'log' message.",
        [
            {"path": "/delay_seconds", "keyword": "minimum", "message": "-1 is less than the minimum of 0"},
            {"path": "/payload", "keyword": "required", "message": "'message' is a required property"},
            {
                "path": "/payload/level",
                "keyword": "enum",
                "message": "'loud' is not one of ['debug', 'info', 'warning', 'error']",
            },
        ],
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_violation_paths_escape_tilde_as_json_pointers(api_client: Any) -> None:
    # Given a webhook whose header named "X~Y" is not a string
    document = {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": {}, "headers": {"X~Y": 5}}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then the violation's path escapes "~" as "~0" (RFC 6901)
    assert await problem(response, 422) == invalid(
        "The payload is not a valid 'webhook' message.",
        [{"path": "/payload/headers/X~0Y", "keyword": "type", "message": "5 is not of type 'string'"}],
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://example.com/hook", "host example.com:443 is not in QM_WEBHOOK_ALLOWED_HOSTS (127.0.0.1, localhost)"),
        ("http://user:secret@127.0.0.1/hook", "credentials in the URL are not allowed; use headers"),
    ],
    ids=["outside-allow-list", "credentials"],
)
async def test_a_webhook_to_a_destination_not_allowed_is_422_saying_why(
    api_client: Any, url: str, message: str
) -> None:
    # Given a webhook to a host outside QM_WEBHOOK_ALLOWED_HOSTS, or with credentials in its URL
    document = {"type": "webhook", "payload": {"url": url, "body": {}}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then the answer is 422 on /payload/url, saying why
    assert await problem(response, 422) == invalid(
        "The payload is not a valid 'webhook' message.",
        [{"path": "/payload/url", "keyword": "allowedHosts", "message": message}],
    )


@pytest.mark.parametrize(
    ("url", "headers", "path", "message"),
    [
        pytest.param(
            "http://127.0.0.1/x\r\nHost: evil.test",
            {},
            "/payload/url",
            f"'http://127.0.0.1/x\\r\\nHost: evil.test' does not match {WEBHOOK_URL_PATTERN!r}",
            id="url-crlf",
        ),
        pytest.param(
            "http://127.0.0.1/\tx",
            {},
            "/payload/url",
            f"'http://127.0.0.1/\\tx' does not match {WEBHOOK_URL_PATTERN!r}",
            id="url-tab",
        ),
        pytest.param(
            "http://", {}, "/payload/url", f"'http://' does not match {WEBHOOK_URL_PATTERN!r}", id="url-no-host"
        ),
        pytest.param(
            "http://127.0.0.1/x",
            {"X-A": "1\r\nX-Injected: 2"},
            "/payload/headers/X-A",
            f"'1\\r\\nX-Injected: 2' does not match {HEADER_VALUE_PATTERN!r}",
            id="header-crlf",
        ),
        pytest.param(
            "http://127.0.0.1/x",
            {"X-A": "1\n"},
            "/payload/headers/X-A",
            f"'1\\n' does not match {HEADER_VALUE_PATTERN!r}",
            id="header-final-lf",
        ),
        pytest.param(
            "http://127.0.0.1/x",
            {"X-A": "a\u0000b"},
            "/payload/headers/X-A",
            f"'a\\x00b' does not match {HEADER_VALUE_PATTERN!r}",
            id="header-nul",
        ),
    ],
)
async def test_a_webhook_url_or_header_that_could_smuggle_another_request_is_422(
    api_client: Any, settings: Settings, sqs: Any, url: str, headers: dict[str, str], path: str, message: str
) -> None:
    # Given a webhook whose URL or header holds CR, LF, tab or NUL, or whose URL has no host
    document = {"type": "webhook", "payload": {"url": url, "body": {}, "headers": headers}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then it is a 422 on that field, naming the pattern it breaks, and nothing is sent
    assert await problem(response, 422) == invalid(
        "The payload is not a valid 'webhook' message.", [{"path": path, "keyword": "pattern", "message": message}]
    )
    assert queue_depth(sqs, settings.queue_name("webhook"))["visible"] == 0


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_a_webhook_breaking_its_schema_and_the_allow_list_gets_one_422_listing_both(api_client: Any) -> None:
    # Given a webhook with no body, to a host outside the allow list
    document = {"type": "webhook", "payload": {"url": "https://example.com/hook"}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then one 422 lists both, the schema's first
    assert await problem(response, 422) == invalid(
        "The payload is not a valid 'webhook' message.",
        [
            {"path": "/payload", "keyword": "required", "message": "'body' is a required property"},
            {
                "path": "/payload/url",
                "keyword": "allowedHosts",
                "message": "host example.com:443 is not in QM_WEBHOOK_ALLOWED_HOSTS (127.0.0.1, localhost)",
            },
        ],
    )


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("document", "detail", "errors"),
    [
        pytest.param([], "The envelope is not valid.", [("", "type", "[] is not of type 'object'")], id="array"),
        pytest.param(42, "The envelope is not valid.", [("", "type", "42 is not of type 'object'")], id="number"),
        pytest.param(None, "The envelope is not valid.", [("", "type", "None is not of type 'object'")], id="null"),
        pytest.param(
            {"type": 7, "payload": {}},
            "The envelope is not valid.",
            [("/type", "type", "7 is not of type 'string'")],
            id="type-is-a-number",
        ),
        pytest.param(
            {"type": "Log", "payload": {}},
            "The envelope is not valid.",
            [("/type", "pattern", "'Log' does not match '^[a-z][a-z0-9_]{0,31}$'")],
            id="type-not-a-type-name",
        ),
        pytest.param(
            {"type": "log", "payload": []},
            "The payload is not a valid 'log' message.",
            [("/payload", "type", "[] is not of type 'object'")],
            id="payload-is-an-array",
        ),
        pytest.param(
            {"type": "log", "payload": {"message": ""}},
            "The payload is not a valid 'log' message.",
            [("/payload/message", "minLength", "'' should be non-empty")],
            id="empty-message",
        ),
        pytest.param(
            {"type": "log", "payload": {"message": "x" * 10_001}},
            "The payload is not a valid 'log' message.",
            [("/payload/message", "maxLength", f"'{'x' * 298}…")],
            id="message-over-10000-characters",
        ),
        pytest.param(
            {**LOG, "delay_seconds": -1},
            "The envelope is not valid for a 'log' message.",
            [("/delay_seconds", "minimum", "-1 is less than the minimum of 0")],
            id="negative-delay",
        ),
        pytest.param(
            {**LOG, "delay_seconds": 1.5},
            "The envelope is not valid for a 'log' message.",
            [("/delay_seconds", "type", "1.5 is not of type 'integer'")],
            id="fractional-delay",
        ),
        pytest.param(
            {**LOG, "delay_seconds": True},
            "The envelope is not valid for a 'log' message.",
            [("/delay_seconds", "type", "True is not of type 'integer'")],
            id="boolean-delay",
        ),
        pytest.param(
            {"type": "webhook", "payload": {"url": "ftp://127.0.0.1/x", "body": None}},
            "The payload is not a valid 'webhook' message.",
            [("/payload/url", "pattern", f"'ftp://127.0.0.1/x' does not match {WEBHOOK_URL_PATTERN!r}")],
            id="webhook-scheme",
        ),
        pytest.param(
            {"type": "webhook", "payload": {"url": "http://127.0.0.1:99999/x", "body": None}},
            "The payload is not a valid 'webhook' message.",
            [("/payload/url", "allowedHosts", "not a valid URL: Port out of range 0-65535")],
            id="webhook-port-out-of-range",
        ),
    ],
)
async def test_odd_documents_are_422_never_500(
    api_client: Any, document: Any, detail: str, errors: list[tuple[str, str, str]]
) -> None:
    # Given a JSON document a careless client might send
    # When it is posted
    response = await api_client.post("/messages", data=json.dumps(document), headers=JSON)
    # Then the answer is a 422 naming what is wrong, never a 500
    assert await problem(response, 422) == invalid(
        detail, [{"path": path, "keyword": keyword, "message": message} for path, keyword, message in errors]
    )


# Other routes


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_get_schemas_lists_every_type_with_its_link_and_title(api_client: Any) -> None:
    # When the schemas are listed
    response = await api_client.get("/schemas")
    # Then every shipped type is there, with the link to its schema
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        "types": [
            {"type": "log", "schema": "/schemas/log", "title": "log"},
            {"type": "ordered", "schema": "/schemas/ordered", "title": "ordered"},
            {"type": "webhook", "schema": "/schemas/webhook", "title": "webhook"},
        ]
    }


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize("message_type", ["log", "ordered", "webhook"])
async def test_get_schema_serves_the_schema_file_as_schema_json(api_client: Any, message_type: str) -> None:
    # When one type's schema is asked for
    response = await api_client.get(f"/schemas/{message_type}")
    # Then it is the shipped file itself, as application/schema+json
    assert response.status == 200
    assert response.content_type == "application/schema+json"
    assert await response.json() == json.loads((DEFAULT_SCHEMAS_DIR / f"{message_type}.json").read_text())


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_an_unknown_schema_is_a_404_problem_naming_the_known_types(api_client: Any) -> None:
    # When the schema of a type that does not exist is asked for
    response = await api_client.get("/schemas/sms")
    # Then the answer is a 404 problem naming the types there are
    assert await problem(response, 404) == {
        "type": "urn:queue-manager:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "No message type 'sms'; known: log, ordered, webhook.",
    }


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_healthz_is_200_ok(api_client: Any) -> None:
    response = await api_client.get("/healthz")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {"status": "ok"}


async def test_readyz_is_200_naming_every_queue_while_sqs_answers(api_client: Any, settings: Settings) -> None:
    response = await api_client.get("/readyz")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        "status": "ready",
        "queues": [
            f"{settings.queue_prefix}_log",
            f"{settings.queue_prefix}_ordered.fifo",
            f"{settings.queue_prefix}_webhook",
        ],
    }


async def test_queues_reports_depths_that_count_a_posted_message(api_client: Any, settings: Settings) -> None:
    # Given one log message posted
    assert (await api_client.post("/messages", json=LOG)).status == 202
    # When the queues are listed
    response = await api_client.get("/queues")
    # Then the log queue counts it as visible, and nothing else holds anything
    assert response.status == 200
    prefix = settings.queue_prefix

    def queue(message_type: str, visible: int, *, suffix: str = "") -> dict[str, Any]:
        return {
            "type": message_type,
            "name": f"{prefix}_{message_type}{suffix}",
            "visible": visible,
            "in_flight": 0,
            "delayed": 0,
            "oldest_age_seconds": None,
            "dead_letter": {
                "name": f"{prefix}_{message_type}_dlq{suffix}",
                "visible": 0,
                "in_flight": 0,
                "delayed": 0,
                "oldest_age_seconds": None,
            },
        }

    assert await response.json() == {
        "queues": [queue("log", 1), queue("ordered", 0, suffix=".fifo"), queue("webhook", 0)],
        "notes": {"oldest_age_seconds": OLDEST_AGE_NOTE},
    }


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_an_unknown_route_is_a_404_problem(api_client: Any) -> None:
    response = await api_client.get("/nope")
    assert await problem(response, 404) == {
        "type": "urn:queue-manager:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "No resource at /nope.",
    }


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", "/messages", "POST"), ("DELETE", "/messages", "POST"), ("POST", "/healthz", "GET,HEAD")],
)
async def test_a_method_a_route_does_not_allow_is_a_405_problem_with_allow(
    api_client: Any, method: str, path: str, allowed: str
) -> None:
    response = await api_client.request(method, path)
    assert await problem(response, 405) == {
        "type": "urn:queue-manager:problem:method-not-allowed",
        "title": "Method Not Allowed",
        "status": 405,
        "detail": f"{method} is not allowed on {path}; allowed: {allowed}.",
    }
    assert response.headers["Allow"] == allowed


# SQS outage


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_while_sqs_is_unreachable_sends_readiness_and_depths_are_503_with_retry_after(
    api_client: Any, sqs_server: SQSServer, settings: Settings
) -> None:
    # Given SQS stops answering (each call times out after 2 s, and botocore tries three times)
    sqs_server.pause()
    try:
        # When a message is posted, and readiness and depths are asked for, at once
        posted, ready, depths = await asyncio.gather(
            api_client.post("/messages", json=LOG), api_client.get("/readyz"), api_client.get("/queues")
        )
    finally:
        sqs_server.resume()
    # Then all three are 503 problems saying why, with Retry-After
    unavailable = {"type": "urn:queue-manager:problem:sqs-unavailable", "title": "Service Unavailable", "status": 503}
    # (the send may have reached SQS before it froze: its outcome is unknown, and the answer says so)
    assert await problem(posted, 503) == {
        **unavailable,
        "type": "urn:queue-manager:problem:outcome-unknown",
        "detail": "The outcome is unknown: SQS may have the message "
        "(SQS did not answer within 2 s (ReadTimeoutError)); "
        "send an Idempotency-Key with each message, so that a retry cannot make a second one.",
    }
    assert posted.headers["Retry-After"] == "1"
    # (/readyz is open to anyone: it names the queue whose check failed, not the endpoint or the error)
    assert await problem(ready, 503) == {
        **unavailable,
        "detail": f"Not ready: the check of queue {settings.queue_name('log')!r} failed; the API's log says why.",
    }
    assert ready.headers["Retry-After"] == "5"
    assert await problem(depths, 503) == {
        **unavailable,
        "detail": "Could not read queue depths: SQS cannot be reached (ReadTimeoutError)",
    }
    # (no 503 names the SQS endpoint: that stays in the API's log)
    for answer in (posted, ready, depths):
        assert sqs_server.url.split("//")[1] not in await answer.text()
    assert depths.headers["Retry-After"] == "5"
    # And once SQS answers again, so does the API, without a restart
    assert (await api_client.get("/readyz")).status == 200
    assert (await api_client.post("/messages", json=LOG)).status == 202


# The entry point


async def test_the_qm_api_entry_point_serves_and_sends_to_sqs(api_process: Any, settings: Settings, sqs: Any) -> None:
    # Given `qm-api` running as a process of its own
    _, url = await asyncio.to_thread(api_process)
    # When a message is posted to it over HTTP
    async with ClientSession() as session, session.post(f"{url}/messages", json=LOG) as response:
        status, answer = response.status, await response.json()
    # Then it answers 202 and the message is on its queue
    assert status == 202
    assert answer == {"id": answer["id"], "type": "log", "queue": f"{settings.queue_prefix}_log"}
    messages = await asyncio.to_thread(drain, sqs, f"{settings.queue_prefix}_log")
    assert [json.loads(base64.b64decode(m["Body"]))["message_id"] for m in messages] == [answer["id"]]
