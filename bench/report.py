"""One table of every figure, ours and stock side by side at each SQS round-trip time, and its JSON."""

from __future__ import annotations

import dataclasses
import math
import operator
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from bench.actors import SLEEP_SECONDS
from bench.api_load import LoadResult, percentile
from bench.e2e import EndToEnd
from bench.fleet import Fleet
from bench.latency import FixedRate
from bench.overhead import Probe
from bench.payloads import PayloadFigures
from bench.tables import table
from bench.workers import IDLE_WINDOW_SECONDS, WorkerRun, idle_settle_seconds

#: The round-trip time the project's targets are set at.
TARGET_RTT_MS = 15.0

IMPLS = ("ours", "stock")


def _median(values: Iterable[float | None]) -> float:
    data = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(data) if data else float("nan")


def _ratio(ours: float | None, stock: float | None) -> float:
    if ours is None or stock is None or math.isnan(ours) or math.isnan(stock) or stock == 0:
        return float("nan")
    return ours / stock


@dataclasses.dataclass(frozen=True)
class Target:
    """A goal for one figure at one round-trip time: against a number, or against stock's figure times a factor."""

    text: str
    compare: Callable[[float, float], bool]
    limit: float
    against_stock: bool = False
    rtt_ms: float = TARGET_RTT_MS

    def verdict(self, ours: float | None, stock: float | None) -> str:
        if ours is None or math.isnan(ours):
            return "-"
        if self.against_stock:
            if stock is None or math.isnan(stock):
                return "-"
            return "met" if self.compare(ours, stock * self.limit) else "MISSED"
        return "met" if self.compare(ours, self.limit) else "MISSED"


@dataclasses.dataclass(frozen=True)
class Row:
    """One figure: how to read it for (rtt, impl), and its target if it has one."""

    section: str
    figure: str
    value: Callable[[float, str], float | None]
    target: Target | None = None


