"""The console's handlers: its page and assets (with a strict Content-Security-Policy), and its JSON."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from api import access, keys, problems
from api.bodies import read_json
from api.console.sampler import SAMPLER
from api.ingest import prepare
from api.schemas import MAX_MESSAGE_BODY_BYTES

#: The page's folder, shipped as package data.
STATIC = Path(__file__).resolve().parent / "static"

#: The assets the page loads, and their media types: nothing else under /ui/static is served.
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}

#: Scripts and styles from this origin only (none inline), data from this origin only, never framed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

#: Where to go from the index.
LINKS = {
    "console": "/ui",
    "docs": "/docs",
    "openapi": "/openapi.json",
    "schemas": "/schemas",
    "queues": "/queues",
    "scaling": "/scaling",
    "metrics": "/metrics",
    "health": "/healthz",
}

INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>queue-manager</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/ui/static/app.css"></head>
<body class="index"><main><h1>queue-manager</h1>
<p>HTTP in, Amazon SQS in the middle, Dramatiq workers out.</p>
<ul>
<li><a href="/ui">Operations console</a>: queues, dead letters, messages</li>
<li><a href="/docs">API documentation</a> (Swagger UI) and <a href="/openapi.json">the OpenAPI document</a></li>
<li><a href="/metrics">Prometheus metrics</a>, <a href="/healthz">health</a></li>
</ul></main></body></html>
"""


async def index(request: web.Request) -> web.Response:
    """The index: an HTML page of links for a browser, the same links as JSON for anything else."""
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(text=INDEX_HTML, content_type="text/html", headers=SECURITY_HEADERS)
    return web.json_response({"name": "queue-manager", "links": LINKS})


async def page(request: web.Request) -> web.Response:
    """The console's single page; it asks for an API key when the API needs one."""
    return web.Response(
        body=(STATIC / "index.html").read_bytes(), content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS
    )


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    media_type = ASSETS.get(name)
    if media_type is None:
        raise problems.NotFound(f"No console asset {name!r}.")
    charset = None if media_type.startswith("image/") else "utf-8"
    return web.Response(
        body=(STATIC / name).read_bytes(), content_type=media_type, charset=charset, headers=SECURITY_HEADERS
    )


async def session(request: web.Request) -> web.Response:
    """Who the console's key is: its name and role, and whether the API asks for keys at all."""
    caller = access.caller(request)
    return web.json_response(
        {
            "auth_required": bool(request.app[keys.API_KEYS]),
            "name": caller.name,
            "role": caller.role,
            "may_change": caller.may_change,
        }
    )


async def overview(request: web.Request) -> web.Response:
    """Every type's counts, rates and last 15 minutes, from the shared sampler (never a receive).

    `?after=<sampled_at>` waits for a newer sample (a few intervals at most): a long poll.
    """
    raw = request.query.get("after", "")
    try:
        after = float(raw) if raw else None
    except ValueError:
        raise problems.Unprocessable(f"after must be a sampled_at the overview gave, not {raw!r}.") from None
    return web.json_response(await request.app[SAMPLER].overview(after=after))


async def validate(request: web.Request) -> web.Response:
    """Check an envelope as POST /messages would, without sending it: `{"valid"}`, or the detail and violations."""
    document = await read_json(request, limit_bytes=MAX_MESSAGE_BODY_BYTES)
    try:
        prepare(request.app, document)
    except (problems.Unprocessable, problems.PayloadTooLarge) as refused:
        body = refused.body()
        return web.json_response(
            {"valid": False, "status": refused.status, "detail": refused.detail, "errors": body.get("errors", [])}
        )
    return web.json_response({"valid": True})
