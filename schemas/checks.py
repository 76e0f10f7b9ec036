"""Rules that depend on configuration, beyond what a JSON Schema can say."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from schemas import Violation

#: Default ports by URL scheme, to match allow-list entries of the form host:port.
DEFAULT_PORTS = {"http": 80, "https": 443}

#: Whitespace and control characters: urlsplit silently drops tab, CR and LF (as WHATWG parsers
#: do), so a URL holding them would be checked as one URL and requested as another.
_UNSAFE_URL_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f]")


def destination_error(url: str, allowed_hosts: Iterable[str]) -> str | None:
    """Why a webhook may not be sent to `url`, or None if it may.

    An allow-list entry is a host (any port) or host:port (that port only).
    """
    unsafe = _UNSAFE_URL_CHARACTER.search(url)
    if unsafe is not None:
        return (
            f"the URL holds whitespace or a control character ({unsafe.group()!r}) at index {unsafe.start()}; "
            "percent-encode it"
        )
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError as exc:
        return f"not a valid URL: {exc}"
    if parts.scheme not in DEFAULT_PORTS:
        return "the scheme must be http or https"
    if not host:
        return "the URL names no host"
    if parts.username or parts.password:
        return "credentials in the URL are not allowed; use headers"
    allowed = [entry.strip().lower() for entry in allowed_hosts if entry.strip()]
    if host in allowed or f"{host}:{port}" in allowed:
        return None
    return f"host {host}:{port} is not in QM_WEBHOOK_ALLOWED_HOSTS ({', '.join(allowed) or 'empty'})"


def check_webhook(payload: Any, allowed_hosts: Iterable[str]) -> list[Violation]:
    url = payload.get("url") if isinstance(payload, dict) else None
    if not isinstance(url, str):
        return []
    error = destination_error(url, allowed_hosts)
    return [Violation(path="/payload/url", keyword="allowedHosts", message=error)] if error else []


#: Extra checks by message type, each given the payload and the allowed webhook hosts.
PAYLOAD_CHECKS: dict[str, Callable[[Any, Iterable[str]], list[Violation]]] = {
    "webhook": check_webhook,
    "ordered": check_webhook,
}
