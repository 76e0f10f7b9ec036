"""Reading a request body as JSON: its media type, size and arrival time, strict UTF-8, and a depth limit."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from typing import Any

from aiohttp import web

from api import keys, problems
from schemas import Violation, json_pointer

#: The one media type a JSON body may be sent as (parameters aside).
JSON_MEDIA_TYPE = "application/json"

#: The charset parameters accepted with it: JSON between systems is UTF-8 (RFC 8259, section 8.1).
UTF8_CHARSETS = frozenset({"utf-8", "utf8"})

#: The deepest nesting of arrays and objects a body may have, counted from the body itself (1).
#: Deeper documents are refused before validation and encoding, which recurse once per level.
MAX_JSON_DEPTH = 64

#: A \u escape of half a UTF-16 pair in JSON text: the only way a lone surrogate gets into a string.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")

#: A lone surrogate in a decoded string (a pair written as two escapes decodes to one character).
_SURROGATE = re.compile("[\ud800-\udfff]")


async def read_json(request: web.Request, *, limit_bytes: int) -> Any:
    """The request body as JSON; raises 415, 413, 408 or 400 problems that say what was wrong."""
    _check_media_type(request)
    raw = await _read_body(request, limit_bytes=limit_bytes)
    return parse_json(raw)


def _check_media_type(request: web.Request) -> None:
    if request.content_type != JSON_MEDIA_TYPE:
        raise problems.UnsupportedMediaType(
            f"The body must be application/json, not {request.content_type or 'unspecified'}."
        )
    charset = request.charset
    if charset is not None and charset.lower() not in UTF8_CHARSETS:
        raise problems.UnsupportedMediaType(f"The body must be application/json in UTF-8, not charset={charset}.")


async def _read_body(request: web.Request, *, limit_bytes: int) -> bytes:
    settings = request.app[keys.SETTINGS]
    why = (
        "QM_MAX_MESSAGE_BYTES, as large messages go through S3"
        if settings.payload_bucket and limit_bytes >= settings.max_message_bytes
        else "a message must fit in SQS's 1 MiB once base64-encoded"
    )
    too_large = problems.PayloadTooLarge(
        f"The request body is larger than {limit_bytes} bytes, the most {request.path} accepts ({why})."
    )
    if request.content_length is not None and request.content_length > limit_bytes:
        raise too_large
    timeout_seconds = settings.body_timeout_seconds
    body = bytearray()
    try:
        # One deadline for the whole body: a client trickling bytes must not hold a request for minutes.
        async with asyncio.timeout(timeout_seconds):
            while chunk := await request.content.readany():
                body += chunk
                if len(body) > limit_bytes:  # a chunked body has no Content-Length to refuse early
                    raise too_large
    except TimeoutError:
        raise problems.RequestTimeout(
            f"The request body did not arrive within {timeout_seconds:g} s, the limit (QM_BODY_TIMEOUT_SECONDS)."
        ) from None
    except web.RequestPayloadError as exc:  # broken chunked framing, or a compressed body that does not inflate
        raise problems.BadHttpRequest(f"The request body is not valid HTTP/1.1: {exc}.") from None
    return bytes(body)


def parse_json(raw: bytes) -> Any:
    """Parse a body as strict UTF-8 JSON, no deeper than MAX_JSON_DEPTH; raises a 400 problem saying why."""
    try:
        # Strict UTF-8: json.loads on bytes would also guess UTF-16 and UTF-32.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise problems.BadRequest(f"The body is not UTF-8: {exc.reason} at byte {exc.start}.") from None
    if text.startswith("\ufeff"):
        raise problems.BadRequest("The body starts with a byte order mark; send UTF-8 without one.")
    try:
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise problems.BadRequest(
            f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    except RecursionError:
        raise _too_deep(None) from None
    except NotJSONNumber as exc:
        raise problems.BadRequest(f"The body is not valid JSON: {exc}.") from None
    except ValueError:  # int() refuses integers longer than sys.get_int_max_str_digits()
        raise problems.BadRequest(
            f"The body is not valid JSON: an integer has more than {sys.get_int_max_str_digits()} digits."
        ) from None
    # Walk the document only when the text says it may be needed: most bodies nest little and escape nothing.
    check_depth = text.count("[") + text.count("{") > MAX_JSON_DEPTH
    check_surrogates = "\\u" in text and _SURROGATE_ESCAPE.search(text) is not None
    if check_depth or check_surrogates:
        _check_structure(document, check_depth=check_depth, check_surrogates=check_surrogates)
    return document


def _check_structure(document: Any, *, check_depth: bool, check_surrogates: bool) -> None:
    """Raise a 400 for the first container past MAX_JSON_DEPTH or string with a lone surrogate."""
    if check_surrogates and isinstance(document, str) and _SURROGATE.search(document):
        raise _lone_surrogate(())
    # Iterative, depth first in document order: the recursion limit must not decide the answer.
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(document, 1, ())]
    while stack:
        value, depth, path = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if check_depth and depth > MAX_JSON_DEPTH:
            raise _too_deep(path)
        members = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
        for key, child in reversed(members):
            if check_surrogates and (
                (isinstance(key, str) and _SURROGATE.search(key))
                or (isinstance(child, str) and _SURROGATE.search(child))
            ):
                # A property name has no pointer of its own that could be printed: name its object.
                raise _lone_surrogate(path if isinstance(key, str) and _SURROGATE.search(key) else (*path, key))
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1, (*path, key)))


def _too_deep(path: tuple[Any, ...] | None) -> problems.BadRequest:
    errors = None
    if path is not None:
        errors = [Violation(json_pointer(path), "maxDepth", f"more than {MAX_JSON_DEPTH} levels deep")]
    return problems.BadRequest(
        f"The body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep, the most the API reads.",
        errors=errors,
    )


def _lone_surrogate(path: tuple[Any, ...]) -> problems.BadRequest:
    return problems.BadRequest(
        "The body is not valid JSON: a string holds a lone UTF-16 surrogate, which UTF-8 cannot carry.",
        errors=[Violation(json_pointer(path), "encoding", "holds a lone surrogate (\\ud800-\\udfff)")],
    )


class NotJSONNumber(ValueError):
    """Raised for NaN, Infinity or a number past a double's range: Python reads them, JSON has none."""


def _reject_constant(token: str) -> Any:
    raise NotJSONNumber(f"{token} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotJSONNumber(f"the number {text} is out of range")
    return value
