"""The errors the API answers with, rendered as RFC 9457 problem details.

Problem
├── BadHttpRequest        400  aiohttp's parser refused the request line or headers
├── BadRequest            400  the body is not JSON (or not UTF-8, or nests too deep)
├── Unauthorized          401  no valid API key
├── Forbidden             403  a viewer's key asked to change something, or a cross-site request
├── NotFound              404  no such route, type, queue or message
├── MethodNotAllowed      405
├── Gone                  410  a message whose status is past QM_STATUS_RETENTION_SECONDS
├── RequestTimeout        408  the headers or the body did not arrive within QM_HEADER_TIMEOUT_SECONDS
│                              or QM_BODY_TIMEOUT_SECONDS
├── PayloadTooLarge       413  the body, or the message once encoded, is over the SQS limit
├── UnsupportedMediaType  415  not application/json
├── Unprocessable         422  an unknown type, a payload that breaks its schema, a reused key
├── FailedDependency      424  a batch entry not sent: an earlier entry of its FIFO group was not
├── TooManyRequests       429  a queue is over QM_MAX_QUEUE_DEPTH
└── ServiceUnavailable    503  SQS cannot be reached, is too slow, or throttles
    ├── OutcomeUnknown    503  SQS may have the message: retry with the same Idempotency-Key
    ├── StateUnavailable  503  a keyed request whose key the state store could not check: nothing sent
    └── StorageUnavailable 503 S3 did not take a large message's body: nothing was sent to SQS
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from schemas import Violation

#: The media type of a problem document.
PROBLEM_CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """An error answered to the client: a status, a stable type URI, and a precise detail."""

    status = 500
    slug = "internal-error"
    title = "Internal Server Error"

    #: Whether the connection is closed after the answer (the rest of the request cannot be trusted).
    close_connection = False

    def __init__(
        self, detail: str, *, errors: list[Violation] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:queue-manager:problem:{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = [v.as_dict() for v in self.errors]
        return body

    def response(self) -> web.Response:
        response = web.json_response(
            self.body(), status=self.status, headers=self.headers, content_type=PROBLEM_CONTENT_TYPE
        )
        if self.close_connection:
            response.force_close()
        return response


class BadHttpRequest(Problem):
    status, slug, title = 400, "bad-request", "Bad Request"
    close_connection = True


class BadRequest(Problem):
    status, slug, title = 400, "malformed-json", "Malformed JSON"


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", "Unauthorized"


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Forbidden"


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not Found"


class Gone(Problem):
    status, slug, title = 410, "gone", "Gone"


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", "Method Not Allowed"


class RequestTimeout(Problem):
    status, slug, title = 408, "request-timeout", "Request Timeout"
    close_connection = True


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", "Payload Too Large"


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", "Unsupported Media Type"


#: Seconds a client is asked to wait (the Retry-After header), by what went wrong; the OpenAPI
#: document states each.
#: A send SQS did not take, or the API's own queue of sends is full: soon gone, try again soon.
RETRY_AFTER_SEND_SECONDS = 1
#: A queue over QM_MAX_QUEUE_DEPTH: the workers need time to drain it.
RETRY_AFTER_BACKLOG_SECONDS = 5
#: SQS could not be read (depths, dead letters, readiness).
RETRY_AFTER_READ_SECONDS = 5


class Unprocessable(Problem):
    status, slug, title = 422, "invalid-message", "Invalid Message"


class FailedDependency(Problem):
    """Answered for a batch entry held back so as not to overtake an earlier entry of its FIFO group."""

    status, slug, title = 424, "failed-dependency", "Failed Dependency"

    def __init__(self, detail: str, *, waits_on: int) -> None:
        super().__init__(detail)
        #: The index of the batch entry it waits on: the first of its group that was not sent.
        self.waits_on = waits_on


class TooManyRequests(Problem):
    status, slug, title = 429, "queue-backlog", "Too Many Requests"

    def __init__(self, detail: str, *, retry_after_seconds: int = RETRY_AFTER_BACKLOG_SECONDS) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class ServiceUnavailable(Problem):
    status, slug, title = 503, "sqs-unavailable", "Service Unavailable"

    def __init__(self, detail: str, *, retry_after_seconds: int = RETRY_AFTER_SEND_SECONDS) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class OutcomeUnknown(ServiceUnavailable):
    """Answered when a send may have reached SQS without an answer: a keyed retry is safe."""

    slug = "outcome-unknown"


class StateUnavailable(ServiceUnavailable):
    """Answered for a keyed request when the state store (SQLite or DynamoDB) fails or throttles: nothing was sent."""

    slug = "state-unavailable"


class StorageUnavailable(ServiceUnavailable):
    """Answered when S3 did not take a large message's body: nothing was sent to SQS; try again."""

    slug = "storage-unavailable"


class InternalError(Problem):
    """Answered for a bug: the detail says nothing of it; the log has the traceback."""
