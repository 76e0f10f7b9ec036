"""A minimal HTTP/1.1 keep-alive POST client on asyncio streams, for the bench's load generators.

The load generator runs on the same cores as the APIs it measures, so its CPU per request is taken
from theirs: aiohttp's client (a session, a connector, request and response objects, a header
multidict per answer) cost about 0.43 ms per POST in `--only api`, this about 0.17 ms (mostly the
kernel's send on loopback and the event loop; see bench/README.md). It does only what
the bench needs: POST a JSON body to one `http://host:port/path`, read the status line and headers,
read the body by Content-Length, chunked, or to the end of the connection, and keep the connection
for the next request unless the server said `Connection: close` or closed it. No redirects, no TLS,
no proxies, no retries: a failed request raises one of POST_ERRORS and the next one reconnects.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

#: How long one request may take, connecting included, before it fails with TimeoutError.
TIMEOUT = 30.0


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


#: What a failed request raises: connection errors and TimeoutError (both OSError), a connection
#: closed mid-answer (IncompleteReadError), a head too long to read (LimitOverrunError), a bad answer.
POST_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ProtocolError,
)


class PostConnection:
    """One keep-alive connection that POSTs to one URL, one request at a time; it (re)connects when needed."""

    def __init__(self, url: str, *, content_type: str = "application/json", timeout: float = TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"Not an http:// URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        self.timeout = timeout
        self._head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: {content_type}\r\nContent-Length: "
        ).encode()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        #: Connections opened so far (the first and every reconnect).
        self.connects = 0

    def request(self, body: bytes) -> bytes:
        """The whole request for `body`."""
        return self._head + b"%d\r\n\r\n" % len(body) + body

    async def post(self, body: bytes, *, request: bytes | None = None) -> int:
        """POST `body` (or send `request`, a whole prebuilt request) and read the answer; its status.

        Raises one of POST_ERRORS (the connection is then closed; the next call reconnects)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(self.request(body) if request is None else request)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, request: bytes) -> int:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            self.connects += 1
        reader, writer = self._reader, self._writer
        assert reader is not None
        writer.write(request)
        await writer.drain()
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            status_line = lines[0]
            if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12:
                raise ProtocolError(f"Not an HTTP/1.x status line: {status_line[:80]!r}")
            try:
                status = int(status_line[9:12])
            except ValueError:
                raise ProtocolError(f"Not an HTTP/1.x status line: {status_line[:80]!r}") from None
            if not 100 <= status < 200:
                break  # 1xx (informational) answers come before the real one: skip them
        length = -1
        chunked = False
        close = status_line[7:8] == b"0"  # HTTP/1.0 closes unless it says keep-alive
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise ProtocolError(f"Bad Content-Length: {value[:40]!r}") from None
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                token = value.strip().lower()
                close = token == b"close" or (close and token != b"keep-alive")
        if status in (204, 304):
            pass  # no body whatever the headers say
        elif chunked:
            await _read_chunked(reader)
        elif length >= 0:
            await reader.readexactly(length)
        else:
            await reader.read()  # no length: the body runs to the end of the connection
            close = True
        if close:
            self.close()
        return status

    def close(self) -> None:
        """Close the connection (if open); the next post opens a new one."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            raise ProtocolError(f"Bad chunk size: {size_line[:40]!r}") from None
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers, up to the empty line
            return
        await reader.readexactly(size + 2)  # the chunk and its CRLF


class PostPool:
    """Keep-alive connections to one URL for any number of concurrent POSTs: each POST takes an idle
    connection or opens one, and gives it back when answered (so no POST waits for another's answer)."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._idle: list[PostConnection] = []
        self._all: list[PostConnection] = []

    async def post(self, body: bytes) -> int:
        """As PostConnection.post, on a connection of the pool's."""
        if self._idle:
            connection = self._idle.pop()
        else:
            connection = PostConnection(self.url, timeout=self.timeout)
            self._all.append(connection)
        try:
            return await connection.post(body)
        finally:
            self._idle.append(connection)  # closed after an error: it reconnects on its next use

    @property
    def connects(self) -> int:
        return sum(c.connects for c in self._all)

    def close(self) -> None:
        for connection in self._all:
            connection.close()
