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
