"""The composition root: settings and the schema registry in, the SQS broker with its middleware out.

`dramatiq actors` imports `actors`, which imports `broker` from here: the broker built from the
process environment and the schemas it names. The API builds its own with
`build_broker(settings, fifo_types=registry.fifo_types)` and never imports `actors`.

A message type is a schema in `schemas/` plus one function here::

    from broker import PermanentFailure, Retry, message_type

    @message_type("invoice")
    def invoice(payload: dict[str, Any]) -> None: ...

A schema with `"x-qm-queue": "fifo"` puts its type on an SQS FIFO queue (in order per group_id).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
from dramatiq.errors import Retry
from dramatiq.middleware import AgeLimit, CurrentMessage, ShutdownNotifications, TimeLimit

from queue_manager import tracing
from queue_manager.payloads.fetch import ClaimCheck
from queue_manager.payloads.middleware import Payloads
from queue_manager.payloads.offload import Offloader
from queue_manager.payloads.store import PayloadStore, s3_client
from queue_manager.reports import REPORTS_FOLDER, DirectoryReports
from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.constants import FIFO_OPTION, MAX_MESSAGE_SIZE_BYTES
from queue_manager.sqs.errors import PermanentFailure
from queue_manager.sqs.middleware.fifo import FifoQueues
from queue_manager.sqs.middleware.logcontext import StructuredLogs
from queue_manager.sqs.middleware.metrics import WorkerMetrics
from queue_manager.sqs.middleware.retries import RetriesInPlace
from queue_manager.sqs.middleware.status import MessageStatus
from queue_manager.sqs.middleware.tracing import MessageTracing
from queue_manager.sqs.middleware.workload import WorkloadReports
from queue_manager.state.stores import status_events, status_writer
from schemas import SchemaRegistry


def build_broker(settings: Settings, *, fifo_types: frozenset[str] = frozenset()) -> QMBroker:
    """Build the SQS broker and its middleware from the settings.

    `fifo_types` are the message types on SQS FIFO queues: the schema registry's `fifo_types`.
    Nothing here reads the environment or installs a global broker.
    """
    # One status store per process: the workers write each attempt to it, and the retry budget reads runs from it.
    status = status_events(settings)
    middleware: list[dramatiq.Middleware] = [
        AgeLimit(max_age=settings.max_age_ms or None),
        TimeLimit(time_limit=settings.time_limit_ms),
        ShutdownNotifications(),
        CurrentMessage(),
        RetriesInPlace(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
            status=status,
        ),
        StructuredLogs(log_format=settings.log_format, log_level=settings.log_level),
        FifoQueues(),
        WorkerMetrics(port=settings.worker_metrics_port, host=settings.worker_metrics_host),
        WorkloadReports(store=worker_reports(settings), gauges=bool(settings.worker_metrics_port)),
        # Each attempt's start and outcome for GET /messages/{id}; its writer starts at the first event.
        MessageStatus(writer=status_writer(settings, status) if status is not None else None),
    ]
    if tracing.wanted(settings):  # first, so its span covers every other hook; absent, it costs nothing
        middleware.insert(0, MessageTracing(settings=settings))
    claim_check = payload_claim_check(settings)
    if claim_check is not None:
        # Last: the time limit and the metrics have started when it fetches a payload.
        middleware.append(Payloads(claim_check=claim_check))
    broker = QMBroker(
        namespace=settings.queue_prefix,
        middleware=middleware,
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        visibility_timeout_seconds=settings.visibility_timeout_seconds,
        receive_wait_seconds=settings.receive_wait_seconds,
        ack_flush_interval_ms=settings.ack_flush_interval_ms,
        max_retries=settings.max_retries,
        spare_receives=settings.spare_receives,
        time_limit_ms=settings.time_limit_ms,
        create_queues=settings.create_queues,
        sqs_timeout_seconds=settings.sqs_timeout_seconds,
        receive_linger_ms=settings.receive_linger_ms,
        receive_gather_ms=settings.receive_gather_ms,
        max_pool_connections=settings.send_concurrency + 16,
        fifo_queues=fifo_types,
        receive_lookahead=settings.receive_lookahead,
        busy_lookahead=settings.busy_lookahead,
        stats_dir=settings.stats_dir,
        stop_drain_seconds=settings.stop_drain_seconds,
        max_message_size=offload_limit_bytes(settings),
        direct_calls=settings.sqs_direct_calls,
    )
    if claim_check is not None:
        broker.offloader = Offloader(claim_check.store, threshold_bytes=settings.payload_threshold_bytes)
        broker.decode_body = claim_check.decode
        broker.acks.deleted_listeners.append(claim_check.deleted)
        # S3 requests are counted with SQS's, as `s3:<Action>` (request counts, QM_STATS_DIR, the IAM test).
        claim_check.store.client.meta.events.register(
            "before-call.s3", lambda model, **_: broker.count_request("s3:" + model.name)
        )
    return broker


def payload_claim_check(settings: Settings) -> ClaimCheck | None:
    """The bucket of large messages and the process's acked objects, if QM_PAYLOAD_BUCKET is set."""
    if not settings.payload_bucket:
        return None
    client = s3_client(
        endpoint_url=settings.payload_endpoint_url,
        region=settings.region,
        timeout_seconds=settings.sqs_timeout_seconds,
        max_pool_connections=settings.send_concurrency + 16,
    )
    store = PayloadStore(
        client,
        bucket=settings.payload_bucket,
        key_prefix=settings.queue_prefix,
        kms_key_id=settings.payload_kms_key_id,
    )
    return ClaimCheck(store, delete_after_ack=settings.payload_delete == "after-ack")


