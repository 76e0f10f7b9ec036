"""The bench's actor bodies, shared by both worker modules so both run identical code."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

import urllib3

#: How long the sleep actor takes.
SLEEP_SECONDS = 0.05

#: The payload field a bench message carries its id in (`{"fields": {MARK_FIELD: "..."}}`, allowed by log.json).
MARK_FIELD = "bench_id"

_marks_fd: int | None = None

logger = logging.getLogger("queue_manager.log")


def _write_mark(line: str) -> None:
    """Append one line to BENCH_MARKS, if set, in one O_APPEND write (whole lines from every process)."""
    global _marks_fd
    path = os.environ.get("BENCH_MARKS")
    if not path:
        return
    if _marks_fd is None:
        _marks_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_marks_fd, line.encode())


def mark_start(payload: dict[str, Any], received: float | None = None, accepted: float | None = None) -> None:
    """Record, first thing in the actor, "<time.time()> <bench id> <pid>": when the actor started this message,
    and " <received> <accepted>" when the worker says when the receive that brought it returned and when
    SQS accepted it."""
    started = time.time()
    ident = payload.get("fields", {}).get(MARK_FIELD, "-")
    tail = f" {received:.6f} {accepted:.3f}" if received is not None and accepted is not None else ""
    _write_mark(f"{started:.6f} {ident} {os.getpid()}{tail}\n")


def noop() -> None:
    """Does nothing: what is left is the cost of the broker and Dramatiq."""


def stock_log(payload: dict[str, Any]) -> None:
    """Stock's `log` actor: the shipped one's work (one log line of the message), after the bench's mark."""
    mark_start(payload)
    logger.info("%s", payload["message"])


#: Stock's webhook connections: the shipped actor's pool (actors/webhook.py), no retries, no redirects.
_http = urllib3.PoolManager(num_pools=16, maxsize=16, retries=False)

#: The shipped default of QM_WEBHOOK_TIMEOUT_SECONDS and QM_WEBHOOK_ALLOWED_HOSTS.
WEBHOOK_TIMEOUT_SECONDS = 10.0
WEBHOOK_ALLOWED_HOSTS = ("127.0.0.1", "localhost")


def stock_webhook(payload: dict[str, Any]) -> None:
    """Stock's `webhook` and `ordered` actors: the shipped actor's HTTP work (actors/webhook.py `post`:
    the destination check, the same headers and pool, POST `body` to `url`) without its retry policy
    or tracing; stock has no current message, so its Idempotency-Key is empty. A non-2xx raises
    (Dramatiq's Retries middleware retries it)."""
    from schemas.checks import destination_error

    url = payload["url"]
    refused = destination_error(url, WEBHOOK_ALLOWED_HOSTS)
    if refused:
        raise ValueError(f"webhook destination refused: {refused}")
    headers = {**payload.get("headers", {}), "Content-Type": "application/json", "Idempotency-Key": ""}
    timeout = urllib3.Timeout(connect=WEBHOOK_TIMEOUT_SECONDS, read=WEBHOOK_TIMEOUT_SECONDS)
    body = json.dumps(payload["body"]).encode()
    response = _http.request("POST", url, body=body, headers=headers, redirect=False, timeout=timeout)
    if not 200 <= response.status < 300:
        raise RuntimeError(f"webhook to {url} answered {response.status}")


def sleep() -> None:
    """Sleeps 50 ms, then appends "<start> <end> <pid>-<thread>" to BENCH_MARKS if set (one O_APPEND write)."""
    start = time.time()
    time.sleep(SLEEP_SECONDS)
    end = time.time()
    _write_mark(f"{start:.6f} {end:.6f} {os.getpid()}-{threading.get_ident()}\n")
