"""Worker benchmarks: real `dramatiq` CLI processes draining a preloaded queue, and idling."""

from __future__ import annotations

import dataclasses
import itertools
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import (
    OURS_ENV,
    VENV_BIN,
    DelayProxy,
    Processes,
    child_env,
    free_port,
    host_busy_percent,
    host_cpu_ticks,
    preload,
    queue_count,
    tree_cpu_seconds,
    wait_for,
)

READY_LINE = "Worker process is ready for action."

#: An idle worker's CPU is counted from this long after it is ready: its first receives (the
#: queues looked up, botocore's first calls) are start-up, not idling.
IDLE_SETTLE_SECONDS = 5.0

#: An idle worker's receives are counted over this long after start-up: one long poll (ours waits
#: SQS's longest, 20 s, when idle), so the window holds exactly one poll of each queue. A window that
#: is not a multiple of the poll counts one poll too many or too few per queue, depending on where
#: it ends (30 s counted two polls a queue: 240 an hour, for a steady 180).
IDLE_WINDOW_SECONDS = 20.0

#: Implementations: the dramatiq module of the bench actors (controlled tasks on queues of their own).
MODULES = {"ours": "bench.worker_ours", "stock": "bench.worker_stock"}

#: Actor names by queue (the same in both modules); `log` is the queue the APIs send to.
ACTORS = {"noop": "bench_noop", "sleep": "bench_sleep", "log": "log"}

#: Every shipped message type's queue: what `dramatiq actors` consumes, and what stock is given to consume.
SHIPPED_QUEUES = ("log", "webhook", "ordered")

#: The shipped worker's command line, as supervisord.conf runs it (`make run`), after the module list.
SHIPPED_OPTIONS = ("--worker-shutdown-timeout", "60000")


@dataclasses.dataclass(frozen=True)
class Shape:
    """What a `dramatiq` master runs: the shipped worker, the shipped one with `log` marking its starts,
    or a bench actor on `busy` beside the shipped `webhook` and `ordered` queues (three queues either way)."""

    kind: str  # "shipped", "marked" or "bench"
    busy: str = "log"

    def command(self, impl: str) -> list[str]:
        """The modules and options after `dramatiq` (before --processes/--threads)."""
        if impl == "ours" and self.kind == "shipped":
            return ["actors", *SHIPPED_OPTIONS]  # every declared queue: log, webhook, ordered
        if impl == "ours" and self.kind == "marked":
            return ["actors", "bench.marks", *SHIPPED_OPTIONS]
        # The bench modules (and stock's) declare more queues than they run: name the three consumed.
        return [MODULES[impl], *SHIPPED_OPTIONS, "--queues", self.busy, *SHIPPED_QUEUES[1:]]

    def describe(self) -> str:
        if self.kind == "shipped":
            return "shipped worker"
        if self.kind == "marked":
            return "shipped worker, log marks its starts"
        return f"bench actor on {self.busy} + webhook, ordered"


SHIPPED = Shape("shipped")
MARKED = Shape("marked")