def offload_limit_bytes(settings: Settings) -> int:
    """The largest encoded body a send accepts: SQS's limit, or with S3 QM_MAX_MESSAGE_BYTES once base64-encoded."""
    if not settings.payload_bucket:
        return MAX_MESSAGE_SIZE_BYTES
    return max(MAX_MESSAGE_SIZE_BYTES, -(-(settings.max_message_bytes + ENVELOPE_ROOM_BYTES) // 3) * 4)


def worker_reports(settings: Settings) -> DirectoryReports | None:
    """Where the worker processes of this host publish their workload for /scaling: QM_STATE_DIR, if set."""
    return DirectoryReports(settings.state_dir / REPORTS_FOLDER) if settings.state_dir is not None else None


__all__ = [
    "PermanentFailure",
    "Retry",
    "build_broker",
    "message_type",
    "offload_limit_bytes",
    "payload_claim_check",
    "worker_reports",
]

#: Room for what Dramatiq's encoding adds around a payload of QM_MAX_MESSAGE_BYTES (ids, names, options).
ENVELOPE_ROOM_BYTES = 64 * 1024

_F = TypeVar("_F", bound=Callable[..., Any])


def message_type(name: str, **options: Any) -> Callable[[_F], dramatiq.Actor[Any, Any]]:
    """Declare the actor of message type `name`: its queue, retries, backoff and time limit
    default to the settings; `options` (any Dramatiq actor option) override them.

    `PermanentFailure` dead-letters a message at once; `Retry(delay=ms)` retries it after `delay`.
    The queue kind is the schema's (`"x-qm-queue": "fifo"`); `fifo=` may restate it, and an actor
    that contradicts its schema is refused here, at import, rather than sending to the wrong queue.
    """
    settings: Settings = __getattr__("settings")
    declared_broker: QMBroker = __getattr__("broker")
    if FIFO_OPTION in options:
        said = bool(options.pop(FIFO_OPTION))
        declared_kind = "fifo" if options.get("queue_name", name) in declared_broker.fifo_queues else "standard"
        if said != (declared_kind == "fifo"):
            raise ValueError(
                f"Actor {name!r} says {FIFO_OPTION}={said}, but its schema declares a {declared_kind} queue: "
                f'the queue kind is declared in {name}.json ("x-qm-queue": "fifo" or "standard").'
            )
    declared: dict[str, Any] = {
        "actor_name": name,
        "queue_name": name,
        "max_retries": settings.max_retries,
        "min_backoff": settings.min_backoff_ms,
        "max_backoff": settings.max_backoff_ms,
        "time_limit": settings.time_limit_ms,
        "throws": (PermanentFailure,),
        **options,
    }

    def decorate(fn: _F) -> dramatiq.Actor[Any, Any]:
        make: Callable[[_F], dramatiq.Actor[Any, Any]] = dramatiq.actor(broker=declared_broker, **declared)
        return make(fn)

    return decorate


_broker: QMBroker | None = None
_settings: Settings | None = None


def __getattr__(name: str) -> Any:
    """Build `broker` and `settings` from the environment (and the schemas it names) on first use, once per process."""
    global _broker, _settings
    if name == "settings":
        if _settings is None:
            _settings = Settings.from_env_or_exit("dramatiq")
        return _settings
    if name == "broker":
        if _broker is None:
            settings: Settings = __getattr__("settings")
            _broker = build_broker(settings, fifo_types=SchemaRegistry.load(settings.schemas_dir).fifo_types)
            dramatiq.set_broker(_broker)
        return _broker
    raise AttributeError(name)
