"""Serving the app: `web.run_app`'s job, with connections that answer aiohttp's own errors as problems.

aiohttp answers what its HTTP parser refuses (a bad request line or method, a header past 8190
bytes, too many headers) from the connection handler, before any middleware runs, as text/plain.
aiohttp 3.14 has no supported hook for that response (aio-libs/aiohttp#3287 and #6463 are open),
so the runner here builds its connections from a `RequestHandler` whose `handle_error` renders a
problem instead. `tests/test_api_input.py` sends such requests to a real `qm-api`, so an aiohttp
upgrade that changes these internals fails there rather than in production.

aiohttp has no timeout for a request's headers either: its only timer closes a connection idle
between requests, and while headers trickle in it waits for them. So the same handler starts a
timer at a request's first byte when its headers do not come in that one read, stops it once they
are parsed, and on expiry answers 408 through the parser-error path above; aiohttp's keep-alive
timer (`keepalive_timeout`) governs only the time before a request's first byte. A request whose
headers arrive in one read, nearly all of them, starts no timer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import http
import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import _ErrInfo

from api import problems

logger = logging.getLogger(__name__)


#: Seconds a request line and headers may take to arrive (QM_HEADER_TIMEOUT_SECONDS's default).
DEFAULT_HEADER_TIMEOUT_SECONDS = 10.0


class ProblemRequestHandler(web.RequestHandler):
    """A connection handler that answers the errors aiohttp raises itself as problem details,
    and a request whose headers do not arrive within `header_timeout` seconds as a 408."""

    __slots__ = ("_header_timeout", "_header_timer", "_last_payload")

    def __init__(
        self, manager: web.Server, *, header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        # The body of the last request whose headers were parsed: until it is complete, what
        # arrives is body, not the start of the next request.
        self._last_payload: StreamReader | None = None

    def data_received(self, data: bytes) -> None:
        last = self._last_payload
        between_requests = last is None or last.is_eof()
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # one or more requests' headers are complete
            if self._messages:
                self._last_payload = self._messages[-1][1]
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
        elif between_requests and data and self._header_timer is None and not self._close:
            self._start_header_timer()

    def _start_header_timer(self) -> None:
        """A request has begun and its headers are not all here: they have `header_timeout` seconds."""
        loop = self._loop
        self._header_timer = loop.call_at(loop.time() + self._header_timeout, self._headers_late)
        # aiohttp's idle timer would close the connection silently mid-headers; it is armed again
        # once this request is answered.
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None

    def _headers_late(self) -> None:
        """Answer 408 the way aiohttp answers a parser error, then close: nothing more is read."""
        self._header_timer = None
        if self.transport is None or self._force_close or self._close:
            return
        detail = (
            f"The request line and headers did not arrive within {self._header_timeout:g} s, "
            "the limit (QM_HEADER_TIMEOUT_SECONDS)."
        )
        self._messages.append((_ErrInfo(status=408, exc=TimeoutError(detail), message=detail), EMPTY_PAYLOAD))
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        # Nothing more is parsed, and the connection closes once the 408 is written (or, if a
        # pipelined request before it is still being answered, once that answer is: then the
        # close is all the late request gets).
        self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a parser error (400) or an error no middleware caught (500) as problem+json."""
        if status >= 500:  # a bug outside the error middleware: the traceback goes to the log only
            self.log_exception("Error handling request from %s.", request.remote, exc_info=exc)
        elif status == 408:  # our header timer (see _headers_late)
            logger.info(
                "Closed a connection from %s: its request headers did not arrive within %g s.",
                request.remote,
                self._header_timeout,
            )
        else:  # the reason only: aiohttp's message may quote request bytes, an Authorization header among them
            logger.info(
                "Refused a request from %s that is not valid HTTP: %s.", request.remote, _parser_reason(exc, message)
            )
        if request.writer.output_size > 0:  # as aiohttp does: a response already begun cannot be replaced
            raise ConnectionError("Response is sent already, cannot send another response with the error message")
        response = _problem(status, exc, message).response()
        response.force_close()
        return response


