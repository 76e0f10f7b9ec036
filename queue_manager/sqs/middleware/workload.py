"""Workload reports: what a worker process runs and holds, as gauges and as a report for /scaling.

The consumer records what the process receives, defers and lets go (`Workload`); this middleware
records when a worker thread starts and finishes a message, and once a second exports the
process's figures as the gauges `qm_worker_threads{state}` and `qm_queue_messages{queue,state}`
(when worker metrics are on) and publishes them to a ReportStore (when one is given).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Protocol, runtime_checkable

import dramatiq
from dramatiq.logging import get_logger

from queue_manager.reports import REPORT_INTERVAL_SECONDS, ProcessReport, QueueReport, ReportStore, process_name
from queue_manager.sqs.workload import Workload

#: The states `qm_queue_messages` counts, as this process knows them.
GAUGE_STATES = ("held", "running", "backing_off", "blocked")


@runtime_checkable
class HasWorkload(Protocol):
    """A broker that records what its process holds (as QMBroker does)."""

    workload: Workload


class WorkloadReports(dramatiq.Middleware):
    """Marks messages running on a worker thread, and publishes the process's workload every interval.

    Parameters:
      store: Where the process's report goes for /scaling; None publishes none.
      gauges: Whether to export the gauges (they need worker metrics on: PROMETHEUS_MULTIPROC_DIR).
      interval_seconds: How often the report and the gauges are refreshed.
    """

    def __init__(
        self,
        *,
        store: ReportStore | None = None,
        gauges: bool = True,
        interval_seconds: float = REPORT_INTERVAL_SECONDS,
    ) -> None:
        self.logger: logging.Logger = get_logger(__name__, type(self))  # type: ignore[no-untyped-call]
        self.store = store
        self.gauges = gauges
        self.interval_seconds = interval_seconds
        self.workload: Workload | None = None
        self.process = process_name()
        self._threads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gauges: dict[str, Any] = {}

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        if not isinstance(broker, HasWorkload):
            return
        self.workload = broker.workload
        self._threads = int(worker.worker_threads)
        if self.gauges and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import Gauge

            self._gauges["threads"] = Gauge(
                "qm_worker_threads", "Worker threads, busy or idle.", ["state"], multiprocess_mode="livesum"
            )
            self._gauges["messages"] = Gauge(
                "qm_queue_messages",
                "Messages workers hold: received and not started (held), running, hidden for a retry's backoff.",
                ["queue", "state"],
                multiprocess_mode="livesum",
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="qm-workload", daemon=True)
        self._thread.start()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        receipt = getattr(message, "sqs_receipt_handle", None)
        if self.workload is not None and receipt is not None:
            self.workload.started(receipt)

    def after_process_message(
        self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *, result: Any = None,
        exception: BaseException | None = None,
    ) -> None:  # fmt: skip
        receipt = getattr(message, "sqs_receipt_handle", None)
        if self.workload is not None and receipt is not None:
            self.workload.finished(receipt)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        receipt = getattr(message, "sqs_receipt_handle", None)
        if self.workload is not None and receipt is not None:
            self.workload.finished(receipt, measured=False)

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_seconds + 1)
        if self.store is not None:
            try:
                self.store.withdraw(self.process)
            except OSError as exc:
                self.logger.warning("Could not withdraw the workload report: %s.", exc)
        if self._gauges:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        warned = False
        while not self._stop.wait(self.interval_seconds):
            try:
                self.publish()
                warned = False
            except Exception as exc:  # a full disk must not stop the worker; say it once per outage
                if not warned:
                    self.logger.warning("Could not publish the workload report (%s); trying again.", exc)
                    warned = True

    def report(self) -> ProcessReport:
        """This process's figures now."""
        assert self.workload is not None
        loads = self.workload.snapshot()
        busy = sum(load.running for load in loads.values())
        queues = {
            name: QueueReport(
                held=load.held,
                running=load.running,
                backing_off=load.backing_off,
                blocked=load.blocked,
                oldest_wait_seconds=load.oldest_wait_seconds,
                recent_seconds=tuple(round(s, 6) for s in load.recent_seconds),
            )
            for name, load in loads.items()
        }
        return ProcessReport(self.process, time.time(), self._threads, busy, queues)

    def publish(self) -> None:
        """Refresh the gauges and publish the report."""
        report = self.report()
        if self._gauges:
            self._gauges["threads"].labels("busy").set(report.busy_threads)
            self._gauges["threads"].labels("idle").set(max(report.threads - report.busy_threads, 0))
            for name, queue in report.queues.items():
                for state in GAUGE_STATES:
                    self._gauges["messages"].labels(name, state).set(getattr(queue, state))
        if self.store is not None:
            self.store.publish(report)
