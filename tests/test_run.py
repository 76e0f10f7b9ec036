"""`make run` itself: the design card's commands, as written, in a fresh clone after `make install`.

supervisord starts local SQS, the API and the workers; a message goes through; a clean stop keeps
what is queued; a taken port stops everything with one line. Every stack here has ports of its
own (QM_PORT, QM_LOCAL_SQS_PORT, QM_WORKER_METRICS_PORT), so `make test` runs beside `make run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import IN_CI, ROOT, Proc, Receiver
from tests.support import free_port, wait_for

#: How long a stack may take to stop on Ctrl-C (the workers' long polls are 2 s here, see below).
STOP_SECONDS = 60


@dataclasses.dataclass
class Clone:
    """A fresh clone after `make install`, and the environment the README's set-up gives a shell."""

    folder: Path
    env: dict[str, str]
    api_port: int
    sqs_port: int
    started: list[Proc] = dataclasses.field(default_factory=list)

    def start(self, command: list[str], name: str, env: dict[str, str] | None = None) -> Proc:
        """Start `command` as a shell in the clone would (a bare name is found on PATH)."""
        log_path = self.folder / f"{name}-{len(self.started)}.log"
        # Appended to: supervisord opens /dev/stdout again for each program, else they write at offset 0
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=self.folder,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(Proc(process, log_path))
        return self.started[-1]

    def api(self, path: str) -> str:
        return f"http://127.0.0.1:{self.api_port}{path}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.api("/readyz"), timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def post_webhook(self, url: str, body: Any) -> str:
        request = urllib.request.Request(
            self.api("/messages"),
            data=json.dumps({"type": "webhook", "payload": {"url": url, "body": body}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
            return str(json.loads(response.read())["id"])


def _copy_working_tree(destination: Path) -> None:
    """What `git clone` gives, from the working tree (so uncommitted changes are tested too)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)  # mtimes kept: `make install` finds the venvs up to date


@pytest.fixture
def clone() -> Iterator[Clone]:
    """A fresh clone with this checkout's venvs, after `make install`; every process it started killed at the end.

    In a short folder of its own: supervisord's control socket lives in `.state/`, and a Unix socket's
    path may not exceed 107 bytes (pytest's own temporary folders, under xdist, run past it).
    """
    scratch = Path(tempfile.mkdtemp(prefix="qm-run-"))
    folder = scratch / "queue-manager"
    folder.mkdir()
    _copy_working_tree(folder)
    for venv in (".venv", ".venv-sqs"):
        if not (ROOT / venv).exists():
            message = f"{venv} is missing: run `make install`"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        (folder / venv).symlink_to(ROOT / venv)  # what `make install` would build, without 40 s of pip
    plan = subprocess.run(["make", "-n", "install"], cwd=folder, capture_output=True, text=True, check=True).stdout
    if "pip" in plan:  # it would reinstall into this checkout's .venv, pointing it at the clone
        pytest.skip("this checkout's venvs are older than pyproject.toml: run `make install`")
    subprocess.run(["make", "install"], cwd=folder, capture_output=True, check=True)
    # The README's set-up: `source .venv/bin/activate` puts the commands on PATH. The ports are this
    # stack's own, and the workers' long poll is 2 s so that stops take seconds, not 20.
    api_port, sqs_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "QM_", "VIRTUAL_ENV"))}
    env.update(
        PATH=f"{folder / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(folder / ".venv"),
        QM_PORT=str(api_port),
        QM_LOCAL_SQS_PORT=str(sqs_port),
        QM_WORKER_METRICS_PORT=str(free_port()),
        QM_RECEIVE_WAIT_SECONDS="2",
    )
    made = Clone(folder, env, api_port, sqs_port)
    yield made
    for proc in reversed(made.started):
        if proc.process.poll() is None:
            # Ctrl-C first: supervisord puts each program in a process group of its own, so killing
            # its group would leave them running
            proc.signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill_all()
                proc.wait(timeout=10)
    # A stack that did not stop leaves its programs in process groups of their own: whatever still
    # runs from this clone is killed, so no test leaves a server or a worker behind.
    for pid in _pids_running_from(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(scratch, ignore_errors=True)


def _pids_running_from(folder: Path) -> list[int]:
    """The processes whose command line names something inside `folder`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in command:
            pids.append(int(entry.name))
    return pids


def stop(supervisord: Proc) -> str:
    """Ctrl-C, as on the terminal; returns supervisord's output once it has exited 0."""
    supervisord.signal(signal.SIGINT)
    assert supervisord.wait(timeout=STOP_SECONDS) == 0, supervisord.output()[-3000:]
    return supervisord.output()


def test_a_fresh_clone_runs_the_design_commands_as_written_and_a_clean_stop_keeps_queued_messages(
    clone: Clone, receiver: Receiver
) -> None:
    # Given a fresh clone after `make install`, and `supervisord -c supervisord.conf` as written
    supervisord = clone.start(["supervisord", "-c", "supervisord.conf"], "supervisord")
    wait_for(lambda: clone.ready() or supervisord.process.poll() is not None, timeout=60, what="readiness")
    assert supervisord.process.poll() is None, supervisord.output()
    assert "for development only" in supervisord.output()
    # When its worker is stopped with supervisorctl and `dramatiq actors --processes 2 --threads 10`
    # runs by hand, with the README's variables for the local server
    ctl = subprocess.run(
        ["supervisorctl", "-c", "supervisord.conf", "stop", "worker"], cwd=clone.folder, env=clone.env, timeout=60
    )
    assert ctl.returncode == 0
    by_hand_env = {
        "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{clone.sqs_port}",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "QM_WORKER_METRICS_PORT": "0",
    }
    worker = clone.start(["dramatiq", "actors", "--processes", "2", "--threads", "10"], "dramatiq", by_hand_env)
    wait_for(
        lambda: worker.output().count("Worker process is ready") == 2 or worker.process.poll() is not None,
        timeout=30,
        what="the hand-run worker",
    )
    assert worker.process.poll() is None, worker.output()
    # Then it delivers a webhook posted to the API, as the README's curl does
    message_id = clone.post_webhook(receiver.url("/by-hand"), {"hi": 1})
    delivered = wait_for(lambda: receiver.to("/by-hand"), timeout=30, what="the delivery")
    assert delivered[0].headers["Idempotency-Key"] == message_id
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=STOP_SECONDS) == 0, worker.output()[-3000:]

    # Given messages queued while no worker consumes
    queued = {clone.post_webhook(receiver.url("/kept"), {"n": n}) for n in range(5)}
    # (and a 5 MiB one, which goes through the local server's S3: its bucket was made at start)
    large = clone.post_webhook(receiver.url("/kept-large"), {"blob": "x" * 5 * 1024 * 1024})
    # When the stack is stopped with Ctrl-C and started again
    output = stop(supervisord)
    # (its exit 0 says every program stopped; the event listener's "Stopped" lines are best effort:
    # supervisord stops the listener last but does not wait for it to read the last events, and on a
    # busy machine the api's line was once lost behind the worker's)
    assert "Stopped api." in output or "Stopped worker." in output, output[-3000:]
    assert "Traceback" not in output and "CRIT" not in output, output
    assert (clone.folder / ".state" / "sqs").is_dir()  # where the local server saved its queues
    supervisord = clone.start(["supervisord", "-c", "supervisord.conf"], "supervisord")
    # Then its worker delivers every one of them
    delivered = wait_for(lambda: len(receiver.to("/kept")) >= 5, timeout=60, what="the queued messages")
    assert {r.headers["Idempotency-Key"] for r in receiver.to("/kept")} == queued
    delivered = wait_for(lambda: receiver.to("/kept-large"), timeout=60, what="the large message")
    assert delivered[0].headers["Idempotency-Key"] == large
    assert delivered[0].body == {"blob": "x" * 5 * 1024 * 1024}
    stop(supervisord)


class _Recorder(BaseHTTPRequestHandler):
    """Whatever else listens on a port: it records every request it gets."""

    seen: list[str] = []

    def _record(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _record

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_a_taken_local_sqs_port_stops_the_stack_before_anything_reaches_the_other_server(clone: Clone) -> None:
    # Given another HTTP server on the local SQS server's port
    other = ThreadingHTTPServer(("127.0.0.1", clone.sqs_port), _Recorder)
    _Recorder.seen = []
    try:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        # When the stack starts
        supervisord = clone.start(["supervisord", "-c", "supervisord.conf"], "supervisord")
        # Then it stops by itself, with one line naming the port and the setting that moves it
        try:
            assert supervisord.wait(timeout=30) == 0
        except subprocess.TimeoutExpired:
            pytest.fail("supervisord did not stop by itself:\n" + supervisord.output()[-3000:])
    finally:
        other.shutdown()
        other.server_close()
    output = supervisord.output()
    line = f"local SQS: cannot start: port {clone.sqs_port} on 127.0.0.1 is in use; set QM_LOCAL_SQS_PORT"
    assert output.count(line) == 1, output
    assert "Traceback" not in output, output
    # And neither the API nor the workers ever reached the other server
    assert _Recorder.seen == []
    assert "Started api" not in output and "Started worker" not in output, output
    assert output.count("stopping everything.") == 1, output


def test_a_taken_api_port_stops_the_stack_with_one_line(clone: Clone) -> None:
    # Given another process listening on the API's port
    with SocketListening(clone.api_port):
        # When the stack starts
        supervisord = clone.start(["supervisord", "-c", "supervisord.conf"], "supervisord")
        # Then it stops by itself instead of restarting the API forever
        assert supervisord.wait(timeout=STOP_SECONDS) == 0
    output = supervisord.output()
    line = f"qm-api: cannot start: port {clone.api_port} on 127.0.0.1 is in use; set QM_PORT to a free port"
    assert output.count(line) == 1, output
    assert "Traceback" not in output, output
    assert output.count("stopping everything.") == 1, output


class SocketListening:
    """A socket bound and listening on `port` on loopback, as another server's would be."""

    def __init__(self, port: int) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", port))
        self.socket.listen()

    def __enter__(self) -> SocketListening:
        return self

    def __exit__(self, *exc: object) -> None:
        self.socket.close()
