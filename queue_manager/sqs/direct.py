"""SQS's hot calls made directly: a botocore client's own signer and connection pool, without its
generic request pipeline.

The API sends, and the workers receive, delete and hide messages, a tenth of a call per message
each. Through botocore each call cost 3.0-3.6 ms of CPU here (a ten-entry call straight to the
local server): validation and serialisation driven by the service model, a dozen event hooks,
endpoint rules resolved per call, a user-agent string built per call, the response parsed
shape by shape. On two shared cores that was the largest part of the worker's CPU per message.

`DirectSQS` wraps a botocore SQS client and makes five calls (`DIRECT_OPERATIONS`) itself: the
parameters as JSON (SQS's JSON protocol, blobs in base64), signed by botocore's `SigV4Auth` with the
client's own credentials (refreshed as botocore refreshes them), sent through the client's own
`URLLib3Session` (its endpoint, timeouts, proxies, TLS settings and pool), the answer read with
`json.loads`. About a third less CPU a call (2.0-2.3 ms in the same test). Every other call, and
every call when the client is not a plain SigV4 one, goes to the client unchanged.

Failures keep botocore's meaning:
- A client that retries (`retries=True`) makes the call again through botocore after a failure
  botocore would have retried (no connection, a timeout, a 5xx, throttling), and botocore retries
  as it would have: the direct attempt counts as one more request, no more. Other error answers
  (a missing queue, a refused entry) are raised as botocore raises them.
- A client that does not retry (the API's sends: a blind re-send makes a copy) raises what botocore
  would have: the connection errors of its HTTP session as they are, and an error answer as the
  `ClientError` subclass botocore's own parser and error factory make of it.
- An answer that says the request itself was malformed or wrongly signed (`REFUSED_REQUEST_CODES`:
  nothing was done) turns direct calls off for this client for good, with one warning, and the call
  is made again through botocore: an SQS endpoint that reads requests differently from the one
  tested here costs one request, never a message.

botocore's event hooks (`before-send`, `after-call`, ...) do not see direct calls; `on_request`
is called with the action of each request made directly (botocore's `before-call` counts the rest).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import botocore
from botocore import parsers
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, prepare_request_dict
from botocore.exceptions import BotoCoreError, ClientError

from queue_manager.sqs.errors import classify_exception

logger = logging.getLogger(__name__)

#: The client methods made directly, by SQS action.
DIRECT_OPERATIONS = {
    "send_message": "SendMessage",
    "send_message_batch": "SendMessageBatch",
    "receive_message": "ReceiveMessage",
    "delete_message_batch": "DeleteMessageBatch",
    "change_message_visibility_batch": "ChangeMessageVisibilityBatch",
}

#: Error codes that mean SQS refused the request as such, before doing anything.
REFUSED_REQUEST_CODES = frozenset(
    {
        "IncompleteSignature",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
        "SerializationException",
        "UnknownOperationException",
        "InvalidAction",
        "UnsupportedProtocol",
        "AWS.SimpleQueueService.UnsupportedOperation",
    }
)

JSON_CONTENT_TYPE = "application/x-amz-json-1.0"


def _blob(value: object) -> str:
    """JSON's form of a blob (a binary message attribute): base64, as botocore's serialiser writes it."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _decode_binary_attributes(answer: dict[str, Any]) -> None:
    """Turn received binary message attributes back into bytes, as botocore's parser does."""
    for message in answer.get("Messages", ()):
        for value in message.get("MessageAttributes", {}).values():
            if "BinaryValue" in value:
                value["BinaryValue"] = base64.b64decode(value["BinaryValue"])
            if "BinaryListValues" in value:
                value["BinaryListValues"] = [base64.b64decode(v) for v in value["BinaryListValues"]]


