"""Hostile and malformed input: every refusal is a precise problem+json, never a 500 or a hang,
and nothing is done before the request is known to be acceptable.

Several tests speak HTTP over a raw socket, to send what well-behaved clients cannot: bytes that
are not UTF-8 in a header, a body trickled a byte at a time, request lines aiohttp's parser refuses.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import dataclasses
import io
import json
import logging
import signal
import time
import urllib.request
from typing import Any

import pytest

from api import keys
from api.app import create_app
from queue_manager.settings import Settings
from queue_manager.sqs import constants
from tests.conftest import SQSServer
from tests.support import JSON, LOG, PROBLEM, dead_letter, drain, eventually, listening, problem, queue_depth, samples

pytestmark = pytest.mark.api

#: The body limits the README and the OpenAPI document state.
MESSAGE_BODY_LIMIT_BYTES = 790_528
BATCH_BODY_LIMIT_BYTES = 7_905_280

#: The deepest nesting of arrays and objects a body may have.
DEPTH_LIMIT = 64

UNAUTHORIZED = {
    "type": "urn:queue-manager:problem:unauthorized",
    "title": "Unauthorized",
    "status": 401,
    "detail": "A valid API key is required: send `Authorization: Bearer <key>`.",
}


@dataclasses.dataclass
class RawResponse:
    """An HTTP response read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    #: Whether the server closed the connection once it had answered.
    closed: bool = False

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip()

    def problem(self, status: int) -> dict[str, Any]:
        assert self.status == status, (self.status, self.headers, self.body[:500])
        assert self.content_type == PROBLEM, (self.headers, self.body[:500])
        document: dict[str, Any] = json.loads(self.body)
        return document


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length)
    return RawResponse(int(status_line.split()[1]), headers, body)


