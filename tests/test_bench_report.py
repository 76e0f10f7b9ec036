"""The bench's verdicts: a missed target fails the run (`make bench` exits non-zero)."""

from __future__ import annotations

import operator
from typing import Any

import pytest

import bench.__main__ as bench_main
from bench.report import Report, Row, Target


def _report(ours: float) -> Report:
    report = Report({"rtts": [15.0]})
    target = Target("≥ 4x", operator.ge, 4.0, against_stock=True)
    row = Row("API", "accepted msg/s", lambda rtt, impl: ours if impl == "ours" else 100.0, target)
    report.rows = lambda: [row]  # type: ignore[method-assign]
    return report


def test_missed_names_each_figure_whose_target_the_run_missed() -> None:
    assert _report(ours=300.0).missed() == ["accepted msg/s (≥ 4x at 15 ms)"]
    assert _report(ours=500.0).missed() == []


@pytest.mark.parametrize(("ours", "status"), [(300.0, 1), (500.0, 0)])
def test_the_bench_exits_non_zero_when_a_target_is_missed(
    ours: float, status: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a run whose report misses (or meets) its one target
    class FakeRun:
        def __init__(self, config: dict[str, Any], workdir: Any) -> None:
            pass

        def run(self, only_set: Any) -> Report:
            return _report(ours)

    monkeypatch.setattr(bench_main, "Run", FakeRun)
    monkeypatch.setattr(bench_main, "scratch_dir", lambda: tmp_path / "work")
    monkeypatch.setattr(bench_main.signal, "signal", lambda *args: None)  # keep pytest's own SIGTERM handler
    # When the bench's entry point runs
    result = bench_main.main(["--json", str(tmp_path / "bench.json")])
    # Then its exit status says so, and stderr names the figure
    assert result == status
    assert ("MISSED: accepted msg/s" in capsys.readouterr().err) is (status == 1)


def _idle_run(**fields: Any) -> Any:
    from collections import Counter

    from bench.workers import WorkerRun

    run = WorkerRun("ours", "idle", 1, 10, 0, process=None, log_path=None, proxy=None, tag="idle")  # type: ignore[arg-type]
    run.ready_at, run.exited_at = 100.0, 130.5
    run.requests = Counter({"ReceiveMessage": 5})  # two queues polled at ~0 and ~20 s, and one at the stop
    for name, value in fields.items():
        setattr(run, name, value)
    return run


def test_idle_receives_per_hour_are_counted_over_one_long_poll_after_start_up() -> None:
    # Given an idle worker on two queues whose window held one 20 s poll of each
    report = Report({"rtts": [15.0], "idle_queues": 2})
    report.idle[(15.0, "ours")] = _idle_run(window_receives=2, window_seconds=20.0)
    # Then its rate is one poll per queue per 20 s, not the whole life's two and a half polls in 30 s
    assert report.idle_rate(15.0, "ours") == pytest.approx(180.0)
    # and a run without a window (an older report) is still counted over its whole life
    report.idle[(15.0, "stock")] = _idle_run()
    assert report.idle_rate(15.0, "stock") == pytest.approx(5 / 2 / 30.5 * 3600)
