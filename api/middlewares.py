"""The middlewares: the one error middleware (every failure leaves as application/problem+json), API keys, traces."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from api import problems
from api.access import CALLER, OPERATOR, READ_METHODS, ApiKey, match

if TYPE_CHECKING:
    from queue_manager.tracing.spans import Spans

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


#: Paths served without an API key, so that orchestrators can probe them (and the index of links).
OPEN_PATHS = frozenset({"/", "/healthz", "/readyz", "/openapi.json", "/metrics"})

#: Path prefixes served without an API key: the interactive docs, the console's page and their assets
#: (the console asks for a key and sends it with every request for data).
OPEN_PREFIXES = ("/docs", "/ui")


def auth_middleware(api_keys: list[ApiKey]) -> Middleware:
    """Require `Authorization: Bearer <key>` with one of `api_keys`, compared in constant time.

    With no keys every request is served, except one whose Authorization header is malformed
    (not printable ASCII): that is refused too, before anything is done for it. A viewer's key may
    only read (403 otherwise). A browser's cross-site request is refused (403), navigations aside.
    """

    @web.middleware
    async def check_api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _cross_site(request):
            raise problems.Forbidden(
                "Cross-site requests are refused: use the API from its own origin (the console at /ui) or "
                "from outside a browser."
            )
        if request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return await handler(request)
        token = bearer_token(request)
        if api_keys:
            found = match(token, api_keys)
            if found is None:
                raise unauthorized()
            if request.method not in READ_METHODS and not found.may_change:
                raise problems.Forbidden(
                    f"The API key {found.name!r} is a {found.role}'s: it may read, not {request.method} "
                    f"{request.path}; that needs an {OPERATOR}'s key."
                )
            request[CALLER] = found
        return await handler(request)

    return check_api_key


def _cross_site(request: web.Request) -> bool:
    """Whether a browser says the request comes from another site (a top-level navigation is allowed)."""
    if request.headers.get("Sec-Fetch-Site", "").lower() != "cross-site":
        return False
    return not (request.method == "GET" and request.headers.get("Sec-Fetch-Mode", "").lower() == "navigate")


def unauthorized() -> problems.Unauthorized:
    """The 401 for a missing, wrong or malformed API key, with its challenge."""
    return problems.Unauthorized(
        "A valid API key is required: send `Authorization: Bearer <key>`.",
        headers={"WWW-Authenticate": 'Bearer realm="queue-manager"'},
    )


def bearer_token(request: web.Request) -> str | None:
    """The token of a request's `Authorization: Bearer` header, or None; raises 401 if the header is malformed."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    # aiohttp hands bytes that are not UTF-8 over as surrogate escapes: they are not ASCII either.
    if not (header.isascii() and header.isprintable()):
        raise unauthorized()
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


#: Paths not traced: probes and scrapes, many a minute, would bury the requests worth seeing.
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def trace_middleware(spans: Spans) -> Middleware:
    """A SERVER span per request (HTTP conventions), child of the caller's `traceparent`; its answer
    carries the span's own `traceparent`. Added by create_app only while tracing is on."""

    @web.middleware
    async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNTRACED_PATHS:
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        # The conventions' required and most useful attributes only: the SDK checks each one.
        attributes: dict[str, Any] = {"http.request.method": request.method, "url.path": request.path}
        if route:
            attributes["http.route"] = route
        name = f"{request.method} {route}" if route else request.method
        span, token = spans.server_span(name, request.headers, attributes)
        status: int | None = None
        failure: BaseException | None = None
        try:
            response = await handler(request)
            status = response.status
            traceparent = spans.traceparent(span)
            if traceparent and not response.prepared:
                response.headers["traceparent"] = traceparent
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except BaseException as exc:
            failure = exc
            raise
        finally:
            spans.end_server_span(span, token, status, failure)

    return trace_request
