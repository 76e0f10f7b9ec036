"""QMClient: fetch the contract, validate locally with the server's rules, send, and retry politely.

The client imports no server module: the envelope's rules come from the API's own OpenAPI document
and each payload's from `GET /schemas/{type}`, so a client of any version checks what the server it
talks to checks. Only the standard library speaks HTTP (urllib); validation uses jsonschema and the
same `{path, keyword, message}` violations as the server (the contract in `schemas`), so a message
the client passes is one the server takes (apart from configuration-dependent checks such as the
webhook host allow-list).
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jsonschema import Draft202012Validator

from schemas import Validator, Violation, violations
from schemas.envelopes import FIFO_REQUIRED, fifo_group, message_violations, waiting_detail

#: The OpenAPI component holding the fields every envelope may have (the API's `ENVELOPE_FIELDS`).
ENVELOPE_FIELDS = "EnvelopeFields"

logger = logging.getLogger(__name__)

#: Statuses after which the same request may succeed later: the server says when with Retry-After.
RETRYABLE_STATUSES = frozenset({429, 503})

#: Attempts of one request, the first included.
DEFAULT_MAX_ATTEMPTS = 5

#: The longest time spent on one request's retries, waits included.
DEFAULT_MAX_RETRY_SECONDS = 30.0

#: The connect and read timeout of one HTTP request.
DEFAULT_TIMEOUT_SECONDS = 30.0

#: The wait before retrying when the server gave no Retry-After; it doubles after each attempt.
DEFAULT_BACKOFF_SECONDS = 0.5


class ValidationFailed(ValueError):
    """Raised before sending when a message breaks its schema; nothing was sent."""

    def __init__(self, detail: str, violations: list[Violation]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.violations = violations


class ApiError(Exception):
    """Raised when the API answers with an error status; `problem` is its problem+json body."""

    def __init__(self, status: int, problem: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        super().__init__(f"{status}: {detail}" if status else detail)
        self.status = status
        self.problem = problem
        self.headers = headers or {}
        self.detail = detail


class Unavailable(ApiError):
    """Raised when the API could not be reached, or kept answering 503/429 until the retries ran out."""


class QMClient:
    """A client of one queue-manager API.

    Parameters:
      base_url: Where the API listens, e.g. http://127.0.0.1:8000.
      api_key: Sent as `Authorization: Bearer <key>` when set.
      timeout_seconds: Connect and read timeout of one HTTP request.
      max_attempts: Attempts of one request after 503 or 429 answers (or a refused connection).
      max_retry_seconds: The longest one request may take with its retries; a Retry-After
        beyond it ends the retries at once.
      sleep: How to wait between attempts (tests record the waits with it).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_retry_seconds: float = DEFAULT_MAX_RETRY_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}.")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.max_retry_seconds = max_retry_seconds
        self.sleep = sleep
        self._types: list[str] | None = None
        self._validators: dict[str, Any] = {}
        self._envelope: Any = None
        self._openapi: dict[str, Any] | None = None

    # Schemas and local validation.

    def types(self) -> list[str]:
        """The message types the API knows (fetched once)."""
        if self._types is None:
            self._types = [t["type"] for t in self.request("GET", "/schemas")["types"]]
        return list(self._types)

    def schemas(self) -> dict[str, Any]:
        """The answer of GET /schemas."""
        answer: dict[str, Any] = self.request("GET", "/schemas")
        return answer

    def schema(self, message_type: str) -> dict[str, Any]:
        """The JSON Schema of a message type."""
        schema: dict[str, Any] = self.request("GET", "/schemas/" + urllib.parse.quote(message_type, safe=""))
        return schema

    def validator(self, message_type: str) -> Any:
        """The validator of a message type, built once from its fetched schema, as the server builds it."""
        validator = self._validators.get(message_type)
        if validator is None:
            validator = Validator(self.schema(message_type), format_checker=Draft202012Validator.FORMAT_CHECKER)
            self._validators[message_type] = validator
        return validator

    def openapi(self) -> dict[str, Any]:
        """The API's OpenAPI document (fetched once): the envelope and batch rules come from it."""
        if self._openapi is None:
            self._openapi = self.request("GET", "/openapi.json")
        return self._openapi

    def max_batch_messages(self) -> int:
        """The most envelopes one POST /messages/batch takes, as the API documents it."""
        batch = self.openapi()["components"]["schemas"]["Batch"]
        return int(batch["properties"]["messages"]["maxItems"])

    def envelope_validator(self) -> Any:
        """The validator of the fields every envelope may have, from the API's OpenAPI document."""
        if self._envelope is None:
            components = self.openapi()["components"]["schemas"]
            # A server older than this component: only the shape is checked here, the server does the rest.
            schema = components.get(ENVELOPE_FIELDS, {"type": "object", "required": ["type", "payload"]})
            self._envelope = Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        return self._envelope

    def is_fifo(self, message_type: str) -> bool:
        """Whether a type is on a FIFO queue: its envelope in the OpenAPI document requires a group."""
        envelope = self.openapi()["components"]["schemas"].get(f"message.{message_type}", {})
        return set(FIFO_REQUIRED) <= set(envelope.get("required", []))

    def check(self, envelope: Any) -> tuple[str, list[Violation]]:
        """The API's verdict on an envelope, reached locally: its detail and every violation, in the API's order."""
        return message_violations(
            envelope,
            envelope=lambda document: violations(self.envelope_validator(), document),
            types=self.types(),
            is_fifo=self.is_fifo,
            payload=lambda message_type, payload: violations(
                self.validator(message_type), payload, prefix=("payload",)
            ),
        )

    def envelope_violations(self, envelope: Any, *, prefix: Sequence[Any] = ()) -> list[Violation]:
        """Every way an envelope breaks the server's rules, checked locally, in the API's order."""
        _, errors = self.check(envelope)
        if prefix:
            base = "".join("/" + str(p) for p in prefix)
            errors = [Violation(base + e.path, e.keyword, e.message) for e in errors]
        return errors

    def validate(self, message_type: str, payload: Any) -> list[Violation]:
        """Every way `payload` breaks its type's schema; paths start at /payload, as the server's do."""
        return self.envelope_violations({"type": message_type, "payload": payload})

    # Messages.

    def send(
        self,
        message_type: str,
        payload: Any,
        *,
        delay_seconds: int | None = None,
        idempotency_key: str | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        validate: bool = True,
    ) -> dict[str, Any]:
        """Validate locally, then POST /messages; returns `{"id", "type", "queue"}`.

        `group_id` is required by a type on a FIFO queue (it orders by group); `deduplication_id` is FIFO only.

        Raises ValidationFailed (nothing sent), ApiError, or Unavailable.
        """
        envelope: dict[str, Any] = {"type": message_type, "payload": payload}
        if delay_seconds is not None:
            envelope["delay_seconds"] = delay_seconds
        if idempotency_key is not None:
            envelope["idempotency_key"] = idempotency_key
        if group_id is not None:
            envelope["group_id"] = group_id
        if deduplication_id is not None:
            envelope["deduplication_id"] = deduplication_id
        if validate:
            detail, errors = self.check(envelope)
            if errors:
                raise ValidationFailed(detail, errors)
        answer: dict[str, Any] = self.request("POST", "/messages", envelope)
        return answer

    def send_batch(self, envelopes: Iterable[Any], *, validate: bool = True) -> dict[str, Any]:
        """Validate every envelope locally, then POST /messages/batch in chunks of 100.

        Returns `{"results": [...]}` with one result per envelope in order (indexes and `waits_on`
        across chunks). If any envelope is invalid nothing is sent: ValidationFailed lists them under
        /messages/<i>. As the API does within one batch, an entry of a FIFO group whose earlier entry
        was not sent is not sent either (424, `waits_on` that entry), in a later chunk too.
        """
        items = list(envelopes)
        if not items:
            raise ValidationFailed(
                "A batch needs at least one message.", [Violation("/messages", "minItems", "[] should be non-empty")]
            )
        if validate:
            errors = [v for i, e in enumerate(items) for v in self.envelope_violations(e, prefix=("messages", i))]
            if errors:
                invalid = len({e.path.split("/")[2] for e in errors})
                raise ValidationFailed(
                    f"{invalid} of the {len(items)} messages {'is' if invalid == 1 else 'are'} not valid.", errors
                )
        results: dict[int, dict[str, Any]] = {}
        # A FIFO group's first entry that was not sent, across chunks as the API does within one: what
        # follows it in its group is held back (424), else a fixed and resent entry would come after it.
        refused: dict[tuple[str, str], int] = {}
        groups = [fifo_group(item, self.is_fifo) for item in items]
        most = self.max_batch_messages()
        for start in range(0, len(items), most):
            positions: list[int] = []  # the batch index of each entry of this chunk
            for index in range(start, min(start + most, len(items))):
                group = groups[index]
                if group is not None and group in refused:
                    first = refused[group]
                    results[index] = {
                        "index": index, "status": 424, "detail": waiting_detail(group, first), "waits_on": first
                    }  # fmt: skip
                else:
                    positions.append(index)
            if not positions:
                continue
            answer = self.request("POST", "/messages/batch", {"messages": [items[i] for i in positions]})
            for result in answer["results"]:
                index = positions[result["index"]]
                result = {**result, "index": index}
                group = groups[index]
                if "waits_on" in result:
                    result["waits_on"] = positions[result["waits_on"]]
                    if group is not None:
                        result["detail"] = waiting_detail(group, result["waits_on"])
                if result["status"] != 202 and group is not None:
                    refused.setdefault(group, index)
                results[index] = result
        return {"results": [results[i] for i in range(len(items))]}

    # Queues and dead letters.

    def queues(self) -> dict[str, Any]:
        """The depths of every queue and its dead-letter queue (GET /queues)."""
        answer: dict[str, Any] = self.request("GET", "/queues")
        return answer

    def dead_letters(self, message_type: str, *, limit: int = 10) -> dict[str, Any]:
        """Up to `limit` dead letters of a type, left on their queue."""
        path = f"/queues/{urllib.parse.quote(message_type, safe='')}/dead-letters?limit={limit}"
        answer: dict[str, Any] = self.request("GET", path)
        return answer

    def redrive(self, message_type: str, ids: Sequence[str] | None = None) -> dict[str, Any]:
        """Move a type's dead letters (all, or those ids) back to its queue."""
        body = {"ids": list(ids)} if ids else {}
        answer: dict[str, Any] = self.request(
            "POST", f"/queues/{urllib.parse.quote(message_type, safe='')}/redrive", body
        )
        return answer

    # Message status.

    def status(self, message_id: str, *, wait_seconds: float | None = None) -> dict[str, Any]:
        """A message's status (GET /messages/{id}); `wait_seconds` (at most 30) waits for a change or a final state."""
        path = f"/messages/{urllib.parse.quote(message_id, safe='')}"
        timeout = None
        if wait_seconds:
            path += f"?wait={wait_seconds:g}"
            timeout = self.timeout_seconds + wait_seconds
        answer: dict[str, Any] = self.request("GET", path, timeout_seconds=timeout)
        return answer

    # HTTP.

    def request(self, method: str, path: str, body: Any = None, *, timeout_seconds: float | None = None) -> Any:
        """Send one request and return its JSON answer, retrying 503 and 429 as Retry-After asks.

        Raises ApiError for other error statuses and Unavailable when the retries run out.
        """
        deadline = time.monotonic() + self.max_retry_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                status, headers, answer = self._once(method, path, body, timeout_seconds)
            except _Refused as refused:
                error: ApiError = Unavailable(0, {"detail": f"cannot reach {self.base_url}: {refused}"})
                wait = DEFAULT_BACKOFF_SECONDS * 2 ** (attempt - 1)
            else:
                if status < 400:
                    return answer
                problem = answer if isinstance(answer, dict) else {"detail": str(answer)}
                if status not in RETRYABLE_STATUSES:
                    raise ApiError(status, problem, headers)
                error = Unavailable(status, problem, headers)
                wait = _retry_after(headers.get("Retry-After"), DEFAULT_BACKOFF_SECONDS * 2 ** (attempt - 1))
            if attempt >= self.max_attempts or time.monotonic() + wait > deadline:
                raise error
            logger.info(
                "%s %s: %s; attempt %d of %d in %.1f s.", method, path, error, attempt + 1, self.max_attempts, wait
            )
            self.sleep(wait)

    def _once(
        self, method: str, path: str, body: Any, timeout_seconds: float | None = None
    ) -> tuple[int, dict[str, str], Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds or self.timeout_seconds) as response:
                return response.status, dict(response.headers.items()), _json(response.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers.items()), _json(exc.read())
        except urllib.error.URLError as exc:
            # Only a refused connection is certain to have sent nothing; anything else is not retried.
            if isinstance(exc.reason, ConnectionRefusedError):
                raise _Refused(str(exc.reason)) from exc
            raise Unavailable(0, {"detail": f"cannot reach {self.base_url}: {exc.reason}"}) from exc
        except (TimeoutError, ConnectionError) as exc:
            raise Unavailable(0, {"detail": f"no answer from {self.base_url}: {exc}"}) from exc


class _Refused(Exception):
    """The connection was refused: the request was never sent, so it may be tried again."""


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _retry_after(value: str | None, default: float) -> float:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())
