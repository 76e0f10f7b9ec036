"""Tracing: one OpenTelemetry trace from the POST to the actor and on into the webhook's receiver.

This module is the façade the rest of the code calls, and it imports nothing of OpenTelemetry:
until `setup` finds tracing configured (an OTLP endpoint, or OTEL_TRACES_EXPORTER=console, and not
OTEL_SDK_DISABLED=true) every hook below is a function that returns at once, and a process that
never turns tracing on never imports the SDK. `setup` loads `queue_manager.tracing.spans`, which
holds the spans themselves (OpenTelemetry's messaging and HTTP conventions).

The hooks, where they are called:

    create <queue>   PRODUCER  broker.build_entry: the message's creation context, put in its
                               `traceparent`/`tracestate` attributes
    send <queue>     CLIENT    broker.send_entries / enqueue: one per SendMessage(Batch), linked to
                               each message's create span
    process <queue>  CONSUMER  middleware.tracing: one per attempt, child of the creation context
    settle <queue>   CLIENT    acks: one per DeleteMessageBatch, linked to the messages it deletes
    POST             CLIENT    actors.webhook: carries `traceparent` to the receiver
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from queue_manager.sqs import constants
from queue_manager.tracing.config import TraceConfig

if TYPE_CHECKING:
    from queue_manager.settings import Settings
    from queue_manager.tracing.spans import Spans

__all__ = ["TraceConfig", "current_trace_id", "setup", "shutdown", "trace_id_of"]

logger = logging.getLogger(__name__)

#: A W3C traceparent: version, trace id, parent id, flags (https://www.w3.org/TR/trace-context/).
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")

#: The service names when neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES names one.
API_SERVICE = "queue-manager-api"
WORKER_SERVICE = "queue-manager-worker"


#: The live spans once `setup` turned tracing on; None means every hook is a no-op.
_spans: Spans | None = None

#: Why spans are dropped: the export queue was full, or the collector refused them or was away.
DROP_REASONS = ("queue_full", "export_failed")

#: The Prometheus counter of dropped spans, by `reason`, in the API's metrics and the workers'.
DROPPED_METRIC = "qm_trace_spans_dropped"
DROPPED_HELP = (
    "Spans dropped on their way to the trace collector, by reason: queue_full (the export queue), "
    "export_failed (the collector refused them or was away)."
)

#: Called with (reason, count) whenever spans are dropped in this process (the Prometheus metrics
#: add theirs: `qm_trace_spans_dropped_total{reason}`); emptied by `shutdown`. Called from the
#: thread that dropped them (a request's, an actor's or the export thread): quick and thread-safe.
drop_listeners: list[Callable[[str, int], None]] = []


def wanted(settings: Settings) -> bool:
    """Whether the settings turn tracing on (nothing is imported or started here)."""
    return TraceConfig.from_settings(settings).enabled


def setup(settings: Settings, *, service: str) -> bool:
    """Turn tracing on in this process if the settings say so; whether it is on. Idempotent.

    Call it in the process that makes the spans: the API process, each worker process after the fork.
    Without the SDK installed (the `tracing` extra) it logs why and stays off.
    """
    global _spans
    if _spans is not None:
        return True
    config = TraceConfig.from_settings(settings)
    if not config.enabled:
        return False
    try:
        from queue_manager.tracing.spans import Spans
    except ImportError as exc:
        logger.warning(
            "Tracing is configured but the OpenTelemetry SDK is not installed (%s); install "
            "queue-manager[tracing]. Carrying on without traces.",
            exc,
        )
        return False
    _spans = Spans.start(config, service=service, drop_listeners=drop_listeners)
    from queue_manager import logs

    logs.trace_fields = _spans.log_fields
    return True


def shutdown(timeout_seconds: float = 5.0) -> None:
    """Export what is buffered (for at most `timeout_seconds`) and stop; tracing is off afterwards."""
    global _spans
    spans, _spans = _spans, None
    if spans is None:
        return
    from queue_manager import logs

    logs.trace_fields = None
    spans.shutdown(timeout_seconds)
    drop_listeners.clear()


def active() -> bool:
    """Whether tracing is on in this process."""
    return _spans is not None


def live() -> Spans | None:
    """The live spans, for the hooks that need more than the functions below (the middleware)."""
    return _spans


def dropped_spans() -> int:
    """Spans lost so far in this process: the export queue was full, or the collector refused or was away."""
    return _spans.dropped() if _spans is not None else 0


# -- hooks: each returns at once while tracing is off ------------------------------------------


def created(entry: dict[str, Any], *, destination: str, message_id: str) -> None:
    """A message entry is built: record its create span and put its context in its attributes."""
    if _spans is not None:
        _spans.created(entry, destination, message_id)


class _Nothing:
    """What the span hooks give while tracing is off: a context manager that records nothing."""

    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def results(self, ok: int, failed: int) -> None:
        """The outcome of a batch's entries."""

    def answered(self, status: int) -> None:
        """The status of an HTTP answer."""


_NOTHING = _Nothing()


def sending(destination: str, entries: list[dict[str, Any]]) -> contextlib.AbstractContextManager[Any]:
    """Around one SendMessage(Batch) of `entries`: a send span linked to each entry's create span."""
    if _spans is None:
        return _NOTHING
    return _spans.sending(destination, entries)


def settling(queue_url: str, receipt_handles: list[str]) -> contextlib.AbstractContextManager[Any]:
    """Around one DeleteMessageBatch: a settle span linked to the messages it deletes."""
    if _spans is None:
        return _NOTHING
    return _spans.settling(queue_url, receipt_handles)


def http_client(method: str, url: str, headers: dict[str, str]) -> contextlib.AbstractContextManager[Any]:
    """Around an outgoing HTTP request: a CLIENT span, and its context put in `headers` (OTEL_PROPAGATORS)."""
    if _spans is None:
        return _NOTHING
    return _spans.http_client(method, url, headers)


# -- trace ids, for logs, status and the dead-letter listing ------------------------------------


def current_trace_id() -> str | None:
    """The trace id (32 hex digits) of the span current in this thread or task, or None."""
    return _spans.current_trace_id() if _spans is not None else None


def trace_id_of(source: Mapping[str, Any] | str | object | None) -> str | None:
    """The trace id a message carries: from a received message (`sqs_attributes`), its SQS message
    attributes (received or as sent, e.g. a prepared entry's `MessageAttributes`) or a `traceparent`
    value; None when it carries none. Works with tracing off (it only parses)."""
    if source is None:
        return None
    if not isinstance(source, str | Mapping):
        source = getattr(source, "sqs_attributes", None)
        if not isinstance(source, Mapping):
            return None
    if isinstance(source, str):
        value: Any = source
    else:
        value = source.get(constants.ATTR_TRACEPARENT)
        if isinstance(value, Mapping):
            value = value.get("StringValue")
    if not isinstance(value, str):
        return None
    match = TRACEPARENT.match(value.strip())
    if match is None or match.group(1) == "0" * 32:
        return None
    return match.group(1)