class Report:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.rtts: list[float] = list(config["rtts"])
        self.api: dict[tuple[float, str, int], LoadResult] = {}
        self.e2e: dict[tuple[float, str], EndToEnd] = {}
        self.drains: dict[tuple[float, str, str], list[WorkerRun]] = {}
        self.idle: dict[tuple[float, str], WorkerRun] = {}
        self.latency: dict[tuple[float, str], FixedRate] = {}
        self.fleet: dict[tuple[float, str], Fleet] = {}
        self.overhead: list[tuple[str, Probe]] = []
        self.proxies: dict[float, dict[str, Any]] = {}
        #: Large messages through S3, by RTT (ours alone).
        self.payloads: dict[float, PayloadFigures] = {}
        self.notes: list[str] = []
        #: The tracing scenario by RTT: each variant's end-to-end figures and the ratios between them.
        self.tracing: dict[float, dict[str, Any]] = {}
        #: Message status on against off, by round-trip time (bench/status.py).
        self.status: dict[float, Any] = {}
        #: Every shipped message type end to end, by round-trip time (bench/mix.py: render, detail, as_dict).
        self.mix: dict[float, Any] = {}

    # -- figures --------------------------------------------------------------------------------

    def _api(self, clients: int, read: Callable[[LoadResult], float]) -> Callable[[float, str], float | None]:
        def value(rtt: float, impl: str) -> float | None:
            r = self.api.get((rtt, impl, clients))
            return read(r) if r is not None else None

        return value

    def _api_round_trips(self, clients: int) -> Callable[[float, str], float | None]:
        def value(rtt: float, impl: str) -> float | None:
            r = self.api.get((rtt, impl, clients))
            return self._round_trips(rtt, r.percentile(50)) if r is not None else None

        return value

    def _e2e(self, read: Callable[[EndToEnd], float]) -> Callable[[float, str], float | None]:
        def value(rtt: float, impl: str) -> float | None:
            r = self.e2e.get((rtt, impl))
            return read(r) if r is not None else None

        return value

    def _latency(self, read: Callable[[FixedRate], float]) -> Callable[[float, str], float | None]:
        def value(rtt: float, impl: str) -> float | None:
            r = self.latency.get((rtt, impl))
            return read(r) if r is not None else None

        return value

    def _fleet(self, read: Callable[[Fleet], float]) -> Callable[[float, str], float | None]:
        def value(rtt: float, impl: str) -> float | None:
            r = self.fleet.get((rtt, impl))
            return read(r) if r is not None else None

        return value

    def _drain(self, scenario: str, read: Callable[[WorkerRun], float | None]) -> Callable[[float, str], float | None]:
        def value(rtt: float, impl: str) -> float | None:
            runs = self.drains.get((rtt, scenario, impl))
            return _median(read(r) for r in runs) if runs else None

        return value

    def _drain_requests(self, rtt: float, impl: str) -> float | None:
        runs = self.drains.get((rtt, "shipped", impl))
        if not runs:
            return None
        messages = sum(r.messages for r in runs)
        return sum(sum(r.requests.values()) for r in runs) / messages if messages else float("nan")

    def idle_rate(self, rtt: float, impl: str) -> float | None:
        run = self.idle.get((rtt, impl))
        if run is None:
            return None
        if not run.exited_at:
            return float("nan")
        queues: int = self.config["idle_queues"]
        if run.window_seconds > 0:  # after start-up, over one long poll (see IDLE_WINDOW_SECONDS)
            return run.window_receives / queues / run.window_seconds * 3600
        return run.requests.get("ReceiveMessage", 0) / queues / (run.exited_at - run.ready_at) * 3600

    def _idle_cpu(self, rtt: float, impl: str) -> float | None:
        """Steady idle CPU: from the end of start-up to just before SIGTERM."""
        run = self.idle.get((rtt, impl))
        if run is None or not run.settled_at or run.empty_at <= run.settled_at:
            return None
        return (run.cpu_at_empty - run.cpu_at_settled) / (run.empty_at - run.settled_at) * 3600

    def _idle_startup_cpu(self, rtt: float, impl: str) -> float | None:
        """CPU seconds from ready to the end of start-up (the first receives)."""
        run = self.idle.get((rtt, impl))
        if run is None or not run.settled_at:
            return None
        return run.cpu_at_settled - run.cpu_at_ready

    @staticmethod
    def _round_trips(rtt: float, ms: float) -> float:
        return ms / rtt if rtt > 0 else float("nan")

    def rows(self) -> list[Row]:
        c = self.config
        rows: list[Row] = []
        targets_sends = {64: 0.12, 16: 0.2}
        for clients in sorted(c["api_levels"], reverse=True):
            s = f"API, {clients} clients"
            rows += [
                Row(
                    s,
                    "accepted msg/s",
                    self._api(clients, lambda r: r.rate),
                    Target(">= 4x stock", operator.ge, 4.0, against_stock=True) if clients == 64 else None,
                ),
                Row(s, "p50 ms", self._api(clients, lambda r: r.percentile(50))),
                Row(
                    s,
                    "p50 round trips (p50 / RTT)",
                    self._api_round_trips(clients),
                    Target("<= 3", operator.le, 3.0) if clients == 64 else None,
                ),
                Row(s, "p99 ms", self._api(clients, lambda r: r.percentile(99))),
                Row(
                    s,
                    "sends per accepted msg",
                    self._api(clients, lambda r: r.sends_per_message),
                    Target(f"<= {targets_sends[clients]}", operator.le, targets_sends[clients])
                    if clients in targets_sends
                    else None,
                ),
                Row(s, "API cpu ms/msg", self._api(clients, lambda r: r.per_message(r.api_cpu_seconds))),
                Row(s, "non-202 answers", self._api(clients, lambda r: float(r.load.issued - r.accepted))),
            ]
        s = (
            f"end to end, {c['e2e_clients']} clients; the shipped worker (`dramatiq actors`, "
            f"{c['e2e_processes']} x {c['threads']}, log + webhook + ordered)"
        )
        rows += [
            Row(
                s,
                "msg/s (first POST -> queue empty)",
                self._e2e(lambda r: r.rate),
                Target(">= 4x stock", operator.ge, 4.0, True),
            ),
            Row(s, "API accepted msg/s meanwhile", self._e2e(lambda r: r.api_rate)),
            Row(
                s,
                "SQS requests/msg (API + worker)",
                self._e2e(lambda r: r.requests_per_message),
                Target("<= 0.32", operator.le, 0.32),
            ),
            Row(s, "  of which API sends/msg", self._e2e(lambda r: r.sends_per_message)),
            Row(s, "  of which worker requests/msg", self._e2e(lambda r: r.worker_requests_per_message)),
            Row(s, "receives/msg (all 3 queues, empty polls too)", self._e2e(lambda r: r.receives_per_message)),
            Row(s, "msgs/receive", self._e2e(lambda r: r.messages_per_receive)),
            Row(s, "worker lag s (last 202 -> queue empty)", self._e2e(lambda r: r.lag_seconds)),
            Row(s, "peak backlog, msgs", self._e2e(lambda r: float(r.peak_backlog))),
            Row(
                s,
                "API cpu ms/msg",
                self._e2e(lambda r: r.cpu_ms_per_message(r.api_cpu_seconds)),
                Target("<= 0.3x stock", operator.le, 0.3, True),
            ),
            Row(
                s,
                "worker cpu ms/msg",
                self._e2e(lambda r: r.cpu_ms_per_message(r.worker_cpu_seconds)),
                Target("<= 0.3x stock", operator.le, 0.3, True),
            ),
            Row(s, "SQS server cpu ms/msg", self._e2e(lambda r: r.cpu_ms_per_message(r.server_cpu_seconds))),
            Row(s, "proxy cpu ms/msg", self._e2e(lambda r: r.cpu_ms_per_message(r.proxy_cpu_seconds))),
        ]
        s = (
            f"fixed rate, {c['latency_rate']:g} msg/s open loop for {c['latency_seconds']:g} s; the shipped worker "
            f"({c['e2e_processes']} x {c['threads']}), log marking when it starts"
        )
        rows += [
            Row(s, "POST -> actor start p50 ms", self._latency(lambda r: r.percentile(50))),
            Row(s, "POST -> actor start p99 ms", self._latency(lambda r: r.percentile(99))),
            Row(
                s,
                "p50 round trips (p50 / RTT)",
                self._latency(lambda r: r.round_trips(50)),
                Target("<= 3", operator.le, 3.0),
            ),
            Row(
                s,
                "p99 round trips (p99 / RTT)",
                self._latency(lambda r: r.round_trips(99)),
                Target("<= 6", operator.le, 6.0),
            ),
            Row(s, "POST -> 202 p50 ms", self._latency(lambda r: percentile(r.answers_ms, 50))),
            Row(s, "POST -> 202 p99 ms", self._latency(lambda r: percentile(r.answers_ms, 99))),
            Row(
                s,
                "API send -> SQS's answer, mean ms (ours, qm_api_send_seconds)",
                self._latency(lambda r: r.send_ms_mean),
            ),
            Row(s, "p50 in those sends' round trips (ours)", self._latency(lambda r: r.send_round_trips(50))),
            Row(s, "POST -> SQS accepted p50 ms (ours)", self._latency(lambda r: percentile(r.to_accepted_ms, 50))),
            Row(s, "POST -> SQS accepted p99 ms (ours)", self._latency(lambda r: percentile(r.to_accepted_ms, 99))),
            Row(
                s,
                "SQS accepted -> 202 at the client p50 ms (ours)",
                self._latency(lambda r: percentile(r.accepted_to_answer_ms, 50)),
            ),
            Row(
                s,
                "SQS accepted -> receive returned p50 ms (ours)",
                self._latency(lambda r: percentile(r.to_receive_ms, 50)),
            ),
            Row(
                s,
                "SQS accepted -> receive returned p99 ms (ours)",
                self._latency(lambda r: percentile(r.to_receive_ms, 99)),
            ),
            Row(s, "receive -> actor start p50 ms (ours)", self._latency(lambda r: percentile(r.to_start_ms, 50))),
            Row(s, "receive -> actor start p99 ms (ours)", self._latency(lambda r: percentile(r.to_start_ms, 99))),
            Row(s, "SQS requests/msg (API + worker)", self._latency(lambda r: r.requests_per_message)),
            Row(s, "  of which API sends/msg", self._latency(lambda r: r.sends_per_message)),
            Row(s, "  of which receives/msg (3 queues)", self._latency(lambda r: r.receives_per_message)),
            Row(s, "  of which deletes/msg", self._latency(lambda r: r.deletes_per_message)),
            Row(s, "accepted msgs", self._latency(lambda r: float(r.accepted))),
            Row(s, "accepted, never started", self._latency(lambda r: float(r.unseen))),
            Row(s, "sender lateness p99 ms (open loop check)", self._latency(lambda r: percentile(r.lateness_ms, 99))),
        ]
        s = (
            f"fleet, two dramatiq masters of the shipped worker ({c['fleet_processes']} x {c['threads']} each, "
            f"log marking its starts) on one busy log queue, {c['fleet_messages']} msgs"
        )
        rows += [
            Row(s, "share of master 1", self._fleet(lambda r: r.share(0)), Target(">= 0.25", operator.ge, 0.25)),
            Row(s, "share of master 2", self._fleet(lambda r: r.share(1)), Target(">= 0.25", operator.ge, 0.25)),
            Row(s, "msg/s (both ready -> all started)", self._fleet(lambda r: r.rate)),
        ]
        s = f"idle, 1 process x {c['threads']} threads, {c['idle_queues']} queues, {c['idle_seconds']:.0f} s"
        settle = idle_settle_seconds(c["idle_seconds"])
        rows += [
            Row(
                s,
                f"receives/h/queue/process (the {IDLE_WINDOW_SECONDS:g} s after the first {settle:g})",
                self.idle_rate,
                Target("<= 200", operator.le, 200.0),
            ),
            Row(s, f"cpu s/h, steady (after the first {settle:g} s)", self._idle_cpu),
            Row(s, f"cpu s in the first {settle:g} s after ready", self._idle_startup_cpu),
        ]
        s = (
            f"worker drain, the shipped worker ({c['drain_processes']} x {c['threads']}, log + webhook + ordered), "
            f"{c['drain_messages']} log msgs preloaded"
        )
        rows += [
            Row(
                s, "msg/s", self._drain("shipped", lambda r: r.rate), Target(">= 2x stock", operator.ge, 2.0, True, 0.0)
            ),
            Row(s, "SQS requests/msg", self._drain_requests, Target("<= 0.22", operator.le, 0.22, rtt_ms=0.0)),
            Row(s, "cpu ms/msg", self._drain("shipped", lambda r: r.cpu_ms_per_message)),
        ]
        s = (
            f"worker drain, a 50 ms bench actor (a controlled task) on its own queue + webhook + ordered, "
            f"{c['sleep_messages']} preloaded, {c['sleep_processes']} x {c['threads']}"
        )
        rows += [
            Row(s, "msg/s", self._drain("sleep", lambda r: r.rate)),
            # Thread use is judged while tasks run (first start -> last end): the run's edges are fixed
            # costs that do not grow with it (shown below), and in a few seconds' run they swing it by more
            # than any change to receiving did. The whole window is shown beside it.
            Row(
                s,
                "thread utilisation, while tasks run",
                self._drain("sleep", lambda r: r.steady_utilisation(SLEEP_SECONDS)),
                Target(">= 0.90", operator.ge, 0.90),
            ),
            Row(
                s,
                "thread utilisation, ready -> queue empty",
                self._drain("sleep", lambda r: r.utilisation(SLEEP_SECONDS)),
            ),
            Row(s, "  mean idle ms between a thread's tasks", self._drain("sleep", lambda r: r.mean_gap_ms())),
            Row(s, "  ms from ready to the first task", self._drain("sleep", lambda r: r.startup_ms())),
            Row(s, "  ms from the last task to queue empty", self._drain("sleep", lambda r: r.finish_ms())),
        ]
        return rows

    def _has(self, row: Row) -> bool:
        return any(row.value(rtt, impl) is not None for rtt in self.rtts for impl in IMPLS)

    def missed(self) -> list[str]:
        """The figures whose target this run missed, with the round-trip time each is set at."""
        status_missed = [f"{m} at {rtt:g} ms" for rtt, cost in self.status.items() for m in cost.missed()]
        return status_missed + [
            f"{row.figure} ({row.target.text} at {row.target.rtt_ms:g} ms)"
            for row in self.rows()
            if row.target is not None
            and self._has(row)
            and row.target.verdict(row.value(row.target.rtt_ms, "ours"), row.value(row.target.rtt_ms, "stock"))
            == "MISSED"
        ]

    # -- output ---------------------------------------------------------------------------------

    def render(self) -> str:
        headers = ["figure"]
        for rtt in self.rtts:
            headers += [f"{rtt:g} ms ours", f"{rtt:g} ms stock", f"{rtt:g} ms ours/stock"]
        headers += ["target", "verdict"]
        body: list[list[Any]] = []
        section = None
        for row in self.rows():
            if not self._has(row):
                continue
            if row.section != section:
                section = row.section
                body.append([f"-- {section}"])
            cells: list[Any] = [row.figure]
            for rtt in self.rtts:
                ours, stock = row.value(rtt, "ours"), row.value(rtt, "stock")
                cells += [ours, stock, _fmt_ratio(_ratio(ours, stock))]
            if row.target is None:
                cells += ["", ""]
            else:
                t = row.target
                cells += [
                    f"{t.text} at {t.rtt_ms:g} ms",
                    t.verdict(row.value(t.rtt_ms, "ours"), row.value(t.rtt_ms, "stock")),
                ]
            body.append(cells)
        for cells in body:
            if len(cells) == 1:
                cells += [""] * (len(headers) - 1)
        rtts = ", ".join(f"{r:g}" for r in self.rtts)
        title = (
            f"queue-manager bench: ours against stock dramatiq-sqs, every SQS call delayed by {rtts} ms "
            "through the bench proxy (ratios: ours/stock in the same run)"
        )
        out = [table(headers, body, title)]
        for figures in self.payloads.values():
            out.append("\n".join(figures.lines()))
        out += [figures.render() for figures in self.mix.values()]
        notes = self._overhead_notes() + [line for cost in self.status.values() for line in cost.lines()] + self.notes
        if self.config.get("ours_env"):
            given = ", ".join(f"{k}={v}" for k, v in sorted(self.config["ours_env"].items()))
            notes.insert(0, f"ours ran with {given} (--ours-env); everything else at its default")
        if notes:
            out.append("Notes:\n" + "\n".join(f"  - {n}" for n in notes))
        return "\n\n".join(out)

    def render_detail(self) -> str:
        """SQS requests per message by action, for every scenario (`--detail`)."""
        rows: list[list[Any]] = []
        actions: set[str] = set()
        entries: list[tuple[str, Counter[str], int]] = []
        for (rtt, impl, clients), r in sorted(self.api.items()):
            entries.append((f"{rtt:g} ms api {clients} clients {impl}", r.requests, r.accepted))
        for (rtt, impl), e in sorted(self.e2e.items()):
            entries.append((f"{rtt:g} ms e2e api {impl}", e.api_requests, e.accepted))
            entries.append((f"{rtt:g} ms e2e worker {impl}", e.worker_requests, e.accepted))
        for (rtt, scenario, impl), runs in sorted(self.drains.items()):
            total: Counter[str] = Counter()
            for run in runs:
                total.update(run.requests)
            entries.append((f"{rtt:g} ms drain {scenario} {impl}", total, sum(r.messages for r in runs)))
        entries += [entry for figures in self.mix.values() for entry in figures.detail_entries()]
        for _, counts, _ in entries:
            actions.update(counts)
        columns = sorted(actions)
        for name, counts, messages in entries:
            per = [counts.get(a, 0) / messages if messages else float("nan") for a in columns]
            rows.append([name, *per, sum(per)])
        return table(["scenario", *columns, "total"], rows, "SQS requests per message, by action")

    def _overhead_notes(self) -> list[str]:
        if not self.overhead:
            return []
        parts = []
        for name, p in self.overhead:
            d = p.as_dict()
            cpu = (
                f", proxy cpu {d['proxy_cpu_us_per_request']:.0f} us/request" if p.proxy_cpu_seconds is not None else ""
            )
            parts.append(
                f"{name} x{p.concurrency}: {p.rate:,.0f}/s p50 {d['p50_ms']:.1f} ms p99 {d['p99_ms']:.1f} ms{cpu}"
                + (f", {p.failures} failed" if p.failures else "")
            )
        return ["proxy check (GetQueueUrl straight to the server vs through each proxy): " + "; ".join(parts)]

    def as_dict(self) -> dict[str, Any]:
        """The table as data (one entry per figure and RTT), then the raw figures of every scenario."""
        figures = []
        for row in self.rows():
            if not self._has(row):
                continue
            by_rtt = {}
            for rtt in self.rtts:
                ours, stock = row.value(rtt, "ours"), row.value(rtt, "stock")
                by_rtt[f"{rtt:g}"] = {"ours": _json(ours), "stock": _json(stock), "ratio": _json(_ratio(ours, stock))}
            entry: dict[str, Any] = {"section": row.section, "figure": row.figure, "rtt_ms": by_rtt}
            if row.target is not None:
                t = row.target
                entry["target"] = {
                    "text": t.text,
                    "rtt_ms": t.rtt_ms,
                    "verdict": t.verdict(row.value(t.rtt_ms, "ours"), row.value(t.rtt_ms, "stock")),
                }
            figures.append(entry)
        return {
            "config": self.config,
            "figures": figures,
            "raw": {
                "api": [r.as_dict() for r in self.api.values()],
                "e2e": [r.as_dict() for r in self.e2e.values()],
                "latency": [r.as_dict() for r in self.latency.values()],
                "fleet": [r.as_dict() for r in self.fleet.values()],
                "drains": [
                    {
                        "rtt_ms": rtt,
                        "scenario": scenario,
                        "impl": impl,
                        "runs": [_run_dict(r) for r in runs],
                    }
                    for (rtt, scenario, impl), runs in self.drains.items()
                ],
                "idle": [
                    {
                        "rtt_ms": rtt,
                        "impl": impl,
                        "receives_per_hour_per_queue": _json(self.idle_rate(rtt, impl)),
                        **_run_dict(r),
                    }
                    for (rtt, impl), r in self.idle.items()
                ],
                "proxy_check": [{"name": name, **p.as_dict()} for name, p in self.overhead],
                "proxies": {f"{rtt:g}": stats for rtt, stats in self.proxies.items()},
                "status": {f"{rtt:g}": cost.as_dict() for rtt, cost in self.status.items()},
                "payloads": [f.as_dict() for f in self.payloads.values()],
                "mix": [f.as_dict() for f in self.mix.values()],
            },
            "notes": self.notes,
            "tracing": {f"{rtt:g}": figures for rtt, figures in self.tracing.items()},
        }


def _fmt_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _json(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 4)


def _run_dict(r: WorkerRun) -> dict[str, Any]:
    return {
        "messages": r.messages,
        "measured": r.remaining_at_ready,
        "drain_s": r.drain_seconds,
        "rate": r.rate,
        "cpu_ms_per_msg": r.cpu_ms_per_message,
        "sqs_server_cpu_ms_per_msg": r.server_cpu_ms_per_message,
        "requests": dict(r.requests),
        "shutdown_s": r.shutdown_seconds,
        "error": r.error,
        # The 50 ms drain's thread use (None without marks): see WorkerRun.steady_utilisation.
        "steady_utilisation": _json(r.steady_utilisation(SLEEP_SECONDS)) if r.scenario == "sleep" else None,
        "utilisation": _json(r.utilisation(SLEEP_SECONDS)) if r.scenario == "sleep" else None,
        "mean_gap_ms": _json(r.mean_gap_ms()),
        "startup_ms": _json(r.startup_ms()),
        "finish_ms": _json(r.finish_ms()),
    }
