"""`make run` itself: supervisord starts local SQS, the API and the workers; a message goes through."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import IN_CI, ROOT, Receiver, wait_for

#: The fixed addresses `make run` serves on.
API_PORT, SQS_PORT = 8000, 9324


def port_busy(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def healthy() -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{API_PORT}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_supervisord_runs_the_whole_pipeline_and_stops_cleanly(tmp_path: Path, receiver: Receiver) -> None:
    # Given the shipped supervisord.conf in a fresh folder (fresh queue state), nothing on its ports
    for port in (API_PORT, SQS_PORT):
        if port_busy(port):
            message = f"port {port} is in use; `make run` needs it"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    for venv in (".venv", ".venv-sqs"):
        if not (ROOT / venv).exists():
            pytest.fail(f"{venv} is missing: run `make install`")
        (tmp_path / venv).symlink_to(ROOT / venv)
    shutil.copy(ROOT / "supervisord.conf", tmp_path / "supervisord.conf")
    (tmp_path / ".state" / "sqs").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QM_"))}
    log_path = tmp_path / "supervisord.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "supervisord"), "-c", str(tmp_path / "supervisord.conf")],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # When it is ready and a webhook is posted to the API, as the README's curl does
        wait_for(lambda: healthy() or process.poll() is not None, timeout=60, interval=0.2, what="readiness")
        assert process.poll() is None, log_path.read_text()
        request = urllib.request.Request(
            f"http://127.0.0.1:{API_PORT}/messages",
            data=json.dumps({"type": "webhook", "payload": {"url": receiver.url("/run"), "body": {"hi": 1}}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            message_id = json.loads(response.read())["id"]
        # Then a worker delivers it
        delivered = wait_for(lambda: receiver.to("/run"), timeout=30, what="the delivery")
        assert delivered[0].headers["Idempotency-Key"] == message_id
        assert delivered[0].body == {"hi": 1}
        # And Ctrl-C stops all three cleanly
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
        output = log_path.read_text()
        for program in ("worker", "api", "sqs"):
            assert f"stopped: {program} (exit status 0)" in output, output[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
