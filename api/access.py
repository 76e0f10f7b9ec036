"""API keys with a name and a role: who may read, and who may change.

A key is configured as `name:key:role` (role `viewer` or `operator`) in QM_API_KEYS or a line of
QM_API_KEYS_FILE; anything else is the older bare form, a key alone, which is an operator named
`key#<n>` after its position (as the audit log has always called it). A viewer may only read (GET
and HEAD); redrives, deletes and sends need an operator.
"""

from __future__ import annotations

import dataclasses
import hmac

from aiohttp import web

#: A key that may read only.
VIEWER = "viewer"
#: A key that may also change things: send, redrive, delete.
OPERATOR = "operator"
ROLES = (VIEWER, OPERATOR)

#: The methods a viewer may use.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclasses.dataclass(frozen=True)
class ApiKey:
    """One accepted API key: its name (for the audit log, never the key), the key, and its role."""

    name: str
    key: str
    role: str

    @property
    def may_change(self) -> bool:
        return self.role == OPERATOR


#: Who made a request: the key that matched, or ANONYMOUS when no keys are configured.
ANONYMOUS = ApiKey("anonymous", "", OPERATOR)

#: The key a request was authorised with, set by the auth middleware.
CALLER = web.RequestKey("qm.caller", ApiKey)


def parse_keys(entries: list[str]) -> list[ApiKey]:
    """The keys of QM_API_KEYS and QM_API_KEYS_FILE, in order: `name:key:role`, or a bare key (an operator)."""
    parsed = []
    for position, entry in enumerate(entries):
        parts = entry.split(":")
        if len(parts) == 3 and parts[0] and parts[1] and parts[2] in ROLES:
            parsed.append(ApiKey(*parts))
        else:
            parsed.append(ApiKey(f"key#{position}", entry, OPERATOR))
    return parsed


def match(token: str | None, api_keys: list[ApiKey]) -> ApiKey | None:
    """The key equal to `token`, or None; every key is compared, so timing tells nothing."""
    if token is None:
        return None
    supplied = token.encode()
    found = None
    for candidate in api_keys:
        if hmac.compare_digest(supplied, candidate.key.encode()) and found is None:
            found = candidate
    return found


def caller(request: web.Request) -> ApiKey:
    """The key a request was authorised with (ANONYMOUS without keys)."""
    found: ApiKey = request.get(CALLER, ANONYMOUS)
    return found
