"""The composition root: settings in, the SQS broker with its middleware out.

`dramatiq actors` imports `actors`, which imports `broker` from here: the broker built
from the process environment. The API builds its own with `build_broker(settings)`.

A message type is a schema in `schemas/` plus one function here::

    from broker import PermanentFailure, Retry, message_type

    @message_type("invoice")
    def invoice(payload: dict[str, Any]) -> None: ...

    @message_type("ledger", fifo=True)  # an SQS FIFO queue: in order per group_id
    def ledger(payload: dict[str, Any]) -> None: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
from dramatiq.errors import Retry
from dramatiq.middleware import AgeLimit, CurrentMessage, ShutdownNotifications, TimeLimit

from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.errors import PermanentFailure
from queue_manager.sqs.fifo import FIFO_OPTION
from queue_manager.sqs.middleware.fifo import FifoQueues
from queue_manager.sqs.middleware.lifecycle import WorkerLifecycle
from queue_manager.sqs.middleware.logcontext import StructuredLogs
from queue_manager.sqs.middleware.metrics import WorkerMetrics
from queue_manager.sqs.middleware.retries import RetriesInPlace


def build_broker(settings: Settings) -> QMBroker:
    """Build the SQS broker and its middleware from the settings."""
    middleware: list[dramatiq.Middleware] = [
        AgeLimit(max_age=settings.max_age_ms or None),
        TimeLimit(time_limit=settings.time_limit_ms),
        ShutdownNotifications(),
        CurrentMessage(),
        RetriesInPlace(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        WorkerLifecycle(stats_dir=settings.stats_dir, lookahead=settings.receive_lookahead),
        StructuredLogs(log_format=settings.log_format, log_level=settings.log_level),
        FifoQueues(),
        WorkerMetrics(port=settings.worker_metrics_port, host=settings.worker_metrics_host),
    ]
    return QMBroker(
        namespace=settings.queue_prefix,
        middleware=middleware,
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        visibility_timeout_seconds=settings.visibility_timeout_seconds,
        receive_wait_seconds=settings.receive_wait_seconds,
        ack_flush_interval_ms=settings.ack_flush_interval_ms,
        max_retries=settings.max_retries,
        time_limit_ms=settings.time_limit_ms,
        create_queues=settings.create_queues,
        sqs_timeout_seconds=settings.sqs_timeout_seconds,
        receive_linger_ms=settings.receive_linger_ms,
        receive_gather_ms=settings.receive_gather_ms,
        max_pool_connections=settings.send_concurrency + 16,
    )


def declared_fifo_types() -> frozenset[str]:
    """The message types whose actors declare a FIFO queue (`fifo=True`).

    The declarations live with the actors, so this imports them; the API, which runs none, asks
    here to know which of its types need a `group_id` and go to `.fifo` queues.
    """
    importlib.import_module("actors")  # importing the package declares every message type
    declared: QMBroker = __getattr__("broker")
    return frozenset(actor.queue_name for actor in declared.actors.values() if actor.options.get(FIFO_OPTION))


__all__ = ["PermanentFailure", "Retry", "build_broker", "declared_fifo_types", "message_type"]

_F = TypeVar("_F", bound=Callable[..., Any])


def message_type(name: str, **options: Any) -> Callable[[_F], dramatiq.Actor[Any, Any]]:
    """Declare the actor of message type `name`: its queue, retries, backoff and time limit
    default to the settings; `options` (any Dramatiq actor option) override them.

    `PermanentFailure` dead-letters a message at once; `Retry(delay=ms)` retries it after `delay`.
    `fifo=True` puts the type on an SQS FIFO queue: its messages need a `group_id`, and those of one
    group are processed one at a time, in order.
    """
    settings: Settings = __getattr__("settings")
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
        make: Callable[[_F], dramatiq.Actor[Any, Any]] = dramatiq.actor(broker=__getattr__("broker"), **declared)
        return make(fn)

    return decorate


_broker: QMBroker | None = None
_settings: Settings | None = None


def __getattr__(name: str) -> Any:
    """Build `broker` and `settings` from the environment on first use, once per process."""
    global _broker, _settings
    if name == "settings":
        if _settings is None:
            _settings = Settings.from_env_or_exit("dramatiq")
        return _settings
    if name == "broker":
        if _broker is None:
            _broker = build_broker(__getattr__("settings"))
            dramatiq.set_broker(_broker)
        return _broker
    raise AttributeError(name)
