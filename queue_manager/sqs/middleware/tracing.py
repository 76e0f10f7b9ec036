"""Worker tracing: a `process <queue>` span per attempt, current while the actor runs."""

from __future__ import annotations

import logging
import os
from typing import Any

import dramatiq
from dramatiq.logging import get_logger

from queue_manager import tracing
from queue_manager.settings import Settings
from queue_manager.sqs.message import attempt

#: Where a message proxy keeps its attempt's span between the hooks.
_PROCESSING = "qm_processing"

#: The process's counter of dropped spans, made once (prometheus-client registers a name once).
_DROPPED: Any = None


def _dropped_counter() -> Any:
    global _DROPPED
    if _DROPPED is None:
        from prometheus_client import Counter

        _DROPPED = Counter(tracing.DROPPED_METRIC, tracing.DROPPED_HELP, ["reason"])
        for reason in tracing.DROP_REASONS:
            _DROPPED.labels(reason)
    return _DROPPED


class MessageTracing(dramatiq.Middleware):
    """Starts OpenTelemetry in each worker process (after the fork) and traces every attempt.

    The span's parent is the context the message was created in (its `traceparent` attribute), so
    the API's request and the attempts are one trace; it also links to it (QM_TRACE_CONSUMER=link:
    only the link). Put it first in the middleware list: its span then covers every other hook.

    Parameters:
      settings: The settings tracing is configured by (OpenTelemetry's variables among them).
    """

    def __init__(self, *, settings: Settings) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.settings = settings

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        tracing.setup(self.settings, service=tracing.WORKER_SERVICE)

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # An in-process Worker (tests, scripts) has no process boot.
        tracing.setup(self.settings, service=tracing.WORKER_SERVICE)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Dropped spans counted in the master's metrics when they are on (WorkerMetrics set the
        # directory at process boot, after this middleware's own boot hook).
        if tracing.active() and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            dropped = _dropped_counter()
            tracing.drop_listeners.append(lambda reason, n: dropped.labels(reason).inc(n))

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        tracing.shutdown()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        spans = tracing.live()
        if spans is None:
            return
        queue_url = getattr(message, "sqs_queue_url", "")
        processing = spans.process(
            destination=queue_url.rstrip("/").rpartition("/")[2] or message.queue_name,
            message_id=message.message_id,
            sqs_message_id=getattr(message, "sqs_message_id", None),
            attempt=attempt(message),
            attributes=getattr(message, "sqs_attributes", {}),
        )
        setattr(message, _PROCESSING, processing)

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        processing = getattr(message, _PROCESSING, None)
        if processing is not None:
            processing.end(exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        processing = getattr(message, _PROCESSING, None)
        if processing is not None:
            processing.end(skipped=True)

    def before_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        spans = tracing.live()
        processing = getattr(message, _PROCESSING, None)
        receipt = getattr(message, "sqs_receipt_handle", None)
        if spans is not None and processing is not None and receipt:
            spans.acked(receipt, processing)
