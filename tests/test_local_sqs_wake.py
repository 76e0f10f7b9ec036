"""The embedded SQS server answers a waiting long poll as soon as a message is sent (queue_manager/local_sqs_wake.py).

ministack on its own looks at a waiting receive every 100 ms. The real-process tests start the
server as `make run` does (`python -m queue_manager.local_sqs`); the others patch a stand-in module
shaped like ministack's, and check the names the patch reads are still in the pinned ministack.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.common import sqs_client
from queue_manager import local_sqs, local_sqs_wake
from tests.conftest import IN_CI, ROOT
from tests.support import free_port, wait_for

MINISTACK = ROOT / ".venv-sqs" / "bin" / "ministack"
MINISTACK_PYTHON = ROOT / ".venv-sqs" / "bin" / "python"


def needs_ministack() -> None:
    if not MINISTACK.exists():
        message = f"{MINISTACK} is missing: run `make install`."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def start_local_server(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Start the embedded server as `make run` does (no state folder: nothing saved); its URL and log."""
    needs_ministack()
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None = None) -> tuple[str, Path]:
        port = free_port()
        log_path = tmp_path / f"local-sqs-{len(started)}.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("QM_")} | (env or {})
        command = [sys.executable, "-m", "queue_manager.local_sqs", "--port", str(port), "--services", "sqs"]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, str(MINISTACK)],
                env=full_env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        client = sqs_client(url)

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the server exited: {log_path.read_text(errors='replace')}")
            try:
                client.list_queues()
            except Exception:  # not listening yet
                return False
            return True

        wait_for(answers, timeout=60, what=f"the local SQS server at {url}")
        return url, log_path

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.mark.alone  # times long polls: load beside it stretches them
def test_a_waiting_long_poll_returns_a_message_as_soon_as_it_is_sent(
    start_local_server: Callable[..., tuple[str, Path]],
) -> None:
    # Given the embedded server started as `make run` does, a queue, and another queue beside it
    url, log_path = start_local_server()
    receiver, sender = sqs_client(url), sqs_client(url)
    name = f"wake-{uuid.uuid4().hex[:8]}"
    queue = receiver.create_queue(QueueName=name)["QueueUrl"]
    other = receiver.create_queue(QueueName=name + "-other")["QueueUrl"]
    sender.get_queue_url(QueueName=name)  # the sender's connection is open before timing

    # When, five times, a long poll (1 s) waits on the queue; 0.1 s in a message goes to the other
    # queue, and 0.25 s in (half-way between two of ministack's own 100 ms looks) one to this queue
    lags_ms: list[float] = []
    for trial in range(5):
        sent_at: list[float] = []

        def send(trial: int = trial, sent_at: list[float] = sent_at) -> None:
            time.sleep(0.1)
            sender.send_message(QueueUrl=other, MessageBody=f"other-{trial}")
            time.sleep(0.15)
            sender.send_message(QueueUrl=queue, MessageBody=f"m{trial}")
            sent_at.append(time.monotonic())

        thread = threading.Thread(target=send)
        thread.start()
        got = receiver.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", [])
        returned = time.monotonic()
        thread.join(timeout=10)
        # Then each poll returns this queue's message (the other queue's send did not end it empty)
        assert [m["Body"] for m in got] == [f"m{trial}"], got
        receiver.delete_message(QueueUrl=queue, ReceiptHandle=got[0]["ReceiptHandle"])
        lags_ms.append((returned - sent_at[0]) * 1000)

    # And about when the send returned: ministack's own looks would take 50 ms on median here
    assert statistics.median(lags_ms) < 25, f"poll returned {[round(lag) for lag in lags_ms]} ms after the send"
    assert local_sqs_wake.UNPATCHED not in log_path.read_text(errors="replace")


#: Loaded at the start of ministack's interpreter: gives its sqs module an `asyncio` that is not the
#: module (as if an upgrade had changed how it imports it), the server otherwise unchanged.
RENAMED_ASYNCIO = """
import asyncio, types
import ministack.services.sqs as sqs
sqs.asyncio = types.SimpleNamespace(**vars(asyncio))
"""


