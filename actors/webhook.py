"""The `webhook` message type: POSTs a JSON body to an allowed URL, once per message id."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from typing import Any

import urllib3
from dramatiq.middleware import CurrentMessage

from broker import PermanentFailure, Retry, message_type, settings
from queue_manager import tracing
from schemas.checks import destination_error

logger = logging.getLogger(__name__)

#: Statuses worth another attempt; any other 4xx (and any 3xx: no redirect is followed) is permanent.
RETRYABLE_STATUSES = frozenset({408, 429})

#: The longest Retry-After honoured, in seconds (SQS hides a message for at most 12 h).
MAX_RETRY_AFTER_SECONDS = 12 * 3600 - 60

_http = urllib3.PoolManager(num_pools=16, maxsize=16, retries=False)


@message_type("webhook")
def webhook(payload: dict[str, Any]) -> None:
    """POST `body` to `url`; a 2xx is done, 5xx/408/429/timeouts retry, other answers dead-letter."""
    post(payload)


def post(payload: dict[str, Any]) -> None:
    """POST a webhook payload (`url`, `body`, `headers`) with the message id as its Idempotency-Key.

    Returns on a 2xx; raises Retry for 5xx, 408, 429 and network errors, PermanentFailure otherwise.
    """
    current = CurrentMessage.get_current_message()
    message_id = current.message_id if current else ""
    url = payload["url"]
    refused = destination_error(url, settings.webhook_allowed_hosts)
    if refused:
        raise PermanentFailure(f"webhook destination refused: {refused}")
    headers = {**payload.get("headers", {})}
    headers.update({"Content-Type": "application/json", "Idempotency-Key": message_id})
    timeout = urllib3.Timeout(connect=settings.webhook_timeout_seconds, read=settings.webhook_timeout_seconds)
    try:
        # With tracing on, a CLIENT span, and its `traceparent` in the headers: the receiver joins the trace.
        with tracing.http_client("POST", url, headers) as call:
            response = _http.request(
                "POST", url, body=json.dumps(payload["body"]).encode(), headers=headers, redirect=False, timeout=timeout
            )
            call.answered(response.status)
    except urllib3.exceptions.HTTPError as exc:
        raise Retry(f"webhook to {url} failed: {type(exc).__name__}") from exc
    status = response.status
    if 200 <= status < 300:
        logger.debug("Webhook %r delivered to %s with %d.", message_id, url, status)
        return
    if status >= 500 or status in RETRYABLE_STATUSES:
        delay = retry_after_ms(response.headers.get("Retry-After"))
        raise Retry(f"webhook to {url} answered {status}", delay=delay)
    raise PermanentFailure(f"webhook to {url} answered {status}")


def retry_after_ms(value: str | None) -> int | None:
    """Milliseconds a Retry-After header (seconds or an HTTP date) asks to wait, if it says."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return int(max(0.0, min(seconds, MAX_RETRY_AFTER_SECONDS)) * 1000)
