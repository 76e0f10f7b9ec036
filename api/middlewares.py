"""The one error middleware: every failure leaves as application/problem+json."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

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


#: Paths served without an API key, so that orchestrators can probe them.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/metrics"})

#: Path prefixes served without an API key: the interactive docs and their assets.
OPEN_PREFIXES = ("/docs",)


def auth_middleware(api_keys: list[str]) -> Middleware:
    """Require `Authorization: Bearer <key>` with one of `api_keys`, compared in constant time."""
    accepted = [key.encode() for key in api_keys]

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return await handler(request)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        supplied = token.strip().encode()
        # Compare with every key, so the time taken says nothing about which one nearly matched.
        matched = False
        for key in accepted:
            matched |= hmac.compare_digest(supplied, key)
        if scheme.lower() != "bearer" or not supplied or not matched:
            raise problems.Unauthorized(
                "A valid API key is required: send `Authorization: Bearer <key>`.",
                headers={"WWW-Authenticate": 'Bearer realm="queue-manager"'},
            )
        return await handler(request)

    return check_api_key
