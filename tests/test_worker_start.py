"""A worker process that cannot work yet: an invalid setting stops it in one line; a queue SQS
cannot set up (no credentials, the server down) is said once and waited for quietly."""

from __future__ import annotations

from collections.abc import Callable

from queue_manager.settings import Settings
from tests.conftest import VENV_BIN, Proc, settings_env


def test_an_invalid_setting_stops_the_worker_with_one_line_and_status_2(
    spawn: Callable[..., Proc], settings: Settings
) -> None:
    # Given a worker of two processes whose QM_MAX_RETRIES is out of range
    command = [str(VENV_BIN / "dramatiq"), "actors", "--processes", "2", "--threads", "1"]
    proc = spawn(command, env={**settings_env(settings), "QM_MAX_RETRIES": "-1"}, name="worker")
    # When it starts
    status = proc.wait(timeout=30)
    # Then it says why in one line, as the API does, with no traceback, and exits with status 2
    output = proc.output()
    assert status == 2, output
    said = [line for line in output.splitlines() if "cannot start" in line]
    assert said == ["dramatiq: cannot start: QM_MAX_RETRIES must be between 0 and 999, got -1."], output
    assert "Traceback" not in output
