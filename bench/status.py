"""What message status costs: the shipped stack end to end with status on, against QM_STATUS=off, same run.

Both runs are `e2e.run` of our API and worker (same clients, messages, worker shape) through the same
delaying proxy; the only difference is the setting. Status on writes to SQLite in a state directory
of the run's own, shared by the API and the worker, as `make run` does. Store writes are the
processes' own count (`qm_status_store_writes_total`: one SQLite commit each), read from the API's
and the worker master's /metrics once the queue is empty, and again after an idle pause (which must
add none).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from bench import e2e, workers
from bench.common import DelayProxy, Processes, free_port, metric_sums

#: How long the stack idles after the load before the store writes are read again.
IDLE_SECONDS = 3.0

#: How long after the queue emptied the writes are first read: the last outcomes' flush (250 ms) is part of the load.
SETTLE_SECONDS = 1.0

#: Targets: throughput with status at least this share of without; CPU per message at most this much more.
MIN_RATE_RATIO = 0.9
MAX_CPU_RATIO = 1.15

#: The metric that counts store writes, in both halves.
WRITES_METRIC = "qm_status_store_writes_total"


@dataclasses.dataclass
class StatusCost:
    """Status on against off, and the store writes it made."""

    on: e2e.EndToEnd
    off: e2e.EndToEnd
    #: Store writes of the API and the worker during the whole run (warm-up included), and the messages they carried.
    store_writes: float
    messages: int
    #: Store writes made while the stack idled, after the load.
    idle_writes: float

    @property
    def rate_ratio(self) -> float:
        return self.on.rate / self.off.rate if self.off.rate else float("nan")

    @property
    def cpu_ratio(self) -> float:
        on = self.on.cpu_ms_per_message(self.on.api_cpu_seconds + self.on.worker_cpu_seconds)
        off = self.off.cpu_ms_per_message(self.off.api_cpu_seconds + self.off.worker_cpu_seconds)
        return on / off if off else float("nan")

    @property
    def writes_per_message(self) -> float:
        return self.store_writes / self.messages if self.messages else float("nan")

    def lines(self) -> list[str]:
        on, off = self.on, self.off
        cpu_on = on.cpu_ms_per_message(on.api_cpu_seconds + on.worker_cpu_seconds)
        cpu_off = off.cpu_ms_per_message(off.api_cpu_seconds + off.worker_cpu_seconds)
        return [
            f"status at {on.rtt_ms:g} ms: end to end {on.rate:,.0f} msg/s on, {off.rate:,.0f} off: "
            f"{self.rate_ratio:.2f}x (target >= {MIN_RATE_RATIO})",
            f"status: CPU per message (API + worker) {cpu_on:.2f} ms on, {cpu_off:.2f} off: "
            f"{self.cpu_ratio:.2f}x (target <= {MAX_CPU_RATIO})",
            f"status: {self.writes_per_message:.3f} store writes (SQLite commits) per message "
            f"({self.store_writes:.0f} for {self.messages}); {self.idle_writes:.0f} while idle {IDLE_SECONDS:g} s",
        ]

    def missed(self) -> list[str]:
        missed = []
        if not self.rate_ratio >= MIN_RATE_RATIO:
            missed.append(f"status throughput {self.rate_ratio:.2f}x of off (>= {MIN_RATE_RATIO})")
        if not self.cpu_ratio <= MAX_CPU_RATIO:
            missed.append(f"status CPU per message {self.cpu_ratio:.2f}x of off (<= {MAX_CPU_RATIO})")
        if self.idle_writes:
            missed.append(f"status store writes while idle: {self.idle_writes:.0f} (0)")
        return missed

    def as_dict(self) -> dict[str, Any]:
        return {
            "on": self.on.as_dict(),
            "off": self.off.as_dict(),
            "rate_ratio": self.rate_ratio,
            "cpu_ratio": self.cpu_ratio,
            "store_writes": self.store_writes,
            "messages": self.messages,
            "store_writes_per_message": self.writes_per_message,
            "idle_store_writes": self.idle_writes,
        }


def run(
    procs: Processes,
    reaper: workers.Reaper,
    client: Any,
    proxy: DelayProxy,
    prefixes: tuple[str, str],
    *,
    workdir: Path,
    order_on_first: bool,
    warmup: int = 20,
    **e2e_options: Any,
) -> StatusCost:
    """Run the end-to-end scenario with status on and off (in the order given), and read the store writes."""
    results: dict[bool, e2e.EndToEnd] = {}
    writes: dict[str, float] = {}

    def read_writes(worker_metrics: str) -> Any:
        def drained(api: str) -> None:
            urls = (api + "/metrics", worker_metrics)
            time.sleep(SETTLE_SECONDS)
            writes["load"] = sum(metric_sums(url, WRITES_METRIC)[0] for url in urls)
            time.sleep(IDLE_SECONDS)
            writes["idle"] = sum(metric_sums(url, WRITES_METRIC)[0] for url in urls) - writes["load"]

        return drained

    for on in (True, False) if order_on_first else (False, True):
        state_dir = workdir / f"status-{'on' if on else 'off'}-{prefixes[on]}"
        port = free_port()
        env = {"QM_STATE_DIR": str(state_dir), "QM_STATUS": "on" if on else "off", "QM_WORKER_METRICS_PORT": str(port)}
        results[on] = e2e.run(
            procs,
            reaper,
            client,
            proxy,
            "ours",
            prefixes[on],
            workdir=workdir,
            warmup=warmup,
            env=env,
            drained=read_writes(f"http://127.0.0.1:{port}/metrics") if on else None,
            **e2e_options,
        )
    on_run = results[True]
    return StatusCost(
        on=on_run,
        off=results[False],
        store_writes=writes.get("load", float("nan")),
        messages=on_run.accepted + warmup,
        idle_writes=writes.get("idle", float("nan")),
    )
