"""Plain-text tables of the bench results, ours against the stock baseline."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from bench.actors import SLEEP_SECONDS
from bench.api_load import LoadResult
from bench.workers import WorkerRun

#: Queue set-up and admin calls, lumped together in the by-action table.
SETUP_ACTIONS = ("GetQueueUrl", "CreateQueue", "GetQueueAttributes", "SetQueueAttributes", "ListQueues", "TagQueue")

#: Columns of the by-action tables, in this order (others are added if they occur).
ACTION_COLUMNS = (
    "ReceiveMessage",
    "DeleteMessage",
    "DeleteMessageBatch",
    "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch",
    "SendMessage",
    "SendMessageBatch",
)

#: The targets, as printed.
TARGET_REQUESTS_PER_MESSAGE = 0.22
TARGET_THROUGHPUT_RATIO = 2.0
TARGET_UTILISATION = 0.90
TARGET_IDLE_RECEIVES_PER_HOUR = 200
TARGET_API_RATIO_64 = 5.0
TARGET_API_REQUESTS_PER_MESSAGE = 0.12


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: str = "") -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append(
        "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    )
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def _ratio(ours: float, base: float) -> str:
    return f"{ours / base:.2f}x" if base else "-"


def _median(values: Iterable[float]) -> float:
    data = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(data) if data else float("nan")


def _pooled(runs: Sequence[WorkerRun]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for run in runs:
        total.update(run.requests)
    messages = sum(run.messages for run in runs)
    return {a: n / messages for a, n in total.items()} if messages else {}


def _by_action(per_message: dict[str, float]) -> tuple[dict[str, float], float, float]:
    """Per-action figures with the setup calls lumped, their total, and the total without setup."""
    shown: dict[str, float] = {}
    setup = 0.0
    for action, value in per_message.items():
        if action in SETUP_ACTIONS:
            setup += value
        else:
            shown[action] = shown.get(action, 0.0) + value
    total = sum(shown.values()) + setup
    shown["setup"] = setup
    return shown, total, total - setup


def _action_columns(rows: Iterable[dict[str, float]]) -> list[str]:
    seen = {a for row in rows for a, v in row.items() if v}
    extra = sorted(seen - set(ACTION_COLUMNS) - {"setup"})
    return [*ACTION_COLUMNS, *extra, "setup"]


class Report:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.drains: dict[tuple[str, str], list[WorkerRun]] = {}
        self.idle: dict[str, WorkerRun] = {}
        self.api: dict[tuple[str, int], LoadResult] = {}
        self.notes: list[str] = []

    # -- figures used in several places --

    def rate(self, scenario: str, impl: str) -> float:
        return _median(r.rate for r in self.drains.get((scenario, impl), []))

    def per_message(self, scenario: str, impl: str) -> dict[str, float]:
        return _pooled(self.drains.get((scenario, impl), []))

    def total_per_message(self, scenario: str, impl: str) -> float:
        return _by_action(self.per_message(scenario, impl))[1]

    def utilisation(self, impl: str) -> float:
        return _median(r.utilisation(SLEEP_SECONDS) for r in self.drains.get(("sleep", impl), []))

    def idle_rate(self, impl: str) -> float:
        run = self.idle.get(impl)
        if run is None or not run.exited_at:
            return float("nan")
        queues = self.config["idle_queues"]
        return run.requests.get("ReceiveMessage", 0) / queues / (run.exited_at - run.ready_at) * 3600

    # -- tables --

    def render(self) -> str:
        out = []
        c = self.config
        if ("noop", "ours") in self.drains:
            out.append(
                self._drain_table(
                    "noop",
                    f"Worker: no-op actor, {c['noop_messages']} messages preloaded, "
                    f"{c['noop_processes']} processes x {c['threads']} threads, "
                    f"median of {c['rounds']} round(s)",
                )
            )
        if ("sleep", "ours") in self.drains:
            out.append(
                self._drain_table(
                    "sleep",
                    f"Worker: 50 ms sleep actor, {c['sleep_messages']} messages preloaded, "
                    f"1 process x {c['threads']} threads, median of {c['rounds']} round(s)",
                )
            )
        if self.drains:
            out.append(self._worker_actions())
        if self.idle:
            out.append(self._idle_table())
        if self.api:
            out.append(self._api_table())
            out.append(self._api_actions())
        out.append(self._targets())
        if self.notes:
            out.append("Notes:\n" + "\n".join(f"  - {n}" for n in self.notes))
        return "\n\n".join(out)

    def _drain_table(self, scenario: str, title: str) -> str:
        rows = []
        base_rate = self.rate(scenario, "stock")
        for impl in ("ours", "stock"):
            runs = self.drains.get((scenario, impl), [])
            if not runs:
                continue
            rate = self.rate(scenario, impl)
            rates = [r.rate for r in runs]
            row: list[Any] = [
                impl,
                _median(r.remaining_at_ready for r in runs),
                _median(r.drain_seconds for r in runs),
                rate,
                f"{min(rates):,.0f}-{max(rates):,.0f}",
                _ratio(rate, base_rate) if impl == "ours" else "1.00x",
                _median(r.cpu_ms_per_message for r in runs),
                _median(r.server_cpu_ms_per_message for r in runs),
                self.total_per_message(scenario, impl),
            ]
            if scenario == "sleep":
                row.append(f"{self.utilisation(impl) * 100:.1f}")
                tw = [r.task_window_utilisation() for r in runs]
                row.append(f"{_median(x for x in tw if x is not None) * 100:.1f}" if any(tw) else "-")
                gaps = sorted(g for r in runs for g in r.thread_gaps_ms())
                row.append(statistics.median(gaps) if gaps else None)
                row.append(gaps[min(len(gaps) - 1, int(len(gaps) * 0.9))] if gaps else None)
            row.append(_median(r.host_busy_percent for r in runs))
            row.append(max(r.shutdown_seconds for r in runs))
            errors = "; ".join(r.error.strip() for r in runs if r.error)
            row.append(errors or "")
            rows.append(row)
        headers = [
            "impl",
            "msgs",
            "drain s",
            "msgs/s",
            "min-max",
            "ours/stock",
            "cpu ms/msg",
            "sqs-srv cpu ms/msg",
            "sqs req/msg",
        ]
        if scenario == "sleep":
            headers += ["util %", "task-window util %", "gap p50 ms", "gap p90 ms"]
        headers += ["host cpu %", "SIGTERM->exit s", "errors"]
        return table(headers, rows, title)

    def _worker_actions(self) -> str:
        rows = []
        figures = {}
        for (scenario, impl), runs in sorted(self.drains.items()):
            figures[(scenario, impl)] = _by_action(_pooled(runs))
        columns = _action_columns(f[0] for f in figures.values())
        for (scenario, impl), (shown, total, without_setup) in figures.items():
            rows.append([f"{scenario} {impl}", *(shown.get(a, 0.0) for a in columns), without_setup, total])
        return table(
            ["scenario", *columns, "total-setup", "total"],
            rows,
            "Worker-side SQS requests per message, by action (all rounds pooled; setup = queue lookups/creation)",
        )

    def _idle_table(self) -> str:
        rows = []
        for impl in ("ours", "stock"):
            run = self.idle.get(impl)
            if run is None:
                continue
            lived = (run.exited_at - run.ready_at) if run.exited_at else float("nan")
            cpu_per_hour = (run.cpu_at_empty - run.cpu_at_ready) / (run.empty_at - run.ready_at) * 3600
            rows.append(
                [
                    impl,
                    lived,
                    run.requests.get("ReceiveMessage", 0),
                    self.idle_rate(impl),
                    cpu_per_hour,
                    run.shutdown_seconds,
                    (run.error or "").strip(),
                ]
            )
        return table(
            ["impl", "ready->exit s", "receives", "receives/h/queue/process", "cpu s/h", "SIGTERM->exit s", "errors"],
            rows,
            f"Idle: 1 process x {self.config['threads']} threads on {self.config['idle_queues']} empty queues for "
            f"{self.config['idle_seconds']:.0f} s, then SIGTERM",
        )

    def _api_table(self) -> str:
        rows = []
        for clients in self.config["api_levels"]:
            base = self.api.get(("stock", clients))
            for impl in ("ours", "stock"):
                r = self.api.get((impl, clients))
                if r is None:
                    continue
                non_202 = sum(n for s, n in r.statuses.items() if s != 202) + sum(r.errors.values())
                rows.append(
                    [
                        clients,
                        impl,
                        r.accepted,
                        r.seconds,
                        r.rate,
                        _ratio(r.rate, base.rate) if impl == "ours" and base else ("1.00x" if impl == "stock" else "-"),
                        r.percentile(50),
                        r.percentile(99),
                        _by_action(r.requests_per_message())[1],
                        r.api_cpu_ms_per_message,
                        r.server_cpu_ms_per_message,
                        r.loadgen_cpu_ms_per_message,
                        r.host_busy_percent,
                        non_202,
                    ]
                )
        return table(
            [
                "clients",
                "impl",
                "accepted",
                "s",
                "msgs/s",
                "ours/stock",
                "p50 ms",
                "p99 ms",
                "sqs req/msg",
                "api cpu ms/msg",
                "sqs-srv cpu ms/msg",
                "loadgen cpu ms/msg",
                "host cpu %",
                "non-202",
            ],
            rows,
            f'API: POST /messages type "log", up to {self.config["api_requests"]} requests or '
            f"{self.config['api_seconds']:.0f} s per level",
        )

    def _api_actions(self) -> str:
        figures = {(impl, clients): _by_action(r.requests_per_message()) for (impl, clients), r in self.api.items()}
        columns = [
            c for c in _action_columns(f[0] for f in figures.values()) if any(f[0].get(c) for f in figures.values())
        ] or ["SendMessage"]
        rows = []
        for clients in self.config["api_levels"]:
            for impl in ("ours", "stock"):
                if (impl, clients) in figures:
                    shown, total, _ = figures[(impl, clients)]
                    rows.append([f"{clients} {impl}", *(shown.get(a, 0.0) for a in columns), total])
        return table(["clients impl", *columns, "total"], rows, "API-side SQS requests per accepted message, by action")

    def _targets(self) -> str:
        rows: list[list[Any]] = []

        def add(name: str, ours: Any, base: Any, ok: bool | None) -> None:
            rows.append([name, ours, base, "-" if ok is None else ("met" if ok else "MISSED")])

        if self.drains.get(("noop", "ours")):
            req = self.total_per_message("noop", "ours")
            add(
                f"worker SQS requests/msg <= {TARGET_REQUESTS_PER_MESSAGE} (no-op)",
                req,
                self.total_per_message("noop", "stock"),
                req <= TARGET_REQUESTS_PER_MESSAGE,
            )
            ratio = self.rate("noop", "ours") / self.rate("noop", "stock")
            add(
                f"worker msgs/s >= {TARGET_THROUGHPUT_RATIO:.0f}x stock (no-op)",
                f"{ratio:.2f}x",
                "1.00x",
                ratio >= TARGET_THROUGHPUT_RATIO,
            )
        if self.drains.get(("sleep", "ours")):
            util = self.utilisation("ours")
            add(
                f"thread utilisation >= {TARGET_UTILISATION:.0%} (50 ms tasks)",
                f"{util:.1%}",
                f"{self.utilisation('stock'):.1%}",
                util >= TARGET_UTILISATION,
            )
        if "ours" in self.idle:
            rate = self.idle_rate("ours")
            add(
                f"idle receives/h/queue/process <= {TARGET_IDLE_RECEIVES_PER_HOUR}",
                rate,
                self.idle_rate("stock"),
                None if math.isnan(rate) else rate <= TARGET_IDLE_RECEIVES_PER_HOUR,
            )
        top = max(self.config["api_levels"]) if self.api else None
        if top and ("ours", top) in self.api and ("stock", top) in self.api:
            ours, base = self.api[("ours", top)], self.api[("stock", top)]
            ratio = ours.rate / base.rate if base.rate else float("nan")
            add(
                f"API msgs/s at {top} clients >= {TARGET_API_RATIO_64:.0f}x baseline",
                f"{ratio:.2f}x",
                "1.00x",
                ratio >= TARGET_API_RATIO_64,
            )
            req = _by_action(ours.requests_per_message())[1]
            add(
                f"API SQS requests/accepted msg <= {TARGET_API_REQUESTS_PER_MESSAGE} ({top} clients)",
                req,
                _by_action(base.requests_per_message())[1],
                req <= TARGET_API_REQUESTS_PER_MESSAGE,
            )
        if ("ours", 1) in self.api and ("stock", 1) in self.api:
            ours_p99, base_p99 = self.api[("ours", 1)].percentile(99), self.api[("stock", 1)].percentile(99)
            add("API p99 at 1 client <= baseline (ms)", ours_p99, base_p99, ours_p99 <= base_p99)
        return table(["target", "ours", "stock", "verdict"], rows, "Targets")

    def as_dict(self) -> dict[str, Any]:
        """Raw figures, for --json."""
        return {
            "config": self.config,
            "drains": {
                f"{s}/{i}": [
                    {
                        "messages": r.messages,
                        "measured": r.remaining_at_ready,
                        "drain_s": r.drain_seconds,
                        "rate": r.rate,
                        "cpu_ms_per_msg": r.cpu_ms_per_message,
                        "sqs_server_cpu_ms_per_msg": r.server_cpu_ms_per_message,
                        "utilisation": r.utilisation(SLEEP_SECONDS) if s == "sleep" else None,
                        "task_window_utilisation": r.task_window_utilisation(),
                        "requests": dict(r.requests),
                        "shutdown_s": r.shutdown_seconds,
                        "error": r.error,
                    }
                    for r in runs
                ]
                for (s, i), runs in self.drains.items()
            },
            "idle": {
                i: {
                    "requests": dict(r.requests),
                    "receives_per_hour_per_queue": self.idle_rate(i),
                    "shutdown_s": r.shutdown_seconds,
                    "error": r.error,
                }
                for i, r in self.idle.items()
            },
            "api": [
                {
                    "impl": r.impl,
                    "clients": r.clients,
                    "accepted": r.accepted,
                    "seconds": r.seconds,
                    "rate": r.rate,
                    "p50_ms": r.percentile(50),
                    "p99_ms": r.percentile(99),
                    "requests": dict(r.requests),
                    "statuses": {str(k): v for k, v in r.statuses.items()},
                    "errors": dict(r.errors),
                    "api_cpu_ms_per_msg": r.api_cpu_ms_per_message,
                    "sqs_server_cpu_ms_per_msg": r.server_cpu_ms_per_message,
                }
                for r in self.api.values()
            ],
            "notes": self.notes,
        }
