"""Serving the app: `web.run_app`'s job, with connections that answer aiohttp's own errors as problems.

aiohttp answers what its HTTP parser refuses (a bad request line or method, a header past 8190
bytes, too many headers) from the connection handler, before any middleware runs, as text/plain.
aiohttp 3.14 has no supported hook for that response (aio-libs/aiohttp#3287 and #6463 are open),
so the runner here builds its connections from a `RequestHandler` whose `handle_error` renders a
problem instead. `tests/test_api_input.py` sends such requests to a real `qm-api`, so an aiohttp
upgrade that changes these internals fails there rather than in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http
import logging
import re

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from api import problems

logger = logging.getLogger(__name__)


class ProblemRequestHandler(web.RequestHandler):
    """A connection handler that answers the errors aiohttp raises itself as problem details."""

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
) -> None:
    """Serve `app` until SIGINT or SIGTERM, then stop as `web.run_app` does.

    Only the serving task is cancelled on a signal; its cleanup lets requests in flight finish
    within `shutdown_timeout` before anything else is cancelled (asyncio.run would cancel them all).
    """
    loop = asyncio.new_event_loop()
    main = loop.create_task(
        _serve(
            app, host=host, port=port, shutdown_timeout=shutdown_timeout, access_log=access_log, reuse_port=reuse_port
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
) -> None:
    runner = ProblemAppRunner(app, handle_signals=True, shutdown_timeout=shutdown_timeout, access_log=access_log)
    await runner.setup()
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
