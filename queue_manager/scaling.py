"""The autoscaling figures: SQS's counts and the workers' reports made into the workers a queue needs.

Definitions (the README's "Scaling and deploying" says the same):

- **backlog**: messages waiting for a worker thread: visible on SQS, plus those a worker received
  and has not started (`held`). Delayed messages are not due yet, and messages backing off (a
  retry in place hidden for its backoff) are not work for anyone until it ends: neither counts.
  Nor do FIFO messages a worker holds behind the running message of their group (`blocked`):
  only their group's turn frees them, and another worker would not.
- **threads needed**: `running + backlog * min(1, p50 ÷ target)`. A thread finishes target ÷ p50
  messages within the target latency, so clearing the backlog in time takes backlog ÷ (target ÷
  p50) threads (AWS's backlog-per-instance rule, per thread), never more than one per message;
  the threads busy now are the arrival rate's share (Little's law), kept so a fleet that keeps up
  is not told it needs none.
- **workers needed**: ⌈threads needed ÷ threads per worker process⌉, where threads per worker
  process is the reporting processes' threads ÷ their number (`--threads`, 10 in `make run`).

A figure the reports cannot give is None, with the reason beside it, never a guess.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from queue_manager.reports import STALE_AFTER_SECONDS, ProcessReport

#: Why a figure is None.
NO_REPORTS = (
    f"no worker process has reported in the last {STALE_AFTER_SECONDS:g} s: none runs, or none shares "
    "this API's QM_STATE_DIR (a fleet on several hosts needs a shared report store)"
)
NO_P50 = "no processing time measured yet: the workers have not finished a message of this type recently"
NO_WAIT = (
    "no message of this type waits in a worker or started in the last seconds; the age of messages still on SQS "
    "is CloudWatch's ApproximateAgeOfOldestMessage"
)
UNKNOWN_TYPES = "unknown for {types}"

#: Threads needed are rounded to this many places before ⌈⌉, so 2.0000000001 threads is 2.
_PLACES = 6


def threads_needed(*, running: int, backlog: int, p50_seconds: float | None, target_seconds: float) -> float | None:
    """Threads a queue needs: those running now plus those that clear the backlog within the target.

    None when there is a backlog and no processing time to judge it by.
    """
    if backlog <= 0:
        return float(running)
    if p50_seconds is None:
        return None
    per_message = min(1.0, p50_seconds / target_seconds)
    return round(running + backlog * per_message, _PLACES)


def workers_needed(threads: float | None, threads_per_worker: float | None) -> int | None:
    """Worker processes that give `threads`: ⌈threads ÷ threads per worker⌉ (None if either is unknown)."""
    if threads is None or not threads_per_worker:
        return None
    return math.ceil(round(threads / threads_per_worker, _PLACES))


def figures(
    types: Iterable[tuple[str, str, Mapping[str, int]]],
    reports: list[ProcessReport],
    *,
    target_latency_seconds: float,
) -> dict[str, Any]:
    """The /scaling answer.

    Parameters:
      types: Each message type with its SQS queue name and depth (`visible`, `in_flight`, `delayed`).
      reports: The fresh worker reports.
      target_latency_seconds: How long a message may wait for a thread (QM_TARGET_LATENCY_SECONDS).
    """
    processes = len(reports)
    threads = sum(r.threads for r in reports)
    per_worker = threads / processes if processes else None
    rows = []
    total_threads: float | None = 0.0
    unknown: list[str] = []
    for message_type, queue, depth in types:
        row = _row(message_type, queue, depth, reports, target_latency_seconds)
        row["workers_needed"] = workers_needed(row["threads_needed"], per_worker)
        if row["workers_needed"] is None and "workers_needed" not in row["reasons"]:
            row["reasons"]["workers_needed"] = row["reasons"].get("threads_needed", NO_REPORTS)
        if row["threads_needed"] is None:
            unknown.append(message_type)
        elif total_threads is not None:
            total_threads += row["threads_needed"]
        rows.append(row)
    total: dict[str, Any] = {
        "threads_needed": None if unknown else round(total_threads or 0.0, _PLACES),
        "workers_needed": None if unknown else workers_needed(total_threads, per_worker),
        "reasons": {},
    }
    if unknown:
        total["reasons"]["workers_needed"] = UNKNOWN_TYPES.format(types=", ".join(repr(t) for t in unknown))
    elif total["workers_needed"] is None:
        total["reasons"]["workers_needed"] = NO_REPORTS
    return {
        "target_latency_seconds": target_latency_seconds,
        "workers": {
            "processes": processes,
            "threads": threads,
            "busy_threads": sum(r.busy_threads for r in reports),
            "threads_per_process": per_worker,
        },
        "types": rows,
        "total": total,
    }


def _row(
    message_type: str, queue: str, depth: Mapping[str, int], reports: list[ProcessReport], target: float
) -> dict[str, Any]:
    visible, in_flight, delayed = depth["visible"], depth["in_flight"], depth["delayed"]
    mine = [r.queues[message_type] for r in reports if message_type in r.queues]
    reasons: dict[str, str] = {}
    row: dict[str, Any] = {"type": message_type, "queue": queue, "visible": visible, "delayed": delayed}
    row["in_flight"] = in_flight
    if not reports:
        for name in ("held", "running", "backing_off", "blocked", "unreported_in_flight", "backlog", "threads_needed"):
            row[name] = None
            reasons[name] = NO_REPORTS
        row["oldest_wait_seconds"] = row["p50_seconds"] = None
        reasons["oldest_wait_seconds"] = reasons["p50_seconds"] = NO_REPORTS
        row["reasons"] = reasons
        return row
    held = sum(q.held for q in mine)
    running = sum(q.running for q in mine)
    backing_off = sum(q.backing_off for q in mine)
    blocked = sum(q.blocked for q in mine)
    waits = [q.oldest_wait_seconds for q in mine if q.oldest_wait_seconds is not None]
    samples = [s for q in mine for s in q.recent_seconds]
    p50 = round(statistics.median(samples), _PLACES) if samples else None
    backlog = visible + held
    row.update(
        held=held,
        running=running,
        backing_off=backing_off,
        blocked=blocked,
        # SQS's approximate count may lag the workers' by a moment: never below zero.
        unreported_in_flight=max(in_flight - held - running - backing_off - blocked, 0),
        backlog=backlog,
        oldest_wait_seconds=max(waits) if waits else None,
        p50_seconds=p50,
        threads_needed=threads_needed(running=running, backlog=backlog, p50_seconds=p50, target_seconds=target),
    )
    if not waits:
        reasons["oldest_wait_seconds"] = NO_WAIT
    if p50 is None:
        reasons["p50_seconds"] = NO_P50
    if row["threads_needed"] is None:
        reasons["threads_needed"] = NO_P50
    row["reasons"] = reasons
    return row