def _problem(status: int, exc: BaseException | None, message: str | None) -> problems.Problem:
    if status == 400:
        return problems.BadHttpRequest(f"The request is not valid HTTP/1.1: {_parser_reason(exc, message)}.")
    if status == 500:
        return problems.InternalError("The server failed to answer; the error is logged.")
    if status == 408 and message:
        return problems.RequestTimeout(message)
    problem = problems.Problem(http.HTTPStatus(status).description or "The server could not answer.")
    problem.status, problem.title = status, http.HTTPStatus(status).phrase
    return problem


def _parser_reason(exc: BaseException | None, message: str | None) -> str:
    """What aiohttp's parser objected to, in a phrase, without the request bytes it may quote."""
    reason = str(exc.message if isinstance(exc, HttpProcessingError) else (message or exc or ""))
    if isinstance(exc, LineTooLong):
        limit = re.search(r"more than (\d+) bytes", reason)
        return f"the request line or a header is longer than {limit[1] if limit else 'the limit of'} bytes"
    first_line = re.split(r"[:\s]*(?:\n|b'|b\"|bytearray\()", reason.strip(), maxsplit=1)[0].rstrip(":. ")
    return first_line[:1].lower() + first_line[1:] if first_line else "malformed request"


class PortInUse(Exception):
    """Raised when the API's address is taken by another process."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is in use; set QM_PORT to a free port (or stop what holds it).")


class ProblemServer(web.Server):
    """A `web.Server` whose connections are ProblemRequestHandlers."""

    def __call__(self) -> web.RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An `AppRunner` that serves through a ProblemServer."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # The app built the server (startup signals, frozen router, request factory); only the
        # class that makes its connections changes.
        server.__class__ = ProblemServer
        return server


def run(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    access_log: logging.Logger | None,
    reuse_port: bool = False,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_SECONDS,
    keepalive_timeout: float = 75.0,
) -> None:
    """Serve `app` until SIGINT or SIGTERM, then stop as `web.run_app` does.

    Only the serving task is cancelled on a signal; its cleanup lets requests in flight finish
    within `shutdown_timeout` before anything else is cancelled (asyncio.run would cancel them all).
    """
    loop = asyncio.new_event_loop()
    main = loop.create_task(
        _serve(
            app,
            host=host,
            port=port,
            shutdown_timeout=shutdown_timeout,
            access_log=access_log,
            reuse_port=reuse_port,
            header_timeout=header_timeout,
            keepalive_timeout=keepalive_timeout,
        )
    )
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


async def _serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    shutdown_timeout: float,
    access_log: logging.Logger | None,
    reuse_port: bool,
    header_timeout: float,
    keepalive_timeout: float,
) -> None:
    runner = ProblemAppRunner(
        app,
        handle_signals=True,
        shutdown_timeout=shutdown_timeout,
        access_log=access_log,
        keepalive_timeout=keepalive_timeout,
        header_timeout=header_timeout,
    )
    await runner.setup()
    freeze_heap()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(host, port) from None
            raise
        logger.info("Serving on %s; Ctrl-C stops.", site.name)
        await asyncio.Event().wait()  # until a signal raises GracefulExit
    finally:
        await runner.cleanup()


#: Allocations between two collections of the youngest generation (Python's default: 700). Each
#: collection walks every young object still alive, and under load most of those belong to the
#: requests in flight: collecting every 700 allocations walked them again and again.
YOUNG_COLLECTION_ALLOCATIONS = 10_000


def freeze_heap() -> None:
    """Leave what start-up built (modules, botocore's service models, schemas) out of later garbage collections.

    Call once the app has started, before it serves. The heap is mostly such long-lived objects, and
    every full collection walked them all again: under load about 8 % of the API's CPU went to the
    collector. What start-up left as garbage is collected first.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_ALLOCATIONS, *gc.get_threshold()[1:])
