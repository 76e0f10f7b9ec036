"""Plumbing shared by the benchmarks: the local SQS server, subprocesses, CPU accounting, queues."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import dramatiq
from botocore.config import Config
from prometheus_client.parser import text_string_to_metric_families

from queue_manager import local_sqs_wake

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MINISTACK = ROOT / ".venv-sqs" / "bin" / "ministack"

#: Credentials and region the local server accepts; nothing here ever reaches AWS.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(interval)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class Processes:
    """Every subprocess the bench starts, each in its own session; `kill_all` ends what is left."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []

    def start(
        self, command: list[str], *, env: dict[str, str], log_name: str, cwd: Path | None = None
    ) -> tuple[subprocess.Popen[bytes], Path]:
        log_path = self.workdir / f"{log_name}-{len(self.started)}.log"
        log = log_path.open("wb")
        self._logs.append(log)
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd or ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.started.append(process)
        return process, log_path

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        """SIGTERM the process, SIGKILL its whole session if it is still there after `timeout`."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)

    def kill_all(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                process.wait(timeout=5)
        for log in self._logs:
            with contextlib.suppress(Exception):
                log.close()


@contextlib.contextmanager
def ministack(processes: Processes, *, services: str = "sqs") -> Iterator[tuple[str, int]]:
    """The embedded SQS server (SQS, or `services`) on a free loopback port, started as `make run`
    starts it (`python -m queue_manager.local_sqs`, so long polls answer as soon as a message is sent),
    its state kept in memory only; yields its URL and pid (local_sqs becomes the server: same pid),
    then stops it."""
    if not MINISTACK.exists():
        raise SystemExit(f"{MINISTACK} is missing: run `make install`.")
    port = free_port()
    command = [sys.executable, "-m", "queue_manager.local_sqs", "--port", str(port), "--services", services]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    server_dir = processes.workdir / "ministack"
    server_dir.mkdir(exist_ok=True)
    process, log = processes.start([*command, str(MINISTACK)], env=env, log_name="ministack", cwd=server_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(url) or process.poll() is not None, timeout=60, what=f"ministack at {url}")
        if process.poll() is not None:
            raise SystemExit(f"ministack exited at start:\n{log.read_text(errors='replace')[-2000:]}")
        if local_sqs_wake.UNPATCHED in log.read_text(errors="replace"):
            print(
                f"bench: the SQS server runs unpatched: {local_sqs_wake.UNPATCHED} (see its log, {log}); "
                "receive latencies include that step, which SQS does not have.",
                file=sys.stderr,
                flush=True,
            )
        yield url, process.pid
    finally:
        Processes.stop(process, timeout=10)


class DelayProxy:
    """A running `bench.proxy` in front of the SQS server: its endpoint for a tag, and its counts."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, rtt_ms: float) -> None:
        self.process = process
        self.port = port
        self.rtt_ms = rtt_ms

    @property
    def pid(self) -> int:
        return self.process.pid

    def endpoint(self, tag: str) -> str:
        """The endpoint URL that counts a client's requests under `tag`."""
        return f"http://127.0.0.1:{self.port}/t/{tag}"

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return json.loads(response.read())

    def counts(self, tag: str) -> Counter[str]:
        """Requests so far under `tag`, by action."""
        return Counter(self._get("/_proxy/counts").get(tag, {}))

    def all_counts(self) -> dict[str, Counter[str]]:
        return {tag: Counter(c) for tag, c in self._get("/_proxy/counts").items()}

    def stats(self) -> dict[str, Any]:
        return dict(self._get("/_proxy/stats"))


