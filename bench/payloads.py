"""Large messages through S3: a 5 MiB message end to end, 1 MiB throughput, peak memory, and what small ones pay.

SQS and S3 calls both go through the delaying proxy (`AWS_ENDPOINT_URL_S3` points at it too, path-style),
so each costs the round trip. Our API (`qm-api`) and a worker of the shipped broker with a marking
`log` actor (`bench.worker_payloads`, 1 process, 10 threads) run as subprocesses.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from subprocess import Popen
from typing import Any

import boto3

from bench.api_load import percentile
from bench.common import (
    AWS_ENV,
    ROOT,
    DelayProxy,
    Processes,
    answers,
    child_env,
    free_port,
    tree_cpu_seconds,
    tree_pids,
    wait_for,
)
from bench.latency import read_marks

MIB = 1024 * 1024

#: Clients of the memory run, each posting one 5 MiB message at once.
MEMORY_CLIENTS = 64


@dataclasses.dataclass
class PayloadFigures:
    """What one run measured, at one round-trip time."""

    rtt_ms: float
    large_latencies_ms: list[float]
    #: The baseline: a small message, POST -> actor finished, on the same stack.
    small_latencies_ms: list[float]
    mib_messages: int
    mib_seconds: float
    api_baseline_mib: float
    api_peak_mib: float
    worker_baseline_mib: float
    worker_peak_mib: float
    memory_accepted: int
    small_messages: int
    small_cpu_ms_off: float
    small_cpu_ms_on: float
    error: str | None = None

    @property
    def mib_rate(self) -> float:
        return self.mib_messages / self.mib_seconds if self.mib_seconds > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        answer = dataclasses.asdict(self)
        answer["large_p50_ms"] = percentile(self.large_latencies_ms, 50)
        answer["large_p99_ms"] = percentile(self.large_latencies_ms, 99)
        answer["small_p50_ms"] = percentile(self.small_latencies_ms, 50)
        answer["mib_per_second"] = self.mib_rate
        return answer

    def lines(self) -> list[str]:
        over = MEMORY_CLIENTS * 5
        return [
            f"large messages at {self.rtt_ms:g} ms per SQS and S3 call:",
            f"  5 MiB POST -> actor finished: p50 {percentile(self.large_latencies_ms, 50):,.0f} ms, "
            f"p99 {percentile(self.large_latencies_ms, 99):,.0f} ms "
            f"({len(self.large_latencies_ms)} messages, one at a time; a small one's p50: "
            f"{percentile(self.small_latencies_ms, 50):,.0f} ms)",
            f"  1 MiB messages: {self.mib_rate:,.1f}/s end to end ({self.mib_messages} by 8 clients)",
            f"  API peak RSS, {MEMORY_CLIENTS} clients x 5 MiB at once: {self.api_peak_mib:,.0f} MiB "
            f"(+{self.api_peak_mib - self.api_baseline_mib:,.0f} over its {self.api_baseline_mib:,.0f} MiB at rest; "
            f"the bodies alone are {over} MiB; {self.memory_accepted} accepted)",
            f"  worker peak RSS, 10 threads on them: {self.worker_peak_mib:,.0f} MiB "
            f"(+{self.worker_peak_mib - self.worker_baseline_mib:,.0f} over {self.worker_baseline_mib:,.0f} MiB)",
            f"  small messages, API + worker CPU per message: {self.small_cpu_ms_on:.2f} ms with S3 on, "
            f"{self.small_cpu_ms_off:.2f} ms off (ratio {self.small_cpu_ms_on / self.small_cpu_ms_off:.2f}, "
            f"{self.small_messages} each)",
        ]


def _rss_mib(pids: list[int], field: str) -> float:
    """The sum of a /proc/<pid>/status memory field (VmRSS, VmHWM) over processes, in MiB."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _post(url: str, document: Any, timeout: float = 60.0) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def _message(ident: str, blob_bytes: int) -> dict[str, Any]:
    fields: dict[str, Any] = {"bench_id": ident}
    if blob_bytes:
        fields["blob"] = "x" * blob_bytes
    return {"type": "log", "payload": {"message": "m", "fields": fields}}