class DirectSQS:
    """A botocore SQS client whose hot calls are made directly (see the module); the rest is the client's."""

    def __init__(self, client: Any, *, retries: bool, on_request: Callable[[str], None] | None = None) -> None:
        self._client = client
        self._retries = retries
        self._on_request = on_request
        self._lock = threading.Lock()
        self.meta = client.meta
        self._signer = getattr(client, "_request_signer", None)
        self._http = getattr(getattr(client, "_endpoint", None), "http_session", None)
        self.enabled = self._can_sign() and self._http is not None and bool(client.meta.endpoint_url)
        if self.enabled:
            request: dict[str, Any] = {"url_path": "/", "query_string": "", "headers": {}}
            prepare_request_dict(request, client.meta.endpoint_url)
            self._url: str = str(request["url"])
            self._user_agent = f"queue-manager Botocore/{botocore.__version__}"
            self._parser = parsers.create_parser(client.meta.service_model.metadata["protocol"])
        for method, action in DIRECT_OPERATIONS.items():
            setattr(self, method, self._direct(method, action))

    def _can_sign(self) -> bool:
        signer = self._signer
        if signer is None or getattr(signer, "_credentials", None) is None:
            return False  # anonymous (UNSIGNED) or no credentials found: botocore says what is wrong
        if getattr(signer, "_signature_version", None) not in ("v4", "s3v4"):
            return False
        return bool(self._client.meta.service_model.metadata.get("protocol") == "json")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _direct(self, method: str, action: str) -> Callable[..., dict[str, Any]]:
        through_client = getattr(self._client, method)

        def call(**params: Any) -> dict[str, Any]:
            if not self.enabled:
                return dict(through_client(**params))
            try:
                return self._call(action, params)
            except _Refused as refused:
                with self._lock:
                    if self.enabled:
                        self.enabled = False
                        logger.warning(
                            "SQS refused a direct %s (%s); this client makes its calls through botocore from now on.",
                            action,
                            refused.code,
                        )
                return dict(through_client(**params))
            except (BotoCoreError, ClientError) as exc:
                if not self._retries or not classify_exception(exc).retryable:
                    raise
                # botocore retries what it would have retried, as if this had been its first attempt
                return dict(through_client(**params))

        call.__name__ = method
        call.__doc__ = f"`{action}`, made directly (see queue_manager.sqs.direct)."
        return call

    def _call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=json.dumps(params, default=_blob).encode(),
            headers={
                "X-Amz-Target": f"AmazonSQS.{action}",
                "Content-Type": JSON_CONTENT_TYPE,
                "x-amzn-query-mode": "true",
                "User-Agent": self._user_agent,
            },
        )
        signer = self._signer
        assert signer is not None
        SigV4Auth(signer._credentials.get_frozen_credentials(), signer._signing_name, signer._region_name).add_auth(
            request
        )
        if self._on_request is not None:
            self._on_request(action)
        assert self._http is not None
        response = self._http.send(request.prepare())
        if response.status_code == 200:
            answer: dict[str, Any] = json.loads(response.content) if response.content else {}
            if action == "ReceiveMessage":
                _decode_binary_attributes(answer)
            answer["ResponseMetadata"] = {
                "RequestId": response.headers.get("x-amzn-requestid", ""),
                "HTTPStatusCode": 200,
                "HTTPHeaders": dict(response.headers),
                "RetryAttempts": 0,
            }
            return answer
        raise self._error(action, response)

    def _error(self, action: str, response: Any) -> Exception:
        """The exception botocore's client raises for this error answer (its parser, its error factory)."""
        operation = self._client.meta.service_model.operation_model(action)
        parsed = self._parser.parse(
            {
                "status_code": response.status_code,
                "headers": response.headers,
                "body": response.content,
                "context": {"operation_name": action},
            },
            operation.output_shape,
        )
        error = parsed.get("Error", {})
        code = error.get("QueryErrorCode") or error.get("Code") or ""
        if code in REFUSED_REQUEST_CODES or error.get("Code") in REFUSED_REQUEST_CODES:
            return _Refused(code)
        exception: Exception = self._client.exceptions.from_code(code)(parsed, action)
        return exception


class _Refused(Exception):
    """SQS refused a direct request as such (REFUSED_REQUEST_CODES)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code
