"""Prometheus metrics of the workers, summed over every process of a `dramatiq` master.

Each worker process writes its samples to a directory shared by the master's children
(prometheus-client's multiprocess mode); one fork of the master serves them all (metrics_fork).
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import dramatiq
from dramatiq.logging import get_logger

from queue_manager.sqs.constants import RETRY_DELAY_OPTION
from queue_manager.sqs.message import attempt

#: Where the worker serves /metrics; port 0 disables it.
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9191

#: The module and function of the fork that serves the metrics (see ForkFunction).
FORK_MODULE = "queue_manager.sqs.middleware.metrics_fork"
FORK_FUNCTION = "serve"


def samples_dir(master_pid: int) -> Path:
    """The directory one master's processes share their samples in.

    Named by the master's pid and start time, so a later master that reuses the pid (a container
    restart keeps /tmp) never adds its counts to an old run's.
    """
    try:
        started = Path(f"/proc/{master_pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return Path(tempfile.gettempdir()) / f"qm-prometheus-{master_pid}-{started}"


@runtime_checkable
class CountsRequests(Protocol):
    """A broker that tells its SQS requests and DeleteMessageBatch sizes to listeners (as QMBroker does)."""

    request_listeners: list[Callable[[str], None]]
    delete_batch_listeners: list[Callable[[int], None]]


class ForkFunction:
    """A fork function named by its module and name, its module imported only where it runs.

    dramatiq hands a fork to its master as "module:name", read from `__module__` and `__name__`,
    and the fork imports it there. The metrics fork's module sets up the fork's logging when
    imported, so a worker process must name it without importing it.
    """

    def __init__(self, module: str, name: str) -> None:
        self.__module__ = module
        self.__name__ = name

    def __call__(self) -> int:
        function = getattr(importlib.import_module(self.__module__), self.__name__)
        return int(function())


class WorkerMetrics(dramatiq.Middleware):
    """Counts messages by actor and outcome, times them, and exports SQS requests by action.

    Parameters:
      port: Where the master's metrics fork serves /metrics; 0 disables metrics.
      host: The address it binds (loopback by default).
    """

    def __init__(self, *, port: int = DEFAULT_METRICS_PORT, host: str = DEFAULT_METRICS_HOST) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.port = port
        self.host = host
        self._metrics: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._children: dict[tuple[str, ...], Any] = {}

    @property
    def forks(self) -> list[Any]:
        # The fork is started by the master and reads its address from the same environment.
        return [ForkFunction(FORK_MODULE, FORK_FUNCTION)] if self.port else []

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        if not self.port:
            return
        directory = samples_dir(os.getppid())
        directory.mkdir(parents=True, exist_ok=True)
        # Must be set before prometheus_client is first imported in this process.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
        from prometheus_client import Counter, Histogram

        m = self._metrics
        m["messages"] = Counter("qm_worker_messages", "Messages handled.", ["actor", "outcome"])
        m["processing"] = Histogram("qm_worker_processing_seconds", "Time an attempt ran.", ["actor"])
        m["waiting"] = Histogram(
            "qm_worker_queue_wait_seconds",
            "Time from enqueue to the start of an attempt.",
            ["actor"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 21600, 43200),
        )
        m["ack_batch"] = Histogram("qm_worker_ack_batch_size", "Acks per DeleteMessageBatch.", buckets=range(1, 11))
        m["sqs"] = Counter("qm_worker_sqs_requests", "SQS requests made, by action.", ["action"])
        if isinstance(broker, CountsRequests):
            broker.request_listeners.append(lambda action: m["sqs"].labels(action).inc())
            broker.delete_batch_listeners.append(lambda size: m["ack_batch"].observe(size))

    def _child(self, metric: str, *labels: str) -> Any:
        """A metric's child for these labels, looked up once (`labels()` takes a lock and builds a key)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics[metric].labels(*labels)
        return child

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if not self._metrics:
            return
        self._started[message.message_id] = time.monotonic()
        if attempt(message) == 1:  # a retry's wait is its backoff
            waited = time.time() - message.message_timestamp / 1000
            self._child("waiting", message.actor_name).observe(max(waited, 0.0))

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        if not self._metrics:
            return
        actor = message.actor_name
        started = self._started.pop(message.message_id, None)
        if started is not None:
            self._child("processing", actor).observe(time.monotonic() - started)
        self._child("messages", actor, "processed" if exception is None else "failed").inc()

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._started.pop(message.message_id, None)

    def before_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        # A nack is a retry in place or a dead letter; which one, the retry middleware has said by now
        # (after-hooks run in reverse order, so after_process_message is too early to tell).
        if self._metrics:
            outcome = "retried" if RETRY_DELAY_OPTION in message.options else "dead_lettered"
            self._child("messages", message.actor_name, outcome).inc()
