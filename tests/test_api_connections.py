"""Slow and idle clients on a real `qm-api`: no connection is held longer than its settings allow.

The request line and headers must arrive within QM_HEADER_TIMEOUT_SECONDS of their first byte (else
408 problem+json, and the connection closes); a connection with no request under way is closed after
QM_KEEPALIVE_SECONDS. These speak HTTP over raw sockets, as a slow client would.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.api

HEADER_TIMEOUT_SECONDS = 1.5
KEEPALIVE_SECONDS = 1.0
TIMEOUTS = {"QM_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_SECONDS), "QM_KEEPALIVE_SECONDS": str(KEEPALIVE_SECONDS)}

#: How much later than its bound a connection may be closed (a loaded 2-core machine).
MARGIN_SECONDS = 1.0

HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@contextlib.contextmanager
def connect(url: str) -> Iterator[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket, *, deadline: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    received = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the connection is still open at the deadline; received {received!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return received, time.monotonic()
        received += chunk


def read_response(sock: socket.socket, *, deadline: float) -> tuple[int, dict[str, str], bytes]:
    """One response off a keep-alive connection: status, headers (lower-case names) and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a whole response; received {data!r}"
        data += chunk
    status, headers, body = parse(data)
    while len(body) < int(headers.get("content-length", "0")):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        body += sock.recv(65536)
    return status, headers, body


def parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def trickle(sock: socket.socket, data: bytes, *, pieces: int, over_seconds: float) -> None:
    """Send `data` in `pieces` parts spread over `over_seconds`, as a slow client does."""
    size = -(-len(data) // pieces)
    for start in range(0, len(data), size):
        if start:
            select.select([], [], [], over_seconds / pieces)  # the client's own pace, not a wait for the server
        sock.sendall(data[start : start + size])


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
def test_request_headers_sent_a_byte_a_second_are_408_and_closed_within_the_header_timeout(
    api_process: Any,
) -> None:
    # Given `qm-api` that gives request headers 1.5 s to arrive
    _, url = api_process(env=TIMEOUTS)
    request = b"POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\r\n"
    with connect(url) as sock:
        # When a client sends its request line a byte a second, until the server answers
        started = time.monotonic()
        deadline = started + HEADER_TIMEOUT_SECONDS + MARGIN_SECONDS
        for byte in request:
            sock.sendall(bytes([byte]))
            readable, _, _ = select.select([sock], [], [], min(1.0, max(0.0, deadline - time.monotonic())))
            if readable or time.monotonic() >= deadline:
                break
        received, closed_at = read_until_closed(sock, deadline=deadline)
    # Then it gets a 408 problem naming the limit, and the connection closes, within the bound
    status, headers, body = parse(received)
    assert status == 408, received
    assert received.startswith(b"HTTP/1.0 408"), received  # as aiohttp answers what it could not parse
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(body) == {
        "type": "urn:queue-manager:problem:request-timeout",
        "title": "Request Timeout",
        "status": 408,
        "detail": "The request line and headers did not arrive within 1.5 s, the limit (QM_HEADER_TIMEOUT_SECONDS).",
    }
    assert HEADER_TIMEOUT_SECONDS - 0.1 < closed_at - started < HEADER_TIMEOUT_SECONDS + MARGIN_SECONDS


def test_requests_whose_headers_arrive_in_time_are_served_however_long_the_connection_lives(
    api_process: Any,
) -> None:
    # Given `qm-api` that gives request headers 1.5 s to arrive
    _, url = api_process(env=TIMEOUTS)
    body = json.dumps({"type": "log", "payload": {"message": "slow but in time"}}).encode()
    post = (
        b"POST /messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with connect(url) as sock:
        started = time.monotonic()
        statuses = []
        # When a client sends three requests on one connection, the headers of each over 0.8 s
        for request in (HEALTHZ, post, HEALTHZ):
            trickle(sock, request, pieces=4, over_seconds=0.8)
            status, _, answer = read_response(sock, deadline=time.monotonic() + 10)
            statuses.append(status)
        lived = time.monotonic() - started
    # Then each is answered, on a connection that lived longer than the header timeout
    assert statuses == [200, 202, 200], answer
    assert lived > HEADER_TIMEOUT_SECONDS


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
def test_an_idle_connection_is_closed_after_the_keepalive_setting_without_an_answer(api_process: Any) -> None:
    # Given `qm-api` that keeps idle connections 1 s
    _, url = api_process(env=TIMEOUTS)
    with connect(url) as used, connect(url) as unused:
        # When one connection is used for a request, then left idle, and another is never used
        sent_at = time.monotonic()
        used.sendall(HEALTHZ)
        status, _, _ = read_response(used, deadline=time.monotonic() + 10)
        idle_since = time.monotonic()
        deadline = idle_since + KEEPALIVE_SECONDS + MARGIN_SECONDS
        after_use, used_closed_at = read_until_closed(used, deadline=deadline)
        never, unused_closed_at = read_until_closed(unused, deadline=deadline)
    # Then both are closed after the keepalive time, with nothing sent: no request was under way. (The
    # server's idle time starts between the request's sending and the answer's reading here: the lower
    # bound counts from the one, the upper from the other, so a slow read on a busy machine moves neither.)
    assert status == 200
    assert (after_use, never) == (b"", b"")
    assert used_closed_at - sent_at > KEEPALIVE_SECONDS - 0.1
    assert used_closed_at - idle_since < KEEPALIVE_SECONDS + MARGIN_SECONDS
    assert unused_closed_at - idle_since < KEEPALIVE_SECONDS + MARGIN_SECONDS
