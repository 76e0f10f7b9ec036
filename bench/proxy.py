"""`python -m bench.proxy --upstream URL --port P --sqs-rtt-ms N`: a delaying, counting HTTP proxy for SQS.

Every request waits N ms, then goes to the upstream SQS server on a kept-alive connection, and the
answer goes back byte for byte. A client tags its requests by putting `/t/<tag>` in front of the
path (an endpoint URL such as `http://127.0.0.1:P/t/api-ours`); the proxy strips it and counts
the request under that tag and its action (the `X-Amz-Target` header of the JSON protocol, or the
`Action` field of the query protocol).

It speaks just enough HTTP/1.1 for SQS clients (Content-Length or chunked bodies, keep-alive,
`Expect: 100-continue`) and copies heads and bodies without building header objects, so that
it costs a small fraction of what the SQS server and the clients cost per request.

Control endpoints (never delayed, never counted):
- `GET /_proxy/counts`: `{tag: {action: requests}}` since start;
- `GET /_proxy/stats`: requests, upstream errors, the most requests in flight at once, the delay.

It prints READY once it listens and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
import urllib.parse
from collections import Counter

#: Below the upstream's idle timeout (hypercorn closes idle keep-alives after 5 s), so a pooled
#: connection is not reused just as the server drops it.
UPSTREAM_KEEPALIVE_SECONDS = 3.0

#: Longer than any long poll (20 s) plus the delay.
UPSTREAM_READ_TIMEOUT_SECONDS = 60.0

#: The longest request or response head accepted.
MAX_HEAD_BYTES = 64 * 1024


class BadMessage(Exception):
    """Raised when a request or response is not HTTP/1.1 this proxy can carry."""


class Head:
    """The raw head of an HTTP message and the few fields the proxy needs from it."""

    __slots__ = ("chunked", "close", "content_length", "expect_continue", "first_line", "lines", "target")

    def __init__(self, raw: bytes) -> None:
        lines = raw.split(b"\r\n")
        self.first_line = lines[0]
        self.lines = [line for line in lines[1:] if line]
        self.content_length = 0
        self.chunked = False
        self.close = False
        self.expect_continue = False
        self.target = ""
        for line in self.lines:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                self.content_length = int(value.strip())
            elif key == b"transfer-encoding":
                self.chunked = b"chunked" in value.lower()
            elif key == b"connection":
                self.close = b"close" in value.lower()
            elif key == b"expect":
                self.expect_continue = b"100-continue" in value.lower()
            elif key == b"x-amz-target":
                self.target = value.strip().decode("latin-1")

    def encode(self, *, first_line: bytes | None = None, drop: tuple[bytes, ...] = ()) -> bytes:
        kept = [line for line in self.lines if line.partition(b":")[0].strip().lower() not in drop]
        return b"\r\n".join([first_line or self.first_line, *kept]) + b"\r\n\r\n"


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next head on the stream, or None at a clean end of stream."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadMessage("the stream ended inside a head") from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise BadMessage("head too long") from exc
    return Head(raw[:-4])


async def read_body(reader: asyncio.StreamReader, head: Head) -> bytes:
    """The body as it was on the wire (chunk framing kept when chunked)."""
    if not head.chunked:
        return await reader.readexactly(head.content_length) if head.content_length else b""
    parts = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        parts.append(size_line)
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while True:
                line = await reader.readuntil(b"\r\n")
                parts.append(line)
                if line == b"\r\n":
                    return b"".join(parts)
        parts.append(await reader.readexactly(size + 2))


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (only to find a query-protocol action)."""
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return b"".join(out)


def action_of(target: str, body: bytes) -> str:
    """The SQS action of a request: `AmazonSQS.SendMessage` -> `SendMessage`, or the query `Action`."""
    if target:
        return target.rsplit(".", 1)[-1]
    if body:
        fields = urllib.parse.parse_qs(body.decode("latin-1"), max_num_fields=500)
        if fields.get("Action"):
            return fields["Action"][0]
    return "unknown"


def split_tag(path: str) -> tuple[str, str]:
    """`/t/<tag>/rest` -> (`tag`, `/rest`); any other path has the empty tag."""
    if path.startswith("/t/"):
        tag, _, rest = path[3:].partition("/")
        return tag, "/" + rest
    return "", path


