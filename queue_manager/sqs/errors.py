"""SQS failures: the exceptions queue-manager raises, and every decision about what an SQS error means.

One `Fault` vocabulary and one `classify` for requests and batch entries; `classify_send` is the
stricter reading for sends (only what surely never reached SQS may be sent again); `unsupported`
and `denied` tell an action a server lacks or a policy refuses.
"""

from __future__ import annotations

import enum
from typing import NoReturn

import dramatiq_sqs.exceptions
from botocore import exceptions as botocore_exceptions
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    ProxyConnectionError,
    ReadTimeoutError,
)


class PermanentFailure(Exception):
    """Raised by an actor when retrying cannot help: the message is dead-lettered at once."""


class MessageTooLarge(dramatiq_sqs.exceptions.MessageTooLarge, ValueError):  # type: ignore[misc]
    """Raised when a message is larger than SQS accepts once encoded.

    A dramatiq-sqs MessageTooLarge (a RuntimeError there), so code written for SQSBroker catches it;
    still a ValueError, as it was here.
    """

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(f"The message is {size_bytes} bytes once encoded; SQS accepts at most {limit_bytes} bytes.")
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class MessageDelayTooLong(dramatiq_sqs.exceptions.MessageDelayTooLong):  # type: ignore[misc]
    """Raised when a delay exceeds the 900 s SQS allows on one message (a dramatiq-sqs one, a ValueError)."""


class SQSUnavailable(RuntimeError):
    """Raised when SQS cannot be reached, times out or throttles: try again later."""


class SQSOutcomeUnknown(SQSUnavailable):
    """Raised when a send may have reached SQS but no answer came: a retry must carry the same id."""


class Fault(enum.Enum):
    """What an SQS failure means for the caller: the one classification every SQS call uses."""

    #: SQS or the network failed before the request could land: the same request may be sent again.
    TRANSIENT = "transient"
    #: The request may have landed (a read timeout, a dropped connection): resending may duplicate.
    UNKNOWN_OUTCOME = "unknown_outcome"
    #: The receipt handle is gone (the message was received again elsewhere): nothing to retry.
    LOST_RECEIPT = "lost_receipt"
    #: The queue does not exist.
    MISSING_QUEUE = "missing_queue"
    #: SQS refused the request itself (bad parameter, denied, too large): retrying cannot help.
    REFUSED = "refused"

    @property
    def retryable(self) -> bool:
        """Whether the same request may be sent again without risking a second copy."""
        return self is Fault.TRANSIENT


#: Error codes SQS answers that a later retry may get past.
TRANSIENT_CODES = frozenset(
    {
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "ThrottlingException",
        "Throttling",
        "RequestThrottled",
        "RequestThrottledException",
        "KmsThrottled",
        "AWS.SimpleQueueService.RequestThrottled",
    }
)

#: Entry error codes that mean the receipt handle no longer names a message this caller holds.
LOST_RECEIPT_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
    }
)

#: Error codes of a queue that does not exist.
MISSING_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"})


def classify(code: str, *, status: int = 0, sender_fault: bool | None = None) -> Fault:
    """Classify an error SQS answered, for a whole request or for one batch entry."""
    if code in TRANSIENT_CODES or status >= 500:
        return Fault.TRANSIENT
    if code in MISSING_QUEUE_CODES:
        return Fault.MISSING_QUEUE
    if code in LOST_RECEIPT_CODES:
        return Fault.LOST_RECEIPT
    if sender_fault is False:
        return Fault.TRANSIENT
    return Fault.REFUSED


def classify_exception(exc: BaseException) -> Fault:
    """Classify an exception raised by a botocore call."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return classify(str(error.get("Code", "")), status=status)
    if isinstance(exc, ReadTimeoutError | ConnectionClosedError):
        return Fault.UNKNOWN_OUTCOME
    if isinstance(exc, BotoCoreError):
        return Fault.TRANSIENT
    return Fault.REFUSED


def classify_send(exc: BotoCoreError | ClientError) -> Fault:
    """Classify a failed send strictly: only what surely never reached SQS may be sent again.

    SQS's own error answers are classified as for any call. Of botocore's failures, only those
    before the request was written (no connection, a connect timeout, a proxy that refused) and the
    local ones (credentials, configuration) kept it from SQS; after a read timeout, a dropped
    connection, a broken response or a TLS error mid-stream, SQS may have the message.
    """
    if isinstance(exc, ClientError):
        return classify_exception(exc)
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ProxyConnectionError):
        return Fault.TRANSIENT
    if isinstance(exc, HTTPClientError | botocore_exceptions.ConnectionError):
        return Fault.UNKNOWN_OUTCOME
    return Fault.TRANSIENT


def raise_unavailable(exc: BotoCoreError | ClientError) -> NoReturn:
    """Raise SQSUnavailable for a failure on SQS's side; re-raise anything else."""
    if isinstance(exc, ClientError):
        if classify_exception(exc).retryable:
            raise SQSUnavailable(describe(exc)) from exc
        raise exc
    # Clients read this (503 problems): the endpoint and botocore's text stay with the cause, for the log.
    raise SQSUnavailable(f"SQS cannot be reached ({describe(exc)})") from exc


#: Error codes meaning the server does not implement an action (ministack: InvalidAction).
UNSUPPORTED_CODES = frozenset(
    {
        "UnsupportedOperation",
        "AWS.SimpleQueueService.UnsupportedOperation",
        "InvalidAction",
        "UnknownOperation",
        "UnknownOperationException",
        "NotImplemented",
        "501",
    }
)

#: Error codes of a request the caller's policy does not allow.
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException"})


def unsupported(exc: ClientError) -> bool:
    """Whether the server does not implement the action at all."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # moto answers an action it lacks with a bare 500 whose code is the status itself.
    return code in UNSUPPORTED_CODES or status == 501 or (status == 500 and code == "500")


def denied(exc: ClientError) -> bool:
    """Whether the caller's policy refused the action."""
    return str(exc.response.get("Error", {}).get("Code", "")) in DENIED_CODES


def describe(exc: BaseException) -> str:
    """A short description of a botocore failure, without endpoints or credentials."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"SQS answered {error.get('Code')}: {error.get('Message')}"
    return type(exc).__name__


def public(exc: BaseException) -> str:
    """What a client may read of a failure: botocore's own text (endpoints included) left out."""
    if isinstance(exc, BotoCoreError | ClientError):
        return describe(exc)
    return str(exc)


def logged(exc: BaseException) -> str:
    """What the log says of a failure: the client's description and, after it, what caused it."""
    cause = exc.__cause__
    return f"{public(exc)} ({type(cause).__name__}: {cause})" if cause is not None else str(exc)
