"""The one error middleware: every failure leaves as application/problem+json."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from api import problems

logger = logging.getLogger(__name__)

#: aiohttp's own HTTP errors, mapped to our problem types.
HTTP_PROBLEMS: dict[int, type[problems.Problem]] = {
    400: problems.BadRequest,
    404: problems.NotFound,
    405: problems.MethodNotAllowed,
    413: problems.PayloadTooLarge,
    415: problems.UnsupportedMediaType,
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render Problem exceptions and aiohttp HTTP errors as problem details; hide bugs behind a bare 500."""
    try:
        return await handler(request)
    except problems.Problem as raised:
        return raised.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        problem_type = HTTP_PROBLEMS.get(exc.status)
        if problem_type is None:
            problem = problems.Problem(exc.reason)
            problem.status, problem.title = exc.status, exc.reason
        else:
            problem = problem_type(_http_detail(request, exc))
        response = problem.response()
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:  # a bug: logged with its traceback, answered as a bare 500
        logger.exception("Unhandled error answering %s %s.", request.method, request.path)
        return problems.InternalError("The server failed to answer; the error is logged.").response()


def _http_detail(request: web.Request, exc: web.HTTPException) -> str:
    if exc.status == 404:
        return f"No resource at {request.path}."
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}; allowed: {exc.headers.get('Allow', '')}."
    if exc.status == 413:
        return (
            f"The request body is larger than {request.client_max_size} bytes,"
            " the most a message can hold once encoded for SQS."
        )
    return exc.text or exc.reason
