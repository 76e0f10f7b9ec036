"""A ladder of fixtures: a real SQS server on a free loopback port → settings with queues unique
to each test → brokers, in-process workers, worker processes, the API, and a webhook receiver.
Plain helpers (waits, queue reads, posts) live in tests/support.py.

The server is chosen by QM_TEST_SQS (ministack, the default, or moto).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import dramatiq
import pytest

from broker import build_broker
from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.wait import endpoint_answers as _answers
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SQS_KIND = os.environ.get("QM_TEST_SQS", "ministack")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

#: Credentials and region the local servers accept.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}


#: How long a callback or task step may hold a test's event loop before asyncio's debug mode logs it
#: (its default is 0.1 s). The API's start-up builds its broker's boto3 clients on the loop, which
#: takes 0.1-0.15 s here and more on a busy machine; a step past this limit is worth a look.
SLOW_CALLBACK_SECONDS = 0.25


def _test_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    return loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], Any]]:
    """Every async test and fixture runs on a loop with the slow-callback limit above."""
    return {"asyncio": _test_loop}


#: Fixtures that start processes or workers: a test using one takes seconds where most take milliseconds.
PROCESS_FIXTURES = frozenset({"spawn", "clone", "worker"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that start processes or workers first, the rest after (each group in file order).

    Under pytest-xdist the quick tests then fill in at the end beside the last slow one, instead of
    one test process idling while the other runs a slow test it drew last.
    """
    items.sort(key=lambda item: not PROCESS_FIXTURES.intersection(getattr(item, "fixturenames", ())))


@dataclasses.dataclass
class SQSServer:
    """A local SQS-compatible server in a subprocess, which tests may pause to simulate an outage."""

    kind: str
    url: str
    process: subprocess.Popen[bytes]

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def _server_command(kind: str, port: int) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ}
    if kind == "ministack":
        binary = ROOT / ".venv-sqs" / "bin" / "ministack"
        if not binary.exists():
            message = f"{binary} is missing: run `make install`."
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
        env.update(
            GATEWAY_PORT=str(port),
            BIND_HOST="127.0.0.1",
            SERVICES="sqs,s3,dynamodb",
            LOG_LEVEL="WARNING",
            PERSIST_STATE="0",
        )
        return [str(binary)], env
    if kind == "moto":
        return [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], env
    raise pytest.UsageError(f"QM_TEST_SQS must be ministack or moto, not {kind!r}.")