async def exchange(host: str, port: int, data: bytes, *, timeout: float = 10.0) -> RawResponse:
    """Send `data` as it is on a new connection and read one response."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            response = await read_response(reader)
            response.closed = await reader.read(1) == b""
            return response
    finally:
        writer.close()


def request(
    method: str,
    path: str,
    *,
    headers: dict[str, bytes] | None = None,
    body: bytes = b"",
    content_length: int | None = None,
) -> bytes:
    """A raw HTTP/1.1 request; header values are bytes, sent as they are."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in (headers or {}).items():
        lines.append(name.encode() + b": " + value)
    if method == "POST":
        lines.append(b"Content-Type: application/json")
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def sends_begun(url: str) -> int:
    """The sends to SQS a `qm-api` process has begun, read from its /metrics (which need no SQS)."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        found = samples(response.read().decode())
    actions = (("action", "SendMessage"),), (("action", "SendMessageBatch"),)
    return int(sum(found.get(("qm_api_sqs_requests_total", labels), 0) for labels in actions))


def nested(depth: int) -> str:
    """JSON text of exactly `depth` nested objects and arrays in turn, an object outermost.

    Written as text: the test's own json.dumps would run out of stack long before the API does.
    """
    opening = "".join('{"a": ' if level % 2 == 0 else "[" for level in range(depth))
    closing = "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    return opening + "1" + closing


def log_with_fields(fields: str) -> str:
    """A log message whose `fields` is the JSON text `fields`: the body is two levels deeper than it."""
    return '{"type": "log", "payload": {"message": "x", "fields": ' + fields + "}}"


# Authorization bytes that are not UTF-8


PROTECTED = [
    ("GET", "/schemas", b""),
    ("GET", "/queues", b""),
    ("POST", "/messages", json.dumps(LOG).encode()),
    ("POST", "/messages/batch", json.dumps({"messages": [LOG]}).encode()),
    ("GET", "/queues/log/dead-letters", b""),
    ("POST", "/queues/log/redrive", b"{}"),
]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
async def test_an_authorization_header_that_is_not_utf8_is_401_on_every_protected_route(
    aiohttp_client: Any, settings: Settings, sqs: Any, method: str, path: str, body: bytes
) -> None:
    # Given an API with keys, and a dead letter a redrive could move
    client = await aiohttp_client(create_app(dataclasses.replace(settings, api_keys=("right-key",))))
    await asyncio.to_thread(dead_letter, client.server.app, sqs, settings, {"message": "stays"})
    # When a request carries a byte that is not UTF-8 in its key
    data = request(method, path, headers={"Authorization": b"Bearer right-key\xff"}, body=body)
    response = await exchange(client.server.host, client.server.port, data)
    # Then it is refused as unauthorised, with the challenge, and nothing moved or was sent
    assert response.problem(401) == UNAUTHORIZED
    assert response.headers["www-authenticate"] == 'Bearer realm="queue-manager"'
    assert queue_depth(sqs, settings.queue_name("log") + "_dlq")["visible"] == 1
    assert queue_depth(sqs, settings.queue_name("log"))["visible"] == 0


async def test_without_api_keys_a_redrive_with_an_authorization_that_is_not_utf8_moves_nothing(
    api_client: Any, settings: Settings, sqs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an API without keys, and one dead letter
    await asyncio.to_thread(dead_letter, api_client.server.app, sqs, settings, {"message": "stays"})
    # When a redrive carries credentials that are not UTF-8
    data = request("POST", "/queues/log/redrive", headers={"Authorization": b"Bearer \xc3\x28"}, body=b"{}")
    with caplog.at_level(logging.INFO, logger="queue_manager.audit"):
        response = await exchange(api_client.server.host, api_client.server.port, data)
    # Then it is refused before anything is done: the dead letter stays where it was
    assert response.problem(401) == UNAUTHORIZED
    assert queue_depth(sqs, settings.queue_name("log") + "_dlq")["visible"] == 1
    assert queue_depth(sqs, settings.queue_name("log"))["visible"] == 0
    assert [r for r in caplog.records if r.name == "queue_manager.audit"] == []


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
async def test_without_api_keys_a_redrive_is_audited_as_anonymous_whatever_the_authorization(
    api_client: Any, settings: Settings, sqs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an API without keys, and one dead letter
    await asyncio.to_thread(dead_letter, api_client.server.app, sqs, settings, {"message": "moves"})
    # When it is redriven with a bearer token the API does not know
    with caplog.at_level(logging.INFO, logger="queue_manager.audit"):
        response = await api_client.post("/queues/log/redrive", json={}, headers={"Authorization": "Bearer x"})
    # Then it moved, and the audit line says who: nobody known
    assert response.status == 200, await response.text()
    assert (await response.json())["moved"] == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "queue_manager.audit"]
    dlq = settings.queue_name("log") + "_dlq"
    assert lines == [f"who=anonymous what=redrive queue={dlq} count=1 method=receive-send-delete."]


# Nesting


def too_deep(path: str) -> dict[str, Any]:
    """The whole 400 problem body for a body nested past the limit at `path`."""
    return {
        "type": "urn:queue-manager:problem:malformed-json",
        "title": "Malformed JSON",
        "status": 400,
        "detail": f"The body nests arrays and objects more than {DEPTH_LIMIT} levels deep, the most the API reads.",
        "errors": [{"path": path, "keyword": "maxDepth", "message": f"more than {DEPTH_LIMIT} levels deep"}],
    }


#: Where a log message built by log_with_fields(nested(...)) first passes the depth limit.
PAST_THE_LIMIT = "/payload/fields" + "".join("/a" if step % 2 == 0 else "/0" for step in range(DEPTH_LIMIT - 2))


@pytest.mark.parametrize("depth", [DEPTH_LIMIT + 1, 200])
async def test_json_nested_past_the_depth_limit_is_400_naming_the_limit_and_where(
    api_client: Any, settings: Settings, sqs: Any, depth: int
) -> None:
    # Given a log message whose fields nest so deep the whole body is `depth` levels
    # When it is posted
    response = await api_client.post("/messages", data=log_with_fields(nested(depth - 2)), headers=JSON)
    # Then it is a 400 naming the limit and the first container past it, and nothing was sent
    assert await problem(response, 400) == too_deep(PAST_THE_LIMIT)
    assert queue_depth(sqs, settings.queue_name("log"))["visible"] == 0


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
async def test_json_nested_near_the_parsers_own_limit_is_a_400_from_qm_api_never_a_500(api_process: Any) -> None:
    # Given `qm-api` running as users run it (the stack as shallow as in production)
    _, url = await asyncio.to_thread(api_process)
    host, port = url.removeprefix("http://").split(":")
    # When payloads nest 960 to 999 levels: around there Python's parser still reads them, but
    # validating or encoding them for SQS would overflow the stack
    answers = []
    for depth in range(960, 1000):
        body = log_with_fields(nested(depth - 2)).encode()
        response = await exchange(host, int(port), request("POST", "/messages", body=body))
        answers.append((depth, response.status, json.loads(response.body)))
    # Then every one is a 400 problem naming the limit, never a 500 or a 202
    assert [(depth, status) for depth, status, _ in answers if status != 400] == []
    assert {body["detail"] for _, _, body in answers} == {too_deep(PAST_THE_LIMIT)["detail"]}


async def test_json_nested_as_deep_as_the_limit_is_accepted(api_client: Any) -> None:
    response = await api_client.post("/messages", data=log_with_fields(nested(DEPTH_LIMIT - 2)), headers=JSON)
    assert response.status == 202, await response.text()


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_json_nested_past_the_limit_in_a_batch_entry_is_400(api_client: Any) -> None:
    document = '{"messages": [' + json.dumps(LOG) + ", " + log_with_fields(nested(DEPTH_LIMIT)) + "]}"
    response = await api_client.post("/messages/batch", data=document, headers=JSON)
    assert (await problem(response, 400))["errors"][0]["keyword"] == "maxDepth"


# Media types and encodings


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("content_type", "detail"),
    [
        ("application/vnd.queue-manager+json", ", not application/vnd.queue-manager+json"),
        ("application/merge-patch+json", ", not application/merge-patch+json"),
        ("application/problem+json", ", not application/problem+json"),
        ("application/json; charset=utf-16", " in UTF-8, not charset=utf-16"),
    ],
    ids=["vendor-suffix", "merge-patch", "problem", "utf-16-charset"],
)
async def test_json_media_types_other_than_application_json_in_utf8_are_415(
    api_client: Any, content_type: str, detail: str
) -> None:
    response = await api_client.post("/messages", data=json.dumps(LOG), headers={"Content-Type": content_type})
    body = await problem(response, 415)
    assert body["detail"] == f"The body must be application/json{detail}."


async def test_a_charset_of_utf8_in_any_case_is_accepted(api_client: Any) -> None:
    response = await api_client.post(
        "/messages", data=json.dumps(LOG), headers={"Content-Type": "application/json; charset=UTF-8"}
    )
    assert response.status == 202, await response.text()


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"type": "log", "payload": {"message": "\\ud800"}}', "/payload/message"),
        (b'{"type": "log", "payload": {"message": "x", "fields": {"k": ["a", "\\udfff b"]}}}', "/payload/fields/k/1"),
        (b'{"type": "log", "payload": {"message": "x", "fields": {"\\udc00": 1}}}', "/payload/fields"),
    ],
    ids=["high-surrogate", "low-surrogate-in-an-array", "in-a-property-name"],
)
async def test_a_lone_surrogate_escape_is_400_naming_where(api_client: Any, raw: bytes, path: str) -> None:
    # Given JSON whose \u escapes leave half a UTF-16 pair, which no UTF-8 text can hold
    # When it is posted
    response = await api_client.post("/messages", data=raw, headers=JSON)
    # Then it is a 400 naming where the broken string is
    assert await problem(response, 400) == {
        "type": "urn:queue-manager:problem:malformed-json",
        "title": "Malformed JSON",
        "status": 400,
        "detail": "The body is not valid JSON: a string holds a lone UTF-16 surrogate, which UTF-8 cannot carry.",
        "errors": [{"path": path, "keyword": "encoding", "message": "holds a lone surrogate (\\ud800-\\udfff)"}],
    }


async def test_a_surrogate_pair_escape_is_one_character_and_accepted(
    api_client: Any, sqs: Any, settings: Settings
) -> None:
    response = await api_client.post(
        "/messages", data=b'{"type": "log", "payload": {"message": "\\ud83d\\ude00"}}', headers=JSON
    )
    assert response.status == 202, await response.text()
    (message,) = await asyncio.to_thread(drain, sqs, settings.queue_name("log"))
    assert json.loads(base64.b64decode(message["Body"]))["args"] == [{"message": "\U0001f600"}]


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("encoded", "detail"),
    [
        (
            codecs.BOM_UTF16_LE + json.dumps(LOG).encode("utf-16-le"),
            "The body is not UTF-8: invalid start byte at byte 0.",
        ),
        (json.dumps(LOG).encode("utf-16-be"), "The body is not valid JSON: Expecting value at line 1, column 1."),
        (
            json.dumps(LOG).encode("utf-32"),
            "The body is not UTF-8: invalid start byte at byte 0.",
        ),
        (codecs.BOM_UTF8 + json.dumps(LOG).encode(), "The body starts with a byte order mark; send UTF-8 without one."),
    ],
    ids=["utf-16-with-bom", "utf-16-be-without-bom", "utf-32", "utf-8-with-bom"],
)
async def test_a_body_in_another_encoding_than_utf8_is_400(api_client: Any, encoded: bytes, detail: str) -> None:
    response = await api_client.post("/messages", data=encoded, headers=JSON)
    assert (await problem(response, 400))["detail"] == detail


# Body size of a batch


def too_large(limit: int, path: str) -> dict[str, Any]:
    return {
        "type": "urn:queue-manager:problem:payload-too-large",
        "title": "Payload Too Large",
        "status": 413,
        "detail": f"The request body is larger than {limit} bytes, the most {path} accepts "
        "(a message must fit in SQS's 1 MiB once base64-encoded).",
    }


async def chunks(data: bytes, size: int = 1024 * 1024) -> Any:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize("sent_as", ["content-length", "chunked"])
async def test_a_batch_body_over_what_ten_full_send_batches_carry_is_413_naming_the_limit(
    api_client: Any, sent_as: str
) -> None:
    # Given a batch body one byte over ten times the most one message's body may be (100 messages
    # leave in at least ten SendMessageBatch calls of at most 1 MiB each)
    assert BATCH_BODY_LIMIT_BYTES == MESSAGE_BODY_LIMIT_BYTES * 100 // constants.MAX_BATCH_ENTRIES
    body = b" " * (BATCH_BODY_LIMIT_BYTES + 1)
    # When it is posted
    data = io.BytesIO(body) if sent_as == "content-length" else chunks(body)
    response = await api_client.post("/messages/batch", data=data, headers=JSON)
    # Then it is refused with the limit, unread
    assert await problem(response, 413) == too_large(BATCH_BODY_LIMIT_BYTES, "/messages/batch")


async def test_a_batch_body_of_exactly_the_limit_is_read(api_client: Any) -> None:
    batch = json.dumps({"messages": [LOG]}).encode()
    body = batch + b" " * (BATCH_BODY_LIMIT_BYTES - len(batch))
    response = await api_client.post("/messages/batch", data=io.BytesIO(body), headers=JSON)
    assert response.status == 202, await response.text()


# A body that does not arrive


async def test_a_body_trickled_a_byte_at_a_time_is_408_within_the_body_timeout(
    aiohttp_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given an API that waits at most 1 s for a request body
    client = await aiohttp_client(create_app(dataclasses.replace(settings, body_timeout_seconds=1)))
    body = json.dumps(LOG).encode()
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)

    async def trickle() -> None:
        for byte in body:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.25)

    # When a client sends the headers, then the body a byte every 250 ms (about 10 s for all of it)
    started = time.monotonic()
    writer.write(request("POST", "/messages", content_length=len(body)))
    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(10):
            response = await read_response(reader)
        elapsed = time.monotonic() - started
    finally:
        sender.cancel()
        writer.close()
    # Then the API answers 408 after about a second, naming the limit, and sends nothing
    assert response.problem(408) == {
        "type": "urn:queue-manager:problem:request-timeout",
        "title": "Request Timeout",
        "status": 408,
        "detail": "The request body did not arrive within 1 s, the limit (QM_BODY_TIMEOUT_SECONDS).",
    }
    assert response.headers["connection"] == "close"
    assert 0.9 < elapsed < 3, elapsed
    assert queue_depth(sqs, settings.queue_name("log"))["visible"] == 0


# What aiohttp's own parser refuses, on the real `qm-api` process

TOO_LONG = "the request line or a header is longer than 8190 bytes"


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", TOO_LONG, id="header-too-long"
        ),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", TOO_LONG, id="line-too-long"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n",
            "too many headers received",
            id="too-many-headers",
        ),
        pytest.param(b"G(T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", "invalid method encountered", id="bad-method"),
        pytest.param(b"hello there\r\n\r\n", "invalid method encountered", id="bad-request-line"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: 1\r\n\r\n", "invalid header token", id="bad-header-name"
        ),
        pytest.param(
            b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            "invalid character in chunk size",
            id="bad-chunk-size",
        ),
    ],
)
async def test_requests_aiohttp_cannot_parse_are_400_problems_saying_why(
    api_process: Any, data: bytes, reason: str
) -> None:
    # Given `qm-api` running as users run it
    _, url = await asyncio.to_thread(api_process)
    host, port = url.removeprefix("http://").split(":")
    # When it gets a request its HTTP parser refuses
    response = await exchange(host, int(port), data)
    # Then the answer is a 400 problem saying why (naming the limit where there is one), and the connection closes
    assert response.problem(400) == {
        "type": "urn:queue-manager:problem:bad-request",
        "title": "Bad Request",
        "status": 400,
        "detail": f"The request is not valid HTTP/1.1: {reason}.",
    }
    assert response.closed


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_qm_api_on_sigterm_lets_a_send_in_flight_finish_then_exits_0(
    api_process: Any, settings: Settings, sqs: Any, sqs_server: SQSServer
) -> None:
    # Given `qm-api` with a message waiting for SQS, which has stopped answering for a moment
    api, url = await asyncio.to_thread(api_process)
    host, port = url.removeprefix("http://").split(":")
    sqs_server.pause()
    try:
        posted = asyncio.create_task(
            exchange(host, int(port), request("POST", "/messages", body=json.dumps(LOG).encode()))
        )
        await eventually(lambda: sends_begun(url) == 1, timeout=10, what="the API's send to SQS")
        # When the API is told to stop, and SQS answers again once it has closed its port
        api.signal(signal.SIGTERM)
        await eventually(lambda: listening(url) == 0, timeout=10, what="the API to stop listening")
    finally:
        sqs_server.resume()
    response = await posted
    # Then that request is answered 202, SQS has its message, and the process exits cleanly
    assert response.status == 202, response.body
    assert await asyncio.to_thread(api.wait, 30) == 0, api.output()
    (message,) = await asyncio.to_thread(drain, sqs, settings.queue_name("log"))
    assert json.loads(base64.b64decode(message["Body"]))["message_id"] == json.loads(response.body)["id"]


# The queue names GET /queues lists


async def test_dead_letter_routes_take_the_queue_names_get_queues_lists(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given a dead letter on the log type's queue, and the names GET /queues gives it
    (message_id,) = await asyncio.to_thread(dead_letter, api_client.server.app, sqs, settings, {"message": "x"})
    listed = next(q for q in (await (await api_client.get("/queues")).json())["queues"] if q["type"] == "log")
    # When its dead letters are peeked by type, by queue name and by dead-letter queue name
    for name in ("log", listed["name"], listed["dead_letter"]["name"]):
        response = await api_client.get(f"/queues/{name}/dead-letters")
        # Then each shows the same dead letter of the same queue
        assert response.status == 200, (name, await response.text())
        body = await response.json()
        assert (body["type"], body["queue"]) == ("log", listed["dead_letter"]["name"])
        assert [m["id"] for m in body["messages"]] == [message_id]
    # And a redrive by queue name moves it
    response = await api_client.post(f"/queues/{listed['name']}/redrive", json={})
    assert response.status == 200
    assert (await response.json())["ids"] == [message_id]


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_another_queue_name_is_404(api_client: Any, settings: Settings) -> None:
    response = await api_client.get(f"/queues/{settings.queue_prefix}_sms/dead-letters")
    assert (await problem(response, 404))["detail"] == (
        f"No message type or queue '{settings.queue_prefix}_sms'; known: log, ordered, webhook "
        f"(queues {settings.queue_prefix}_log, {settings.queue_prefix}_ordered.fifo, {settings.queue_prefix}_webhook "
        "and their _dlq)."
    )


# Readiness says nothing of the endpoint or the error


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_readyz_while_sqs_is_down_names_no_endpoint_and_no_exception_but_logs_them(
    api_client: Any, sqs_server: SQSServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Given SQS stops answering
    sqs_server.pause()
    try:
        with caplog.at_level(logging.WARNING, logger="api.handlers"):
            response = await api_client.get("/readyz")
    finally:
        sqs_server.resume()
    # Then /readyz (open to anyone) is a 503 that says what, not where or how
    body = await problem(response, 503)
    assert body == {
        "type": "urn:queue-manager:problem:sqs-unavailable",
        "title": "Service Unavailable",
        "status": 503,
        "detail": f"Not ready: the check of queue {api_client.server.app[keys.SETTINGS].queue_name('log')!r} failed; "
        "the API's log says why.",
    }
    assert sqs_server.url not in json.dumps(body)
    # And the log has the reason, with the endpoint
    logged = [r.getMessage() for r in caplog.records if r.name == "api.handlers"]
    assert any("Not ready" in line and sqs_server.url in line for line in logged), logged