class Upstream:
    """A pool of kept-alive connections to the upstream server."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        #: Connections opened so far: few, if keep-alive works.
        self.opened = 0

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A connection: a pooled one if one is fresh enough (reused = True), else a new one."""
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < UPSTREAM_KEEPALIVE_SECONDS and not writer.is_closing() and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
        self.opened += 1
        return reader, writer, False

    def release(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.idle.append((reader, writer, time.monotonic()))

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class DelayProxy:
    """Delays each request by `rtt_ms`, forwards it upstream, and counts it by tag and action."""

    def __init__(self, upstream: str, rtt_ms: float) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"The upstream must be http://host:port, not {upstream!r}.")
        self.upstream = Upstream(parts.hostname, parts.port)
        self.delay_seconds = rtt_ms / 1000
        self.counts: dict[str, Counter[str]] = {}
        self.requests = 0
        self.errors: Counter[str] = Counter()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.client_connections = 0

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Carry requests from one client connection until it closes."""
        carried = 0
        try:
            while True:
                head = await read_head(reader)
                if head is None:
                    break
                if head.expect_continue:
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await read_body(reader, head)
                method, _, rest = head.first_line.partition(b" ")
                raw_path, _, version = rest.rpartition(b" ")
                path = raw_path.decode("latin-1")
                if path.startswith("/_proxy/"):
                    writer.write(self._control(path))
                else:
                    carried += 1
                    if carried == 1:  # connections that only asked for counts are not the clients'
                        self.client_connections += 1
                    writer.write(await self._carry(head, method, path, version, body))
                await writer.drain()
                if head.close:
                    break
        except (BadMessage, ValueError) as exc:
            self.errors[f"client: {type(exc).__name__}"] += 1
            with contextlib.suppress(ConnectionError):
                writer.write(_response(400, b"bench proxy: " + str(exc).encode(), close=True))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _carry(self, head: Head, method: bytes, path: str, version: bytes, body: bytes) -> bytes:
        """Delay the request, forward it, and return the upstream's answer as it came."""
        tag, forward_path = split_tag(path)
        payload = dechunk(body) if head.chunked else body
        self.counts.setdefault(tag, Counter())[action_of(head.target, payload)] += 1
        self.requests += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.delay_seconds > 0:
                await asyncio.sleep(self.delay_seconds)
            request = (
                head.encode(
                    first_line=b" ".join([method, forward_path.encode("latin-1"), version]),
                    drop=(b"expect", b"connection", b"keep-alive"),
                )
                + body
            )
            for attempt in range(2):
                reader, writer, reused = await self.upstream.connect()
                try:
                    writer.write(request)
                    await writer.drain()
                    async with asyncio.timeout(UPSTREAM_READ_TIMEOUT_SECONDS):
                        reply_head = await read_head(reader)
                        if reply_head is None:
                            # A pooled connection the server had closed before it read the request:
                            # nothing was done, so one retry on a new connection is safe.
                            writer.close()
                            if reused and attempt == 0:
                                continue
                            raise ConnectionError("the upstream closed the connection without answering")
                        reply_body = await read_body(reader, reply_head)
                except BaseException:
                    writer.close()
                    raise
                if reply_head.close:
                    writer.close()
                else:
                    self.upstream.release(reader, writer)
                return reply_head.encode(drop=(b"connection", b"keep-alive")) + reply_body
            raise ConnectionError("unreachable")
        except (OSError, TimeoutError, BadMessage, asyncio.IncompleteReadError, ValueError) as exc:
            # A 502 is what a client would see from a real endpoint's load balancer: botocore retries it.
            self.errors[type(exc).__name__] += 1
            return _response(502, f"bench proxy: upstream failed: {type(exc).__name__}".encode())
        finally:
            self.in_flight -= 1

    def _control(self, path: str) -> bytes:
        if path == "/_proxy/counts":
            data: object = {tag: dict(c) for tag, c in self.counts.items()}
        elif path == "/_proxy/stats":
            data = {
                "requests": self.requests,
                "errors": dict(self.errors),
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "client_connections": self.client_connections,
                "upstream_connections": self.upstream.opened,
                "rtt_ms": self.delay_seconds * 1000,
            }
        else:
            return _response(404, b"unknown proxy control path")
        return _response(200, json.dumps(data).encode(), content_type=b"application/json")


def _response(status: int, body: bytes, *, content_type: bytes = b"text/plain", close: bool = False) -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 502: b"Bad Gateway"}[status]
    head = [
        b"HTTP/1.1 %d %s" % (status, reason),
        b"Content-Type: " + content_type,
        b"Content-Length: %d" % len(body),
    ]
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def serve(upstream: str, host: str, port: int, rtt_ms: float) -> None:
    proxy = DelayProxy(upstream, rtt_ms)
    server = await asyncio.start_server(proxy.serve_client, host, port, limit=MAX_HEAD_BYTES, backlog=1024)
    print(f"READY {host}:{port} rtt {rtt_ms:g} ms -> {upstream}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    proxy.upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the SQS server, e.g. http://127.0.0.1:4566")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sqs-rtt-ms", type=float, default=15.0, help="delay added to every SQS call, in ms")
    args = parser.parse_args(argv)
    if args.sqs_rtt_ms < 0:
        parser.error("--sqs-rtt-ms must be 0 or more")
    asyncio.run(serve(args.upstream, args.host, args.port, args.sqs_rtt_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
