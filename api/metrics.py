"""Prometheus metrics of the API: requests by route and status, latency, batch sizes, SQS trouble."""

from __future__ import annotations

import os
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

from queue_manager import tracing
from queue_manager.sqs.broker import QMBroker

#: Batch sizes are 1 to 10 entries.
BATCH_BUCKETS = tuple(range(1, 11))

#: A send's time to SQS's answer, in seconds: 5 ms steps up to 30 ms, around the 15 ms a call to SQS takes
#: (the bench's figure), then coarser up to the send timeout's range.
SEND_SECONDS_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """The API's metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "qm_api_requests", "HTTP requests answered.", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "qm_api_request_seconds", "Time to answer a request.", ["route", "method"], registry=self.registry
        )
        self.batch_sizes = Histogram(
            "qm_api_send_batch_size", "Messages per SendMessageBatch.", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.send_seconds = Histogram(
            "qm_api_send_seconds",
            "Time an answered SendMessageBatch took, from handing it to a send thread to SQS's answer.",
            buckets=SEND_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.sqs_errors = Counter(
            "qm_api_sqs_errors", "Sends SQS did not accept, by reason.", ["reason"], registry=self.registry
        )

        self.sqs_requests = Counter(
            "qm_api_sqs_requests", "SQS requests made, by action.", ["action"], registry=self.registry
        )
        self.status_writes = Counter(
            "qm_status_writes",
            "Status events by outcome: written, dropped (buffer full), failed (store error).",
            ["outcome"],
            registry=self.registry,
        )
        self.status_requests = Counter(
            "qm_status_store_writes",
            "Write requests to the status store (one SQLite commit, or one BatchWriteItem).",
            registry=self.registry,
        )
        self.trace_spans_dropped = Counter(
            tracing.DROPPED_METRIC, tracing.DROPPED_HELP, ["reason"], registry=self.registry
        )

    def watch_tracing(self) -> None:
        """Count the spans tracing drops in this process (while it is on; zeros from the start)."""
        for reason in tracing.DROP_REASONS:
            self.trace_spans_dropped.labels(reason)
        tracing.drop_listeners.append(self.count_dropped_spans)

    def count_dropped_spans(self, reason: str, n: int) -> None:
        """Count spans tracing dropped (a `tracing.drop_listeners` listener)."""
        self.trace_spans_dropped.labels(reason).inc(n)

    def watch_broker(self, broker: QMBroker) -> None:
        """Count the broker's SQS requests by action."""
        broker.request_listeners.append(lambda action: self.sqs_requests.labels(action).inc())

    def count_status_request(self) -> None:
        """Count one request to the status store (the StatusWriter's `on_request`)."""
        self.status_requests.inc()

    def count_status_writes(self, outcome: str, n: int) -> None:
        """Count status events by outcome (the StatusWriter's `on_outcome`)."""
        self.status_writes.labels(outcome).inc(n)

    def middleware(self) -> Middleware:
        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self.requests.labels(route, request.method, str(status)).inc()
                self.latency.labels(route, request.method).observe(time.perf_counter() - started)

        return measure

    def exposition(self) -> bytes:
        """The metrics in Prometheus text; behind several API processes, summed over all of them."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            combined = CollectorRegistry()
            multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
            return generate_latest(combined)
        return generate_latest(self.registry)