@dataclasses.dataclass
class WorkerRun:
    """One `dramatiq` master process and what was measured while it ran."""

    impl: str
    scenario: str
    processes: int
    threads: int
    messages: int
    process: subprocess.Popen[bytes]
    log_path: Path
    proxy: DelayProxy
    tag: str
    marks_path: Path | None = None
    ready_at: float = 0.0
    #: The same moments on the wall clock (`time.time()`), to set beside the marks.
    ready_wall: float = 0.0
    empty_wall: float = 0.0
    remaining_at_ready: int = 0
    empty_at: float = 0.0
    cpu_at_ready: float = 0.0
    cpu_at_empty: float = 0.0
    #: Idle runs: when the start-up is over (IDLE_SETTLE_SECONDS after ready) and the CPU used by then.
    settled_at: float = 0.0
    cpu_at_settled: float = 0.0
    #: ReceiveMessage calls in the idle window (`IDLE_WINDOW_SECONDS` from `settled_at`), and its length.
    window_receives: int = 0
    window_seconds: float = 0.0
    server_cpu_at_ready: float = 0.0
    server_cpu_at_empty: float = 0.0
    host_busy_percent: float = float("nan")
    trace: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    term_at: float = 0.0
    exited_at: float = 0.0
    exit_code: int | None = None
    #: SQS requests by action over the workers' whole life, as the proxy counted them.
    requests: Counter[str] = dataclasses.field(default_factory=Counter)
    error: str | None = None

    # -- derived figures --

    @property
    def drain_seconds(self) -> float:
        return self.empty_at - self.ready_at

    @property
    def rate(self) -> float:
        return self.remaining_at_ready / self.drain_seconds if self.drain_seconds > 0 else 0.0

    @property
    def cpu_ms_per_message(self) -> float:
        done = self.remaining_at_ready
        return (self.cpu_at_empty - self.cpu_at_ready) * 1000 / done if done else 0.0

    @property
    def server_cpu_ms_per_message(self) -> float:
        done = self.remaining_at_ready
        return (self.server_cpu_at_empty - self.server_cpu_at_ready) * 1000 / done if done else 0.0

    @property
    def shutdown_seconds(self) -> float:
        return self.exited_at - self.term_at if self.exited_at else float("nan")

    def requests_per_message(self) -> dict[str, float]:
        return {action: n / self.messages for action, n in self.requests.items()}

    def utilisation(self, task_seconds: float) -> float:
        """Busy thread-time over available thread-time, ready → queue empty (all acked)."""
        if self.drain_seconds <= 0:
            return 0.0
        return self.remaining_at_ready * task_seconds / (self.threads * self.processes * self.drain_seconds)

    def _spans(self) -> list[tuple[float, float, str]]:
        if self.marks_path is None or not self.marks_path.exists():
            return []
        spans = []
        for line in self.marks_path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                spans.append((float(parts[0]), float(parts[1]), parts[2]))
        return spans

    def task_window(self) -> tuple[float, float] | None:
        """When the first task started and the last one ended (`time.time()`), from the marks."""
        spans = self._spans()
        if not spans:
            return None
        return min(s for s, _, _ in spans), max(e for _, e, _ in spans)

    def steady_utilisation(self, task_seconds: float) -> float | None:
        """`utilisation` over the window in which tasks ran (each process's first task start -> last task end).

        The same count (tasks x their nominal time), without the run's fixed edges: the start-up
        before the first task (the queue's set-up, the first receive) and, after the last task, its
        acknowledgement's wait to join a batch and the bench's polling of the queue depth. Those do
        not grow with the run and are not time a thread waits for a message that is there.
        """
        by_process: dict[str, list[tuple[float, float]]] = {}
        for start, end, thread in self._spans():
            by_process.setdefault(thread.split("-")[0], []).append((start, end))
        # Each process's own window: the processes of one master start up to a few hundred ms apart on
        # a busy host, and a process not started yet has no thread to use.
        available = sum(
            self.threads * (max(e for _, e in spans) - min(s for s, _ in spans)) for spans in by_process.values()
        )
        tasks = sum(len(spans) for spans in by_process.values())
        return tasks * task_seconds / available if available > 0 else None

    def startup_ms(self) -> float | None:
        """Ready (every process said so) -> the first task's start; below 0 when the first process to be
        ready started a task before the last said it was ready."""
        window = self.task_window()
        return (window[0] - self.ready_wall) * 1000 if window is not None and self.ready_wall else None

    def finish_ms(self) -> float | None:
        """The last task's end -> the queue reads empty (its delete flushed, and seen by the bench's poll)."""
        window = self.task_window()
        return (self.empty_wall - window[1]) * 1000 if window is not None and self.empty_wall else None

    def mean_gap_ms(self) -> float | None:
        """The mean idle time of a thread between the end of one task and the start of its next."""
        gaps = self.thread_gaps_ms()
        return sum(gaps) / len(gaps) if gaps else None

    def task_window_utilisation(self) -> float | None:
        """Busy thread-time over available thread-time, first task start -> last task end."""
        spans = self._spans()
        if not spans:
            return None
        window = max(e for _, e, _ in spans) - min(s for s, _, _ in spans)
        busy = sum(e - s for s, e, _ in spans)
        return busy / (self.threads * self.processes * window) if window > 0 else None

    def thread_gaps_ms(self) -> list[float]:
        """Per worker thread, the idle time between the end of one task and the start of its next."""
        by_thread: dict[str, list[tuple[float, float]]] = {}
        for start, end, thread in self._spans():
            by_thread.setdefault(thread, []).append((start, end))
        gaps: list[float] = []
        for spans in by_thread.values():
            spans.sort()
            gaps.extend((b[0] - a[1]) * 1000 for a, b in itertools.pairwise(spans))
        return gaps

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Reaper:
    """Waits for SIGTERMed masters in the background (ours may sit in a 20 s long poll)."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []

    def watch(self, run: WorkerRun, timeout: float) -> None:
        def wait() -> None:
            try:
                run.exit_code = run.process.wait(timeout=timeout)
                run.exited_at = time.monotonic()
            except subprocess.TimeoutExpired:
                run.error = (run.error or "") + f" did not exit within {timeout:.0f} s of SIGTERM;"
                Processes.stop(run.process, timeout=0)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join()


def start_worker(
    procs: Processes,
    proxy: DelayProxy,
    impl: str,
    prefix: str,
    *,
    scenario: str,
    processes: int,
    threads: int,
    messages: int,
    workdir: Path,
    shape: Shape | None = None,
    queues: list[str] | None = None,
    marks: bool = False,
    name: str = "",
    env: dict[str, str] | None = None,
) -> WorkerRun:
    """Start `dramatiq` for `impl`, its SQS calls through `proxy` under a tag of its own.

    `shape` says what runs (see Shape); without it, the bench actors module on `queues` (the idle run).
    """
    tag = f"worker-{scenario}{name}-{prefix}"
    marks_path = workdir / f"marks-{scenario}{name}-{prefix}.txt" if marks else None
    extra = {"BENCH_NAMESPACE": prefix}
    if impl == "ours":
        extra.update(OURS_ENV)
        # A port of its own: 9191 may be taken by another run, and two masters cannot share one.
        extra.update(QM_QUEUE_PREFIX=prefix, QM_WORKER_METRICS_PORT=str(free_port()))
    extra.update(env or {})
    if marks_path is not None:
        extra["BENCH_MARKS"] = str(marks_path)
    modules = shape.command(impl) if shape is not None else [MODULES[impl], "--queues", *(queues or [])]
    command = [str(VENV_BIN / "dramatiq"), *modules, "--processes", str(processes), "--threads", str(threads)]
    process, log_path = procs.start(command, env=child_env(proxy.endpoint(tag), extra), log_name=tag)
    return WorkerRun(impl, scenario, processes, threads, messages, process, log_path, proxy, tag, marks_path)


def wait_ready(run: WorkerRun, timeout: float = 60.0) -> None:
    wait_for(
        lambda: run.output().count(READY_LINE) >= run.processes or run.process.poll() is not None,
        timeout=timeout,
        interval=0.01,
        what=f"{run.impl} workers to start",
    )
    if run.process.poll() is not None:
        raise RuntimeError(f"{run.impl} worker exited at start:\n{run.output()[-3000:]}")


def drain(
    procs: Processes,
    reaper: Reaper,
    client: Any,
    proxy: DelayProxy,
    impl: str,
    prefix: str,
    queue_url: str,
    *,
    scenario: str,
    queue: str,
    messages: int,
    processes: int,
    threads: int,
    workdir: Path,
    timeout: float,
    server_pid: int,
    shape: Shape,
    marks: bool = False,
) -> WorkerRun:
    """Preload `messages` on `queue`, start the workers, time ready → queue empty, then SIGTERM."""
    preload(client, queue_url, queue, ACTORS[queue], messages)
    wait_for(lambda: queue_count(client, queue_url) >= messages, timeout=30, what="the preload to show")
    run = start_worker(
        procs,
        proxy,
        impl,
        prefix,
        scenario=scenario,
        shape=shape,
        processes=processes,
        threads=threads,
        messages=messages,
        workdir=workdir,
        marks=marks,
    )
    try:
        wait_ready(run)
        run.ready_at, run.ready_wall = time.monotonic(), time.time()
        run.cpu_at_ready = tree_cpu_seconds(run.process.pid)
        run.server_cpu_at_ready = tree_cpu_seconds(server_pid)
        host_at_ready = host_cpu_ticks()
        run.remaining_at_ready = queue_count(client, queue_url)
        deadline = run.ready_at + timeout
        while True:
            left = queue_count(client, queue_url)
            now = time.monotonic()
            run.trace.append((round(now - run.ready_at, 3), left))
            if left == 0:
                run.empty_at, run.empty_wall = now, time.time()
                run.cpu_at_empty = tree_cpu_seconds(run.process.pid)
                run.server_cpu_at_empty = tree_cpu_seconds(server_pid)
                run.host_busy_percent = host_busy_percent(host_at_ready, host_cpu_ticks())
                break
            if run.process.poll() is not None:
                raise RuntimeError(f"{impl} worker exited while draining:\n{run.output()[-3000:]}")
            if now > deadline:
                run.error = f"{left} messages left after {timeout:.0f} s;"
                run.empty_at = now
                run.cpu_at_empty = tree_cpu_seconds(run.process.pid)
                run.server_cpu_at_empty = tree_cpu_seconds(server_pid)
                run.host_busy_percent = host_busy_percent(host_at_ready, host_cpu_ticks())
                # Count what was done, so the rate stays meaningful.
                run.remaining_at_ready -= left
                break
            # GetQueueAttributes costs ministack more the deeper the queue: poll rarely while deep.
            time.sleep(0.1 if left > 1000 else 0.05 if left > 200 else 0.02)
    finally:
        stop(run, reaper)
    return run


def idle(
    procs: Processes,
    proxy: DelayProxy,
    impl: str,
    prefix: str,
    *,
    queues: list[str],
    workdir: Path,
) -> WorkerRun:
    """Start one idle worker process on empty queues; the caller stops it (SIGTERM) later."""
    run = start_worker(
        procs,
        proxy,
        impl,
        prefix,
        scenario="idle",
        queues=queues,
        processes=1,
        threads=10,
        messages=0,
        workdir=workdir,
    )
    wait_ready(run)
    run.ready_at = time.monotonic()
    run.cpu_at_ready = tree_cpu_seconds(run.process.pid)
    return run


def idle_settle_seconds(idle_seconds: float) -> float:
    """How long an idle run's start-up counts: IDLE_SETTLE_SECONDS, or a third of a shorter run."""
    return min(IDLE_SETTLE_SECONDS, idle_seconds / 3)


def settle_idle(run: WorkerRun) -> None:
    """Mark the end of an idle worker's start-up: its idle CPU is counted from here."""
    run.settled_at = time.monotonic()
    run.cpu_at_settled = tree_cpu_seconds(run.process.pid)


def stop_idle(run: WorkerRun, reaper: Reaper) -> None:
    run.empty_at = time.monotonic()
    run.cpu_at_empty = tree_cpu_seconds(run.process.pid)
    stop(run, reaper)


def stop(run: WorkerRun, reaper: Reaper) -> None:
    """SIGTERM the run's master (noting when) and let the reaper see it exit."""
    run.term_at = time.monotonic()
    if run.process.poll() is None:
        run.process.send_signal(signal.SIGTERM)
    reaper.watch(run, timeout=45)


def collect(run: WorkerRun) -> None:
    """Read what the proxy counted for the run's tag (call once its master has exited)."""
    run.requests = run.proxy.counts(run.tag)
    if run.exit_code not in (0, None):
        run.error = (run.error or "") + f" exit code {run.exit_code};"
