"""The 50 ms drain's thread-use figures, read from the tasks' marks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.workers import WorkerRun


def _run(tmp_path: Path, spans: list[tuple[float, float, str]], **fields: Any) -> WorkerRun:
    marks = tmp_path / "marks.txt"
    marks.write_text("".join(f"{start:.6f} {end:.6f} {thread}\n" for start, end, thread in spans))
    nothing: Any = None  # no process or proxy: only the marks and times are read
    return WorkerRun("ours", "sleep", 1, 2, len(spans), nothing, tmp_path / "log", nothing, "tag", marks, **fields)


def test_thread_use_while_tasks_run_leaves_out_the_runs_edges(tmp_path: Path) -> None:
    # Given two threads that ran two 50 ms tasks each, 10 ms apart, starting 200 ms after the worker
    # was ready, the queue read empty 300 ms after the last task
    t = 1000.0
    spans = [(t, t + 0.05, "1-a"), (t + 0.06, t + 0.11, "1-a"), (t, t + 0.05, "1-b"), (t + 0.06, t + 0.11, "1-b")]
    run = _run(
        tmp_path,
        spans,
        ready_at=10.0,
        empty_at=10.61,
        ready_wall=t - 0.2,
        empty_wall=t + 0.41,
        remaining_at_ready=4,
    )
    # Then the whole window counts the edges, the steady figure only the 110 ms in which tasks ran
    assert run.utilisation(0.05) == pytest.approx(4 * 0.05 / (2 * 0.61))
    assert run.steady_utilisation(0.05) == pytest.approx(4 * 0.05 / (2 * 0.11))
    assert run.startup_ms() == pytest.approx(200, abs=0.01)
    assert run.finish_ms() == pytest.approx(300, abs=0.01)
    assert run.mean_gap_ms() == pytest.approx(10, abs=0.01)


def test_each_process_counts_its_threads_from_its_own_first_task(tmp_path: Path) -> None:
    # Given two processes of one thread each, the second started 1 s after the first, each running two
    # 50 ms tasks back to back
    t = 1000.0
    spans = [(t, t + 0.05, "1-a"), (t + 0.05, t + 0.1, "1-a"), (t + 1, t + 1.05, "2-a"), (t + 1.05, t + 1.1, "2-a")]
    run = _run(tmp_path, spans)
    run.processes, run.threads = 2, 1
    # Then the threads were busy all the time each process ran
    assert run.steady_utilisation(0.05) == pytest.approx(1.0)


def test_without_marks_there_is_no_steady_figure(tmp_path: Path) -> None:
    run = _run(tmp_path, [])
    assert run.steady_utilisation(0.05) is None
    assert run.startup_ms() is None
    assert run.mean_gap_ms() is None
