"""The test harness itself: where what the suite's processes leave behind goes."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


def test_what_a_started_process_makes_in_the_temp_folder_lands_under_pytests_base_temp(session_temp_dir: Path) -> None:
    # When a process the suite starts makes a folder as the API makes its state folder
    made = subprocess.run(
        [sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp(prefix='qm-api-state-'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    # Then it is in the session's temp folder, which pytest prunes, not in /tmp; so is what tests make
    assert Path(made).parent == session_temp_dir
    assert Path(tempfile.gettempdir()) == session_temp_dir