def test_a_server_the_wake_cannot_patch_says_so_once_and_still_answers_long_polls(
    start_local_server: Callable[..., tuple[str, Path]], tmp_path: Path
) -> None:
    # Given a ministack whose sqs module no longer has what the wake patches
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(RENAMED_ASYNCIO)
    # When the embedded server starts as `make run` starts it
    url, log_path = start_local_server({"PYTHONPATH": str(site)})
    # Then it says once that long polls answer on ministack's own looks
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if "local SQS: " in line]
    assert len(lines) == 1 and "asyncio" in lines[0] and lines[0].endswith(local_sqs_wake.UNPATCHED), lines
    # And a long poll begun before a send still returns the message
    client = sqs_client(url)
    queue = client.create_queue(QueueName=f"fallback-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    timer = threading.Timer(0.2, sqs_client(url).send_message, kwargs={"QueueUrl": queue, "MessageBody": "late"})
    timer.start()
    got = client.receive_message(QueueUrl=queue, WaitTimeSeconds=5).get("Messages", [])
    timer.join(timeout=10)
    assert [m["Body"] for m in got] == ["late"]


def test_the_pinned_ministack_still_has_what_the_wake_patches() -> None:
    # The patch finds ministack's sqs module, its `esm_wake` event and its receive's `asyncio.sleep`
    # by name; if an upgrade renames them, the server falls back to its own 100 ms looks (slower,
    # still correct), says so in one line, and this test says why.
    needs_ministack()
    check = textwrap.dedent(
        """
        import importlib, importlib.util, sys
        spec = importlib.util.spec_from_file_location("local_sqs_wake", sys.argv[1])
        wake = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(wake)
        print(wake.missing(importlib.import_module(wake.SQS_MODULE)), wake.install())
        """
    )
    done = subprocess.run(
        [str(MINISTACK_PYTHON), "-c", check, local_sqs.WAKE_MODULE],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "True"], done.stdout + done.stderr


#: A stand-in for ministack's sqs module: the same names, with a receive that looks every 5 s.
FAKE_SQS = """
import asyncio
import threading

esm_wake = threading.Event()
queue = []


def _act_send_message(body):
    queue.append(body)
    esm_wake.set()


async def _act_receive_message(wait):
    deadline = asyncio.get_running_loop().time() + wait
    while not queue and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(min(5.0, deadline - asyncio.get_running_loop().time()))
    return list(queue)
"""


def fake_sqs(source: str = FAKE_SQS) -> types.ModuleType:
    module = types.ModuleType("fake_sqs")
    exec(source, module.__dict__)
    return module


async def timed_receive(module: types.ModuleType, send_from_thread: bool) -> tuple[list[str], float]:
    """A receive waiting up to 10 s, and a send 0.05 s in (from another thread, or the loop's)."""
    loop = asyncio.get_running_loop()
    if send_from_thread:
        timer = threading.Timer(0.05, module._act_send_message, args=("hello",))
        timer.start()
    else:
        loop.call_later(0.05, module._act_send_message, "hello")
    started = time.monotonic()
    got = await module._act_receive_message(10.0)
    return got, time.monotonic() - started


@pytest.mark.parametrize("send_from_thread", [False, True])
def test_a_send_ends_a_patched_receive_s_sleep_from_the_loop_or_another_thread(send_from_thread: bool) -> None:
    # Given the stand-in module, patched
    module = fake_sqs()
    event = module.esm_wake
    assert local_sqs_wake.patch(module) is True
    # When a send comes while a receive sleeps its 5 s look
    got, took = asyncio.run(timed_receive(module, send_from_thread))
    # Then the receive returns the message long before its look, and the event itself is set too
    # (ministack's Lambda poller waits on it)
    assert got == ["hello"] and took < 2.5, (got, took)
    assert event.is_set() and module.esm_wake.is_set()
    # And sleeps with nothing to end them still last their time
    started = time.monotonic()
    asyncio.run(module.asyncio.sleep(0.2))
    assert time.monotonic() - started >= 0.19


@pytest.mark.parametrize(
    ("old", "new", "gap"),
    [
        ("esm_wake = threading.Event()", "esm_wake_v2 = threading.Event()", "esm_wake"),
        ("await asyncio.sleep(", "await asyncio.wait_for(asyncio.Event().wait(), ", "asyncio.sleep"),
        ("async def _act_receive_message(", "async def _receive_message(", "_act_receive_message"),
    ],
)
def test_without_the_names_the_server_is_left_as_it_is_and_says_so_once(
    old: str, new: str, gap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a ministack whose sqs module renamed one of what the patch relies on
    module = fake_sqs(FAKE_SQS.replace(old, new))
    before = dict(module.__dict__)
    # When the bootstrap patches it
    patched = local_sqs_wake.patch(module)
    # Then nothing changes, and one line says why
    assert patched is False
    assert module.__dict__ == before and module.asyncio is asyncio
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and gap in lines[0] and lines[0].endswith(local_sqs_wake.UNPATCHED), lines


def test_without_ministack_install_changes_nothing_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # Given this interpreter, which has no ministack (the bootstrap runs in ministack's own)
    # When the bootstrap installs the patch
    installed = local_sqs_wake.install()
    # Then nothing happens but one line
    assert installed is False
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and local_sqs_wake.SQS_MODULE in lines[0], lines