class _Stack:
    """One API and one worker (1 process, 10 threads) of ours, on a queue prefix of their own."""

    def __init__(self, procs: Processes, proxy: DelayProxy, workdir: Path, *, bucket: str | None, name: str) -> None:
        self.prefix = f"bp{uuid.uuid4().hex[:8]}"
        self.marks = workdir / f"marks-payloads-{name}.txt"
        self.port = free_port()
        extra = {
            "QM_QUEUE_PREFIX": self.prefix,
            "QM_PORT": str(self.port),
            "QM_WORKER_METRICS_PORT": "0",
            "QM_PAYLOAD_BUCKET": bucket or "",
            "AWS_ENDPOINT_URL_S3": proxy.endpoint(f"s3-{name}"),
            "BENCH_MARKS": str(self.marks),
        }
        self.env = child_env(proxy.endpoint(f"sqs-{name}"), extra)
        self.procs = procs
        self.name = name
        self.api: Popen[bytes] | None = None
        self.worker: Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/messages"

    def start_api(self) -> None:
        self.api, log = self.procs.start(
            [str(ROOT / ".venv" / "bin" / "qm-api")], env=self.env, log_name=f"api-payloads-{self.name}"
        )
        wait_for(lambda: answers(self.url) or self.api.poll() is not None, timeout=60, what="the API")  # type: ignore[union-attr]
        if self.api.poll() is not None:
            raise RuntimeError(f"The API did not start:\n{log.read_text(errors='replace')[-3000:]}")

    def start_worker(self) -> None:
        command = [str(ROOT / ".venv" / "bin" / "dramatiq"), "bench.worker_payloads", "--processes", "1"]
        command += ["--threads", "10"]
        self.worker, log = self.procs.start(command, env=self.env, log_name=f"worker-payloads-{self.name}")
        wait_for(
            lambda: "Worker process is ready" in log.read_text(errors="replace") or self.worker.poll() is not None,  # type: ignore[union-attr]
            timeout=60,
            what="the worker",
        )
        if self.worker.poll() is not None:
            raise RuntimeError(f"The worker did not start:\n{log.read_text(errors='replace')[-3000:]}")

    def finished(self, idents: set[str], timeout: float) -> dict[str, tuple[float, str]]:
        marks: dict[str, tuple[float, str]] = {}

        def seen() -> bool:
            marks.update(read_marks(self.marks))
            return idents <= set(marks)

        wait_for(seen, timeout=timeout, interval=0.01, what=f"{len(idents)} messages finished")
        return marks

    def stop(self) -> None:
        for process in (self.worker, self.api):
            if process is not None:
                Processes.stop(process, timeout=15)


