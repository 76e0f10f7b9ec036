"""Autoscaling signals: the workers' own record of what they hold, the reports, and GET /scaling."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from queue_manager import scaling
from queue_manager.reports import DirectoryReports, ProcessReport, QueueReport
from queue_manager.settings import Settings
from queue_manager.sqs.workload import Workload
from tests.conftest import Proc, Receiver
from tests.support import free_port, wait_for

# -- the arithmetic ------------------------------------------------------------------------------


def test_threads_needed_is_the_running_plus_the_backlog_cleared_within_the_target() -> None:
    # 4 running, 30 waiting, a median of 0.5 s and a target of 10 s: each thread clears 20 in time
    assert scaling.threads_needed(running=4, backlog=30, p50_seconds=0.5, target_seconds=10) == 5.5
    # Given 2.5 threads a worker process... (10 threads each): one process
    assert scaling.workers_needed(5.5, 10) == 1
    assert scaling.workers_needed(20.0, 10) == 2
    assert scaling.workers_needed(20.000_000_1, 10) == 2  # float dust is not a third worker


def test_no_backlog_needs_only_the_running_threads_and_no_median() -> None:
    assert scaling.threads_needed(running=0, backlog=0, p50_seconds=None, target_seconds=10) == 0
    assert scaling.workers_needed(0.0, 10) == 0
    assert scaling.threads_needed(running=3, backlog=0, p50_seconds=None, target_seconds=10) == 3


def test_a_backlog_with_no_median_yet_is_unknown_not_guessed() -> None:
    assert scaling.threads_needed(running=1, backlog=5, p50_seconds=None, target_seconds=10) is None
    assert scaling.workers_needed(None, 10) is None
    assert scaling.workers_needed(3.0, None) is None


def test_a_target_shorter_than_the_median_asks_one_thread_per_waiting_message_not_more() -> None:
    assert scaling.threads_needed(running=0, backlog=7, p50_seconds=30, target_seconds=1) == 7


def _report(queues: dict[str, QueueReport], *, threads: int = 10, age: float = 0.0, name: str = "h-1") -> ProcessReport:
    busy = sum(q.running for q in queues.values())
    return ProcessReport(name, time.time() - age, threads, busy, queues)


def test_figures_combine_processes_and_never_count_backing_off_as_work() -> None:
    # Given two processes of 10 threads: 3 + 1 running, 2 held, 40 backing off, medians from both
    a = QueueReport(held=2, running=3, backing_off=25, oldest_wait_seconds=4.0, recent_seconds=(1.0, 1.0, 3.0))
    b = QueueReport(held=0, running=1, backing_off=15, oldest_wait_seconds=None, recent_seconds=(1.0, 2.0))
    reports = [_report({"webhook": a}), _report({"webhook": b}, name="h-2")]
    depth = {"visible": 18, "in_flight": 50, "delayed": 7}
    # When the figures are made with a 5 s target
    answer = scaling.figures([("webhook", "qm_webhook", depth)], reports, target_latency_seconds=5)
    row = answer["types"][0]
    # Then: backlog = 18 visible + 2 held; p50 of 1,1,3,1,2 = 1; threads = 4 + 20 * 1/5 = 8
    assert (row["held"], row["running"], row["backing_off"]) == (2, 4, 40)
    assert row["backlog"] == 20
    assert row["unreported_in_flight"] == 50 - 2 - 4 - 40
    assert row["p50_seconds"] == 1.0 and row["oldest_wait_seconds"] == 4.0
    assert row["threads_needed"] == 8.0 and row["workers_needed"] == 1
    assert answer["total"] == {"threads_needed": 8.0, "workers_needed": 1, "reasons": {}}
    assert answer["workers"] == {"processes": 2, "threads": 20, "busy_threads": 4, "threads_per_process": 10.0}
    # And the 40 backing off ask for nothing: with none of them, the answer is the same
    calmer = [dataclasses.replace(r, queues={"webhook": dataclasses.replace(q, backing_off=0)}) for r, q in
              zip(reports, (a, b), strict=True)]  # fmt: skip
    again = scaling.figures([("webhook", "qm_webhook", depth)], calmer, target_latency_seconds=5)
    assert again["types"][0]["threads_needed"] == 8.0


def test_fifo_messages_blocked_behind_their_group_are_not_backlog() -> None:
    # Given one process running 1 message of a FIFO group and holding 9 more behind it, 2 held ready
    report = _report({"ordered": QueueReport(held=2, running=1, backing_off=0, oldest_wait_seconds=1.0,
                                             recent_seconds=(1.0,), blocked=9)})  # fmt: skip
    depth = {"visible": 0, "in_flight": 12, "delayed": 0}
    # When the figures are made with a 1 s target
    row = scaling.figures([("ordered", "qm_ordered.fifo", depth)], [report], target_latency_seconds=1)["types"][0]
    # Then the 9 wait for their group's turn, not for a thread: another worker would not run them sooner
    assert (row["held"], row["running"], row["blocked"], row["unreported_in_flight"]) == (2, 1, 9, 0)
    assert row["backlog"] == 2
    assert row["threads_needed"] == 3.0


def test_a_report_from_a_worker_that_predates_blocked_reads_none_blocked() -> None:
    text = _report({"log": QueueReport(held=1, running=0, backing_off=0, oldest_wait_seconds=None,
                                       recent_seconds=())}).as_json().replace(', "blocked": 0', "")  # fmt: skip
    assert '"blocked"' not in text
    assert ProcessReport.from_json(text).queues["log"].blocked == 0


def test_figures_without_reports_say_null_and_why() -> None:
    answer = scaling.figures(
        [("log", "qm_log", {"visible": 3, "in_flight": 0, "delayed": 0})], [], target_latency_seconds=30
    )
    row = answer["types"][0]
    assert row["visible"] == 3
    assert row["running"] is None and row["workers_needed"] is None
    assert row["reasons"]["running"] == scaling.NO_REPORTS
    assert answer["total"]["workers_needed"] is None
    assert "'log'" in answer["total"]["reasons"]["workers_needed"]


# -- the record and its store ----------------------------------------------------------------------


def test_the_workload_follows_a_message_from_receipt_to_backoff_and_forgets_a_due_backoff() -> None:
    work = Workload()
    work.received("q", "r1", sent_at=time.time() - 2)
    work.received("q", "r2", sent_at=None)
    assert work.snapshot()["q"].held == 2
    assert work.snapshot()["q"].oldest_wait_seconds == pytest.approx(2, abs=0.5)
    work.started("r1")
    work.finished("r1")
    work.backing_off("r1", 0.05)
    work.started("r2")
    load = work.snapshot()["q"]
    assert (load.held, load.running, load.backing_off) == (0, 1, 1)
    assert len(load.recent_seconds) == 1
    time.sleep(0.1)
    assert work.snapshot()["q"].backing_off == 0  # due: SQS shows it as visible again
    # A FIFO message held behind its group is blocked, not held, until its turn
    work.received("q", "r3", sent_at=None)
    work.blocked("r3")
    assert (work.snapshot()["q"].held, work.snapshot()["q"].blocked) == (0, 1)
    work.blocked("r3", False)
    assert (work.snapshot()["q"].held, work.snapshot()["q"].blocked) == (1, 0)
    work.let_go(["r2"])
    assert work.running() == 0


def test_a_directory_store_ignores_stale_and_broken_reports(tmp_path: Path) -> None:
    store = DirectoryReports(tmp_path)
    store.publish(_report({}, name="fresh"))
    store.publish(_report({}, name="old", age=60))
    (tmp_path / "worker-broken.json").write_text("{")
    assert [r.process for r in store.fresh()] == ["fresh"]
    store.withdraw("fresh")
    assert store.fresh() == []


# -- real processes ------------------------------------------------------------------------------


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    return json.loads(body) if response.headers.get_content_type() == "application/json" else body


def _post(api: str, document: dict[str, Any]) -> None:
    request = urllib.request.Request(
        api + "/messages", data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202


def test_scaling_counts_what_the_workers_run_and_defer_and_sizes_the_fleet(
    settings: Settings,
    tmp_path: Path,
    receiver: Receiver,
    worker_process: Callable[..., Proc],
    api_process: Callable[..., tuple[Proc, str]],
) -> None:
    # Given a worker process of 2 threads that holds nothing beyond them, and an API sharing its
    # QM_STATE_DIR; a webhook receiver that answers /slow after 8 s and /fail with 503, retry in 20 s
    state = tmp_path / "state"
    metrics_port = free_port()
    chosen = dataclasses.replace(settings, state_dir=state, target_latency_seconds=0.5)
    worker_process(
        threads=2,
        test_settings=chosen,
        env={"QM_RECEIVE_LOOKAHEAD": "0", "QM_BUSY_LOOKAHEAD": "0", "QM_WORKER_METRICS_PORT": str(metrics_port)},
    )
    _, api = api_process(env={"QM_STATE_DIR": str(state), "QM_TARGET_LATENCY_SECONDS": "0.5"})
    receiver.delays["/slow"] = 8.0
    receiver.statuses["/fail"] = [503]
    receiver.retry_after["/fail"] = "20"

    def webhook(path: str) -> None:
        _post(api, {"type": "webhook", "payload": {"url": receiver.url(path), "body": {}}})

    def row() -> dict[str, Any]:
        answer = _get(api + "/scaling")
        return next(r for r in answer["types"] if r["type"] == "webhook") | {"answer": answer}

    # When one webhook fails (and backs off for 20 s), two slow ones take both threads, three wait
    webhook("/fail")
    wait_for(lambda: row()["backing_off"] == 1, timeout=10, what="the failed webhook to back off")
    webhook("/slow")
    webhook("/slow")
    wait_for(lambda: len(receiver.to("/slow")) == 2, timeout=10, what="both threads to run a slow webhook")
    for _ in range(3):
        webhook("/slow")
    figures = wait_for(
        lambda: (r := row())["visible"] == 3 and r["running"] == 2 and r,
        timeout=5,
        what="/scaling to show three waiting and two running",
    )
    # Then /scaling counts exactly what the workers hold, and SQS's visible messages
    assert (figures["held"], figures["running"], figures["backing_off"]) == (0, 2, 1)
    assert figures["in_flight"] == 3 and figures["unreported_in_flight"] == 0 and figures["delayed"] == 0
    assert figures["backlog"] == 3
    # And sizes the fleet from the median processing time (the failed attempt's so far) and the target
    p50 = figures["p50_seconds"]
    assert p50 is not None and 0 < p50 < 5
    threads = round(2 + 3 * min(1.0, p50 / 0.5), 6)
    assert figures["threads_needed"] == pytest.approx(threads, abs=1e-6)
    assert figures["workers_needed"] == math.ceil(threads / 2)
    answer = figures["answer"]
    assert answer["workers"] == {"processes": 1, "threads": 2, "busy_threads": 2, "threads_per_process": 2.0}
    assert answer["total"]["workers_needed"] == math.ceil(answer["total"]["threads_needed"] / 2)
    assert answer["total"]["threads_needed"] == pytest.approx(threads, abs=1e-6)  # the other types are idle
    # And the worker's metrics endpoint exports the same as gauges
    text = _get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert 'qm_worker_threads{state="busy"} 2.0' in text
    assert 'qm_worker_threads{state="idle"} 0.0' in text
    assert 'qm_queue_messages{queue="webhook",state="backing_off"} 1.0' in text
    assert 'qm_queue_messages{queue="webhook",state="running"} 2.0' in text


async def test_scaling_says_why_when_no_worker_reports(api_client: Any) -> None:
    # Given an API with no QM_STATE_DIR, so no worker shares it
    # When /scaling is asked
    response = await api_client.get("/scaling")
    assert response.status == 200
    answer = await response.json()
    # Then SQS's counts are there, and every worker figure is null, with the reason
    for row in answer["types"]:
        assert row["visible"] == 0
        assert row["running"] is None and row["workers_needed"] is None
        assert row["reasons"]["running"] == scaling.NO_REPORTS
    assert answer["total"]["workers_needed"] is None
