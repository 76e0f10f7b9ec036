"""What message status costs: the shipped stack end to end with status on, against QM_STATUS=off, same run.

Two pairs of runs, the second in the other order, pooled. All runs are `e2e.run` of our API and
worker (same clients, messages, worker shape) through the same delaying proxy; the only difference
is the setting. Status on writes to SQLite in a state directory of the run's own, shared by the API
and the worker, as `make run` does. Store writes are the processes' own count
(`qm_status_store_writes_total`: one SQLite commit each), read from the API's and the worker
master's /metrics once the queue of the first run with status on is empty, and again after an idle
pause (which must add none).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
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


#: Pairs of runs (on and off), the second pair in the other order: one pair's ratio moved by up to
#: 0.2 between runs on this shared machine (0.76x to 1.03x), more than status costs.
ROUNDS = 2


def _cpu_ms(runs: list[e2e.EndToEnd]) -> float:
    """API + worker CPU per message over `runs` together."""
    messages = sum(r.accepted for r in runs)
    seconds = sum(r.api_cpu_seconds + r.worker_cpu_seconds for r in runs)
    return seconds * 1000 / messages if messages else float("nan")


def _rate(runs: list[e2e.EndToEnd]) -> float:
    """Messages per second end to end over `runs` together (first POST -> queue empty in each)."""
    seconds = sum(r.accepted / r.rate for r in runs if r.rate > 0)
    return sum(r.accepted for r in runs) / seconds if seconds > 0 else float("nan")


@dataclasses.dataclass
class StatusCost:
    """Status on against off (pooled over the rounds), and the store writes it made."""

    ons: list[e2e.EndToEnd]
    offs: list[e2e.EndToEnd]
    #: Store writes of the API and the worker during the first run with status on (warm-up included), and
    #: the messages it carried.
    store_writes: float
    messages: int
    #: Store writes made while the stack idled, after the load.
    idle_writes: float

    @property
    def rtt_ms(self) -> float:
        return self.ons[0].rtt_ms

    @property
    def rate_ratio(self) -> float:
        off = _rate(self.offs)
        return _rate(self.ons) / off if off else float("nan")

    @property
    def cpu_ratio(self) -> float:
        off = _cpu_ms(self.offs)
        return _cpu_ms(self.ons) / off if off else float("nan")

    @property
    def writes_per_message(self) -> float:
        return self.store_writes / self.messages if self.messages else float("nan")

    def lines(self) -> list[str]:
        pairs = len(self.ons)
        each = ", ".join(f"{on.rate / off.rate:.2f}x" for on, off in zip(self.ons, self.offs, strict=True))
        return [
            f"status at {self.rtt_ms:g} ms ({pairs} pairs, pooled): end to end {_rate(self.ons):,.0f} msg/s on, "
            f"{_rate(self.offs):,.0f} off: {self.rate_ratio:.2f}x (target >= {MIN_RATE_RATIO}); "
            f"each pair: {each}",
            f"status: CPU per message (API + worker) {_cpu_ms(self.ons):.2f} ms on, {_cpu_ms(self.offs):.2f} off: "
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
            "on": [r.as_dict() for r in self.ons],
            "off": [r.as_dict() for r in self.offs],
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
    prefix: Callable[[int], str],
    *,
    workdir: Path,
    order_on_first: bool,
    rounds: int = ROUNDS,
    warmup: int = 20,
    **e2e_options: Any,
) -> StatusCost:
    """Run the end-to-end scenario with status on and off, `rounds` pairs, each pair in the other order
    than the one before (the first as given); read the store writes of the first run with status on.

    `prefix(n)` names the queues of the n-th run (0, 1, ...), each run on queues of its own.
    """
    results: dict[bool, list[e2e.EndToEnd]] = {True: [], False: []}
    writes: dict[str, float] = {}

    def read_writes(worker_metrics: str) -> Any:
        def drained(api: str) -> None:
            urls = (api + "/metrics", worker_metrics)
            time.sleep(SETTLE_SECONDS)
            writes["load"] = sum(metric_sums(url, WRITES_METRIC)[0] for url in urls)
            time.sleep(IDLE_SECONDS)
            writes["idle"] = sum(metric_sums(url, WRITES_METRIC)[0] for url in urls) - writes["load"]

        return drained

    n = 0
    for round_no in range(rounds):
        on_first = order_on_first == (round_no % 2 == 0)
        for on in (True, False) if on_first else (False, True):
            name = prefix(n)
            n += 1
            state_dir = workdir / f"status-{'on' if on else 'off'}-{name}"
            port = free_port()
            env = {
                "QM_STATE_DIR": str(state_dir),
                "QM_STATUS": "on" if on else "off",
                "QM_WORKER_METRICS_PORT": str(port),
            }
            counts_writes = on and not results[True]
            results[on].append(
                e2e.run(
                    procs,
                    reaper,
                    client,
                    proxy,
                    "ours",
                    name,
                    workdir=workdir,
                    warmup=warmup,
                    env=env,
                    drained=read_writes(f"http://127.0.0.1:{port}/metrics") if counts_writes else None,
                    **e2e_options,
                )
            )
    first_on = results[True][0]
    return StatusCost(
        ons=results[True],
        offs=results[False],
        store_writes=writes.get("load", float("nan")),
        messages=first_on.accepted + warmup,
        idle_writes=writes.get("idle", float("nan")),
    )