@pytest.fixture(scope="session", autouse=True)
def session_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The temp folder of everything the session starts: one under pytest's base temp, which pytest prunes
    to the last three runs. A process a test kills cannot remove what it made there (an API's state
    folder, a worker fleet's metrics folder), and thousands of those piled up in /tmp."""
    path = tmp_path_factory.mktemp("tmp")
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(path)
    tempfile.tempdir = None  # tempfile caches the folder it found first
    yield path
    if old is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


@pytest.fixture(scope="session")
def sqs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQSServer]:
    port = free_port()
    command, env = _server_command(SQS_KIND, port)
    log = (tmp_path_factory.mktemp("sqs") / "server.log").open("wb")
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path_factory.getbasetemp()
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=30, what=f"{SQS_KIND} at {url}")
        yield SQSServer(SQS_KIND, url, process)
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def sqs_env(sqs_server: SQSServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The AWS variables that point a process at the test server (also set in this process)."""
    env = {
        **AWS_ENV,
        "AWS_ENDPOINT_URL_SQS": sqs_server.url,
        "AWS_ENDPOINT_URL_S3": sqs_server.url,
        "AWS_ENDPOINT_URL_DYNAMODB": sqs_server.url,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def sqs(sqs_env: dict[str, str]) -> Any:
    """A plain boto3 SQS client on the test server."""
    return boto3.client("sqs", endpoint_url=sqs_env["AWS_ENDPOINT_URL_SQS"], region_name="us-east-1")


@pytest.fixture
def settings(sqs_env: dict[str, str], sqs: Any) -> Iterator[Settings]:
    """Settings with a queue prefix of this test's own; its queues are deleted afterwards."""
    prefix = "t" + uuid.uuid4().hex[:12]
    yield Settings(
        endpoint_url=sqs_env["AWS_ENDPOINT_URL_SQS"],
        queue_prefix=prefix,
        max_retries=2,
        min_backoff_ms=100,
        max_backoff_ms=500,
        visibility_timeout_seconds=5,
        time_limit_ms=60_000,
        ack_flush_interval_ms=100,
        receive_wait_seconds=2,
        webhook_timeout_seconds=2,
        sqs_timeout_seconds=2,
        worker_metrics_port=0,  # tests that want worker metrics pick a free port
    )
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        # A test that broke the server must not also fail the teardown.
        with contextlib.suppress(Exception):
            sqs.delete_queue(QueueUrl=url)


def settings_env(settings: Settings) -> dict[str, str]:
    """The QM_ variables that reproduce `settings` in another process."""
    env: dict[str, str] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.metadata["env"] or value is None:  # AWS_ variables (endpoints, region) are not QM_ ones
            continue
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env["QM_" + field.name.upper()] = str(value)
    return env


@pytest.fixture
def broker(settings: Settings) -> Iterator[Callable[..., QMBroker]]:
    """Build brokers as `broker.py` does, from this test's settings with `overrides`; closed at teardown.

    Every broker a test builds shares the test's queue prefix (unless it overrides it), so two of
    them are two workers' views of the same queues.
    """
    made: list[QMBroker] = []

    def build(**overrides: Any) -> QMBroker:
        made.append(build_broker(dataclasses.replace(settings, **overrides)))
        return made[-1]

    yield build
    for built in made:
        built.close()


class InProcessWorker(dramatiq.Worker):
    """A Dramatiq worker whose `stop` may be called again: the fixture stops what a test left running."""

    stopped = False

    def stop(self, timeout: int = 30_000) -> None:
        if not self.stopped:
            self.stopped = True
            super().stop(timeout=timeout)


@pytest.fixture
def worker(broker: Callable[..., QMBroker]) -> Iterator[Callable[..., InProcessWorker]]:
    """Start in-process Dramatiq workers (short worker_timeout); stopped at teardown, before their brokers."""
    started: list[InProcessWorker] = []

    def start(on: QMBroker, *, threads: int = 4, prefetch: int = 0) -> InProcessWorker:
        running = InProcessWorker(on, worker_threads=threads, worker_timeout=100)
        if prefetch:
            running.queue_prefetch = prefetch
        running.start()
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop()


@dataclasses.dataclass
class Proc:
    """A subprocess started by a test, with its output in a file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def kill_all(self) -> None:
        """SIGKILL the process and every child it started (a crash of the whole worker)."""
        os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)


@pytest.fixture
def spawn(tmp_path: Path, sqs_env: dict[str, str]) -> Iterator[Callable[..., Proc]]:
    """Start processes with the test server's environment; kill what is left at teardown."""
    started: list[Proc] = []

    def start(command: list[str], *, env: dict[str, str] | None = None, name: str = "proc") -> Proc:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        full_env = {**os.environ, **sqs_env, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                command, env=full_env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = Proc(process, log_path)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.process.poll() is None:
            os.killpg(proc.process.pid, signal.SIGKILL)
            proc.process.wait(timeout=10)


@pytest.fixture
def worker_process(spawn: Callable[..., Proc], settings: Settings) -> Callable[..., Proc]:
    """Start `dramatiq actors` as users do, on this test's queues; wait until it is ready."""

    def start(
        *,
        processes: int = 1,
        threads: int = 4,
        env: dict[str, str] | None = None,
        extra: list[str] | None = None,
        test_settings: Settings | None = None,
    ) -> Proc:
        chosen = test_settings or settings
        command = [str(VENV_BIN / "dramatiq"), "actors", "--processes", str(processes), "--threads", str(threads)]
        proc = spawn(command + (extra or []), env={**settings_env(chosen), **(env or {})}, name="worker")
        wait_for(
            lambda: proc.output().count("Worker process is ready") >= processes or proc.process.poll() is not None,
            timeout=30,
            what="the worker to start",
        )
        assert proc.process.poll() is None, proc.output()
        return proc

    return start


def _healthy(url: str) -> bool:
    """True when qm-api itself answers `/healthz` at `url` (not another server that took the port)."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return bool(response.status == 200 and json.loads(response.read()) == {"status": "ok"})
    except (OSError, ValueError):
        return False


@pytest.fixture
def api_process(spawn: Callable[..., Proc], settings: Settings) -> Callable[..., tuple[Proc, str]]:
    """Start `qm-api` on a free port; returns the process and its base URL once it answers."""

    def start(*, env: dict[str, str] | None = None) -> tuple[Proc, str]:
        # A free port may be taken by another program before qm-api binds it (other test processes
        # and servers on the machine pick ports too): qm-api then exits saying so, and starts again
        # on another port. Until then whatever took the port may answer, so only qm-api's own
        # /healthz answer counts as started.
        for _ in range(3):
            port = free_port()
            proc = spawn(
                [str(VENV_BIN / "qm-api")],
                env={**settings_env(settings), "QM_PORT": str(port), **(env or {})},
                name="api",
            )
            url = f"http://127.0.0.1:{port}"
            wait_for(
                lambda url=url, proc=proc: _healthy(url) or proc.process.poll() is not None,  # type: ignore[misc]
                timeout=30,
                what="the API",
            )
            if proc.process.poll() is None or f"port {port} on 127.0.0.1 is in use" not in proc.output():
                break
        assert proc.process.poll() is None, proc.output()
        return proc, url

    return start


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    at: float = dataclasses.field(default_factory=time.monotonic)


class Receiver:
    """A local HTTP server standing in for webhook destinations; answers by path."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: dict[str, list[int]] = {}
        self.delays: dict[str, float] = {}
        self.retry_after: dict[str, str] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with receiver.lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                    plan = receiver.statuses.get(self.path, [200])
                    status = plan.pop(0) if len(plan) > 1 else plan[0]
                delay = receiver.delays.get(self.path, 0.0)
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                if self.path in receiver.retry_after:
                    self.send_header("Retry-After", receiver.retry_after[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def to(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
async def api_client(aiohttp_client: Any, settings: Settings) -> Any:
    """A test client on `create_app(settings)`, the same factory `qm-api` runs."""
    from api.app import create_app

    return await aiohttp_client(create_app(settings))
