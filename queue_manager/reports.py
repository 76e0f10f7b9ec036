"""Worker reports: what each worker process holds, published where the API can read it.

The API cannot see inside the workers, so each worker process publishes a small report every
second (REPORT_INTERVAL_SECONDS): its threads, and per queue the messages it holds, runs and has
deferred, the oldest wait and its recent processing times. A report older than
STALE_AFTER_SECONDS belongs to a process that stopped or hangs, and is ignored.

`ReportStore` is the seam: `DirectoryReports` keeps one JSON file per process in a folder of
QM_STATE_DIR, which serves the processes of one host (the embedded default, `make run`). A fleet
on many hosts needs a shared store (DynamoDB, issue 18's) behind the same three methods.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

#: How often a worker process publishes its report.
REPORT_INTERVAL_SECONDS = 1.0

#: A report older than this is a stopped (or hung) process's, and is ignored.
STALE_AFTER_SECONDS = 5.0

#: The folder of QM_STATE_DIR the reports of one host's worker processes are kept in.
REPORTS_FOLDER = "workers"


@dataclasses.dataclass(frozen=True)
class QueueReport:
    """One queue in one worker process: see `queue_manager.sqs.workload.QueueLoad`."""

    held: int
    running: int
    backing_off: int
    oldest_wait_seconds: float | None
    recent_seconds: tuple[float, ...]
    blocked: int = 0


@dataclasses.dataclass(frozen=True)
class ProcessReport:
    """One worker process's report.

    Parameters:
      process: `<host>-<pid>`, unique among the processes that share a store.
      written_at: When it was written (Unix time, seconds).
      threads: The process's worker threads.
      busy_threads: Those running a message.
      queues: Per Dramatiq queue (the message type).
    """

    process: str
    written_at: float
    threads: int
    busy_threads: int
    queues: dict[str, QueueReport]

    def as_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ProcessReport:
        """Read a report; raises ValueError (or KeyError, TypeError) when it is not one."""
        raw: dict[str, Any] = json.loads(text)
        queues = {
            name: QueueReport(
                held=int(q["held"]),
                running=int(q["running"]),
                backing_off=int(q["backing_off"]),
                oldest_wait_seconds=None if q["oldest_wait_seconds"] is None else float(q["oldest_wait_seconds"]),
                recent_seconds=tuple(float(x) for x in q["recent_seconds"]),
                blocked=int(q.get("blocked", 0)),  # absent from the reports of older workers
            )
            for name, q in raw["queues"].items()
        }
        return cls(
            process=str(raw["process"]),
            written_at=float(raw["written_at"]),
            threads=int(raw["threads"]),
            busy_threads=int(raw["busy_threads"]),
            queues=queues,
        )


def process_name() -> str:
    """This process's name in a store: host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


class ReportStore(Protocol):
    """Where worker processes publish their reports and the API reads them (one host or a fleet)."""

    def publish(self, report: ProcessReport) -> None:
        """Write (or replace) this process's report."""

    def withdraw(self, process: str) -> None:
        """Remove a process's report: it stops."""

    def fresh(self, *, max_age_seconds: float = STALE_AFTER_SECONDS) -> list[ProcessReport]:
        """Every report written within `max_age_seconds`."""


class DirectoryReports:
    """One JSON file per worker process in a folder shared by the processes of one host.

    A file is replaced whole (written aside, then renamed), so a reader never sees half of one.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, process: str) -> Path:
        return self.directory / f"worker-{process}.json"

    def publish(self, report: ProcessReport) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(report.process)
        aside = path.with_suffix(".tmp")
        aside.write_text(report.as_json())
        os.replace(aside, path)

    def withdraw(self, process: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(process).unlink()

    def fresh(self, *, max_age_seconds: float = STALE_AFTER_SECONDS) -> list[ProcessReport]:
        now = time.time()
        reports = []
        for path in sorted(self.directory.glob("worker-*.json")):
            try:
                report = ProcessReport.from_json(path.read_text())
            except FileNotFoundError:  # withdrawn meanwhile
                continue
            except (ValueError, KeyError, TypeError) as exc:
                logger.warning("Ignoring the worker report %s: %s.", path, exc)
                continue
            if now - report.written_at <= max_age_seconds:
                reports.append(report)
        return reports