@contextlib.contextmanager
def delay_proxy(processes: Processes, upstream: str, rtt_ms: float) -> Iterator[DelayProxy]:
    """A `bench.proxy` on a free loopback port delaying every SQS call by `rtt_ms`; stopped afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "bench.proxy", "--upstream", upstream, "--port", str(port)]
    command += ["--sqs-rtt-ms", f"{rtt_ms:g}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process, log = processes.start(command, env=env, log_name=f"proxy-{rtt_ms:g}ms")
    try:
        wait_for(
            lambda: "READY" in log.read_text(errors="replace") or process.poll() is not None,
            timeout=30,
            what=f"the {rtt_ms:g} ms proxy",
        )
        if process.poll() is not None:
            raise SystemExit(f"the proxy exited at start:\n{log.read_text(errors='replace')[-2000:]}")
        yield DelayProxy(process, port, rtt_ms)
    finally:
        Processes.stop(process, timeout=5)


def diff(after: Counter[str], before: Counter[str]) -> Counter[str]:
    """Requests by action between two count readings."""
    return Counter({k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)})


def sqs_client(endpoint: str, *, pool: int = 16) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=pool, retries={"mode": "standard", "max_attempts": 3}),
    )


#: Settings (`QM_*=value`) given to every process of ours under test (`--ours-env`): e.g. to weigh one setting.
OURS_ENV: dict[str, str] = {}


def child_env(endpoint: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QM_", "AWS_", "BENCH_", "dramatiq_"))}
    env.update(AWS_ENV)
    env.update(
        AWS_ENDPOINT_URL_SQS=endpoint,
        AWS_ENDPOINT_URL=endpoint,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra or {})
    return env


# -- CPU accounting ----------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, utime+stime in ticks) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is state (field 3); ppid is field 4, utime 14, stime 15.
    return int(fields[1]), int(fields[11]) + int(fields[12])


def tree_pids(root: int) -> list[int]:
    """`root` and every process descended from it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        info = _stat(int(entry))
        if info is not None:
            parents.setdefault(info[0], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by `root` and its live descendants."""
    total = 0
    for pid in tree_pids(root):
        info = _stat(pid)
        if info is not None:
            total += info[1]
    return total / CLOCK_TICKS


def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine, all cores, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total - idle, total


def host_busy_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Share of all cores' time spent busy between two host_cpu_ticks() readings."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else float("nan")


# -- queues -----------------------------------------------------------------------------------


def queue_count(client: Any, url: str) -> int:
    """Visible + in flight + delayed: zero once every message is processed and deleted."""
    attrs = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def encoded_body(queue_name: str, actor_name: str, args: tuple[Any, ...] = ()) -> str:
    """The SQS body both brokers expect: base64 of Dramatiq's JSON encoding."""
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options={}
    )
    return base64.b64encode(message.encode()).decode()


def log_payload(ident: str) -> dict[str, Any]:
    """A `log` message's payload (valid against schemas/log.json) carrying the bench's id for the marks."""
    from bench.actors import MARK_FIELD

    return {"message": "bench", "fields": {MARK_FIELD: ident}}


def preload(client: Any, url: str, queue_name: str, actor_name: str, count: int) -> None:
    """Put `count` messages on the queue with SendMessageBatch, four batches at a time.

    `log` messages carry a payload (numbered "p<n>" for the marks); the bench actors take no arguments.
    """

    def send(start: int) -> None:
        entries = [
            {
                "Id": str(i),
                "MessageBody": encoded_body(
                    queue_name, actor_name, (log_payload(f"p{start + i}"),) if queue_name == "log" else ()
                ),
            }
            for i in range(min(10, count - start))
        ]
        response = client.send_message_batch(QueueUrl=url, Entries=entries)
        if response.get("Failed"):
            raise RuntimeError(f"SendMessageBatch failed: {response['Failed'][:1]}")

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(send, range(0, count, 10)))


def delete_queues(client: Any, prefix: str) -> int:
    deleted = 0
    with contextlib.suppress(Exception):
        for url in client.list_queues(QueueNamePrefix=prefix, MaxResults=1000).get("QueueUrls", []):
            with contextlib.suppress(Exception):
                client.delete_queue(QueueUrl=url)
                deleted += 1
    return deleted


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="qm-bench-"))


def metric_sums(url: str, *names: str) -> tuple[float, ...]:
    """For each of `names`, the sum of its samples (all labels), from one read of the Prometheus page at `url`."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return tuple(sum(s.value for s in samples if s.name == name) for name in names)