def _clients(url: str, documents: list[dict[str, Any]], clients: int) -> list[int]:
    """POST every document, `clients` at a time; the statuses, in order."""
    statuses = [0] * len(documents)
    cursor = iter(range(len(documents)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            statuses[index] = _post(url, documents[index])

    threads = [threading.Thread(target=work) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def run(procs: Processes, server_url: str, proxy: DelayProxy, workdir: Path, *, quick: bool) -> PayloadFigures:
    """Every figure of the large-message bench at the proxy's round-trip time."""
    s3 = boto3.client(
        "s3",
        endpoint_url=server_url,
        region_name=AWS_ENV["AWS_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
    bucket = f"bench-payloads-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    large_count, mib_count, small_count = (5, 16, 300) if quick else (20, 60, 1000)
    stacks: list[_Stack] = []
    try:
        # 5 MiB end to end, one at a time; then 1 MiB messages by 8 clients.
        on = _Stack(procs, proxy, workdir, bucket=bucket, name="on")
        stacks.append(on)
        on.start_api()
        on.start_worker()
        latencies: dict[int, list[float]] = {0: [], 5 * MIB: []}
        for size in latencies:
            for i in range(large_count):
                ident = f"one-{size}-{i}"
                sent = time.time()
                status = _post(on.url, _message(ident, size))
                if status != 202:
                    raise RuntimeError(f"a POST of {size} bytes was answered {status}")
                latencies[size].append((on.finished({ident}, timeout=60)[ident][0] - sent) * 1000)
        documents = [_message(f"mib-{i}", MIB) for i in range(mib_count)]
        started = time.time()
        statuses = _clients(on.url, documents, 8)
        mib_accepted = {f"mib-{i}" for i, status in enumerate(statuses) if status == 202}
        marks = on.finished(mib_accepted, timeout=120)
        mib_seconds = max(marks[i][0] for i in mib_accepted) - started
        on.stop()

        # Peak memory: a fresh API takes 64 clients posting 5 MiB at once, then a fresh worker drains them.
        memory = _Stack(procs, proxy, workdir, bucket=bucket, name="memory")
        stacks.append(memory)
        memory.start_api()
        assert memory.api is not None
        api_baseline = _rss_mib(tree_pids(memory.api.pid), "VmRSS")
        documents = [_message(f"mem-{i}", 5 * MIB) for i in range(MEMORY_CLIENTS)]
        statuses = _clients(memory.url, documents, MEMORY_CLIENTS)
        api_peak = _rss_mib(tree_pids(memory.api.pid), "VmHWM")
        accepted = {f"mem-{i}" for i, status in enumerate(statuses) if status == 202}
        memory.start_worker()
        assert memory.worker is not None
        worker_pids = tree_pids(memory.worker.pid)
        worker_baseline = _rss_mib(worker_pids, "VmRSS")
        memory.finished(accepted, timeout=180)
        worker_peak = _rss_mib(tree_pids(memory.worker.pid), "VmHWM")
        memory.stop()

        # Small messages: CPU per message of the API and the worker, S3 off, then on.
        cpu: dict[str, float] = {}
        for name, with_bucket in (("small-off", None), ("small-on", bucket)):
            stack = _Stack(procs, proxy, workdir, bucket=with_bucket, name=name)
            stacks.append(stack)
            stack.start_api()
            stack.start_worker()
            assert stack.api is not None and stack.worker is not None
            _clients(stack.url, [_message(f"warm-{i}", 0) for i in range(20)], 4)
            stack.finished({f"warm-{i}" for i in range(20)}, timeout=60)
            before = tree_cpu_seconds(stack.api.pid) + tree_cpu_seconds(stack.worker.pid)
            statuses = _clients(stack.url, [_message(f"small-{i}", 0) for i in range(small_count)], 8)
            stack.finished({f"small-{i}" for i, status in enumerate(statuses) if status == 202}, timeout=120)
            after = tree_cpu_seconds(stack.api.pid) + tree_cpu_seconds(stack.worker.pid)
            cpu[name] = (after - before) / small_count * 1000
            stack.stop()
        return PayloadFigures(
            rtt_ms=proxy.rtt_ms,
            large_latencies_ms=latencies[5 * MIB],
            small_latencies_ms=latencies[0],
            mib_messages=len(mib_accepted),
            mib_seconds=mib_seconds,
            api_baseline_mib=api_baseline,
            api_peak_mib=api_peak,
            worker_baseline_mib=worker_baseline,
            worker_peak_mib=worker_peak,
            memory_accepted=len(accepted),
            small_messages=small_count,
            small_cpu_ms_off=cpu["small-off"],
            small_cpu_ms_on=cpu["small-on"],
        )
    finally:
        for stack in stacks:
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.payloads [--quick] [--sqs-rtt-ms N]`: the large-message figures alone."""
    import argparse

    from bench.common import delay_proxy, ministack, scratch_dir

    parser = argparse.ArgumentParser(prog="python -m bench.payloads", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sqs-rtt-ms", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = scratch_dir()
    procs = Processes(workdir)
    try:
        with ministack(procs, services="sqs,s3") as (url, _), delay_proxy(procs, url, args.sqs_rtt_ms) as proxy:
            figures = run(procs, url, proxy, workdir, quick=args.quick)
    finally:
        procs.kill_all()
    print("\n".join(figures.lines()))
    if args.json:
        args.json.write_text(json.dumps(figures.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
