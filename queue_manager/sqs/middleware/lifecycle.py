"""Ties the consumers to the worker's life: thread count, stop receiving, final flush."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.logging import get_logger

from queue_manager.sqs.broker import QMBroker

#: Messages held beyond the worker's threads, ready for the next thread to free.
DEFAULT_LOOKAHEAD = 1


class WorkerLifecycle(dramatiq.Middleware):
    """Sizes receives to the worker's threads and drains cleanly on shutdown.

    Parameters:
      stats_dir: If set, each worker process writes its SQS request counts there on exit.
      lookahead: Messages held beyond the threads, so a freed thread need not wait for a receive.
    """

    def __init__(self, *, stats_dir: Path | None = None, lookahead: int = DEFAULT_LOOKAHEAD) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.stats_dir = stats_dir
        self.lookahead = lookahead

    def before_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, QMBroker):
            broker.stopping = False
            broker.capacity.set_threads(worker.worker_threads, self.lookahead)

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if isinstance(broker, QMBroker):
            broker.stop_receiving()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if not isinstance(broker, QMBroker):
            return
        broker.acks.stop()
        counts = broker.request_counts()
        self.logger.info("Worker stopped; SQS requests by action: %s.", json.dumps(counts, sort_keys=True))
        if self.stats_dir is not None:
            self.stats_dir.mkdir(parents=True, exist_ok=True)
            path = self.stats_dir / f"worker-{os.getpid()}.json"
            path.write_text(json.dumps({"sqs_requests": counts}, sort_keys=True))
