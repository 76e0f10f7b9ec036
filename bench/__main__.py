"""`python -m bench`: our API and worker against stock Dramatiq + dramatiq-sqs, same server, same run.

Every SQS call of the processes under test goes through a delaying proxy (`bench/proxy.py`), once
per round-trip time in --sqs-rtt-ms, and the proxy counts the calls. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

from bench import api_load, e2e, fleet, latency, mix, overhead, payloads, profile, workers
from bench import status as status_cost
from bench import tracing as trace_cost
from bench.common import (
    OURS_ENV,
    ROOT,
    DelayProxy,
    Processes,
    delay_proxy,
    delete_queues,
    ministack,
    scratch_dir,
    sqs_client,
)
from bench.report import Report

SCENARIOS = ("proxy", "api", "e2e", "latency", "fleet", "idle", "workers", "status", "payloads", "tracing", "mix")

FULL: dict[str, Any] = {
    "rtts": [0.0, 15.0],
    "rounds": 1,
    "drain_messages": 2000,
    "drain_processes": 2,
    "sleep_messages": 1600,
    "sleep_processes": 2,
    "threads": 10,
    "drain_timeout": 60.0,
    "idle_seconds": 30.0,
    "idle_queues": 2,
    "api_levels": [16, 64],
    "api_requests": 3000,
    "api_seconds": 8.0,
    "e2e_clients": 64,
    "e2e_messages": 3000,
    "e2e_seconds": 10.0,
    "e2e_processes": 2,
    "proxy_requests": 2000,
    "latency_rate": 200.0,
    "latency_seconds": 10.0,
    "fleet_messages": 2000,
    "fleet_processes": 1,
}

QUICK: dict[str, Any] = {
    **FULL,
    "drain_messages": 1000,
    # As many as the full run: at 800 the run's fixed start-up and ramp weigh twice as much in the thread use.
    "sleep_messages": 1600,
    "drain_timeout": 30.0,
    "idle_seconds": 0.0,
    "api_requests": 1000,
    "api_seconds": 3.0,
    "e2e_messages": 1000,
    "e2e_seconds": 5.0,
    "proxy_requests": 500,
    "latency_seconds": 5.0,
    "fleet_messages": 1000,
}

IMPLS = ("ours", "stock")


def _terminate(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def _make_queue(client: Any, impl: str, prefix: str, queue: str) -> str:
    """Create the queue (and its DLQ) the way each implementation would, so the preload has a target."""
    name = f"{prefix}_{queue}"
    if impl == "ours":
        from queue_manager.settings import Settings
        from queue_manager.sqs import queues

        defaults = Settings()
        return str(
            queues.ensure_queue(
                client,
                name,
                max_receive_count=defaults.max_retries + 1,
                visibility_timeout_seconds=defaults.visibility_timeout_seconds,
            ).url
        )
    retention = {"MessageRetentionPeriod": str(14 * 86400)}
    client.create_queue(QueueName=f"{name}_dlq", Attributes=retention)
    return str(client.create_queue(QueueName=name, Attributes=retention)["QueueUrl"])


class Run:
    """The state of one `python -m bench`: processes, the server, the proxies, and the report."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.report = Report(config)
        self.procs = Processes(workdir)
        self.reaper = workers.Reaper()
        self.run_id = "qmb" + uuid.uuid4().hex[:8]
        #: The OTLP receiver of the tracing scenario, made on first use.
        self.trace_receiver: trace_cost.Receiver | None = None
        self.started = time.monotonic()
        self.client: Any = None
        self.server_pid = 0
        self.profile_dir: Path | None = None

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f} s] {message}", file=sys.stderr, flush=True)

    def failed(self, what: str, exc: Exception) -> None:
        text = str(exc).strip()
        lines = text.splitlines()
        short = f"{type(exc).__name__}: {lines[0] if lines else ''}" + (f" ... {lines[-1]}" if len(lines) > 1 else "")
        self.report.notes.append(f"{what} FAILED: {short[:400]}")
        self.log(f"{what} FAILED:\n{text[-3000:]}")

    def prefix(self, impl: str, scenario: str, rtt_index: int, round_no: int = 0) -> str:
        return f"{self.run_id}{impl[0]}{scenario}{rtt_index}{round_no}"

    # -- scenarios ------------------------------------------------------------------------------

    def proxy_check(self, endpoint: str, proxies: dict[float, DelayProxy]) -> None:
        name = f"{self.run_id}_probe"
        self.client.create_queue(QueueName=name)
        n = self.config["proxy_requests"]
        targets: list[tuple[str, str, int | None]] = [("direct", endpoint + "/", None)]
        targets += [(f"proxy {rtt:g} ms", p.endpoint("probe") + "/", p.pid) for rtt, p in proxies.items()]
        for concurrency, total in ((1, max(50, n // 20)), (64, n)):
            for label, url, pid in targets:
                result = overhead.probe(url, name, concurrency=concurrency, total=total, proxy_pid=pid)
                self.report.overhead.append((label, result))
                self.log(f"proxy check {label:13} x{concurrency:<2}: {result.rate:,.0f}/s")

    def api(self, rtt_index: int, proxy: DelayProxy, order: tuple[str, ...]) -> None:
        c = self.config
        for impl in order:
            try:
                results = api_load.run_api(
                    self.procs,
                    proxy,
                    impl,
                    self.prefix(impl, "a", rtt_index),
                    levels=c["api_levels"],
                    total=c["api_requests"],
                    time_limit=c["api_seconds"],
                    server_pid=self.server_pid,
                )
            except Exception as exc:
                self.failed(f"api {proxy.rtt_ms:g} ms {impl}", exc)
                continue
            for r in results:
                self.report.api[(proxy.rtt_ms, impl, r.clients)] = r
                self.log(
                    f"{proxy.rtt_ms:g} ms api {impl:5} {r.clients:3} clients: {r.accepted} accepted, {r.rate:,.0f}/s, "
                    f"p50 {r.percentile(50):.1f} ms, {r.sends_per_message:.3f} sends/msg"
                )

    def e2e(self, rtt_index: int, proxy: DelayProxy, order: tuple[str, ...]) -> None:
        c = self.config
        for impl in order:
            try:
                result = e2e.run(
                    self.procs,
                    self.reaper,
                    self.client,
                    proxy,
                    impl,
                    self.prefix(impl, "e", rtt_index),
                    clients=c["e2e_clients"],
                    total=c["e2e_messages"],
                    time_limit=c["e2e_seconds"],
                    processes=c["e2e_processes"],
                    threads=c["threads"],
                    server_pid=self.server_pid,
                    workdir=self.workdir,
                    drain_timeout=c["drain_timeout"],
                    profile_dir=self.profile_dir,
                )
            except Exception as exc:
                self.failed(f"e2e {proxy.rtt_ms:g} ms {impl}", exc)
                continue
            self.report.e2e[(proxy.rtt_ms, impl)] = result
            if result.error:
                self.report.notes.append(f"e2e {proxy.rtt_ms:g} ms {impl}: {result.error}")
            self.log(
                f"{proxy.rtt_ms:g} ms e2e {impl:5}: {result.accepted} msgs, {result.rate:,.0f}/s, "
                f"lag {result.lag_seconds:.2f} s, {result.requests_per_message:.3f} SQS requests/msg"
            )

    def tracing(self, rtt_index: int, proxy: DelayProxy) -> None:
        """Ours end to end with tracing absent, off and on (to a local OTLP receiver): the cost as ratios."""
        c = self.config
        # One receiver for the whole run: workers stopped in the background still export at their stop.
        if self.trace_receiver is None:
            self.trace_receiver = trace_cost.Receiver()
        receiver = self.trace_receiver
        exports_before, bytes_before = receiver.requests, receiver.bytes
        results: dict[str, e2e.EndToEnd] = {}
        order = trace_cost.VARIANTS if rtt_index % 2 == 0 else trace_cost.VARIANTS[::-1]
        for name in order:
            with trace_cost.variant(name, receiver, self.workdir):
                try:
                    result = e2e.run(
                        self.procs,
                        self.reaper,
                        self.client,
                        proxy,
                        "ours",
                        self.prefix("ours", f"t{name[:2]}", rtt_index),
                        clients=c["e2e_clients"],
                        total=c["e2e_messages"],
                        time_limit=c["e2e_seconds"],
                        processes=c["e2e_processes"],
                        threads=c["threads"],
                        server_pid=self.server_pid,
                        workdir=self.workdir,
                        drain_timeout=c["drain_timeout"],
                        profile_dir=self.profile_dir / f"tracing-{name}" if self.profile_dir is not None else None,
                        # every variant's CPU read a schedule delay after the queue empties: `on`
                        # counts its last export (of every process) too
                        settle_seconds=trace_cost.SETTLE_SECONDS,
                    )
                except Exception as exc:
                    self.failed(f"tracing {proxy.rtt_ms:g} ms {name}", exc)
                    continue
            results[name] = result
            cpu = result.cpu_ms_per_message(result.api_cpu_seconds + result.worker_cpu_seconds)
            self.log(
                f"{proxy.rtt_ms:g} ms tracing {name:6}: {result.accepted} msgs, {result.rate:,.0f}/s, "
                f"API+worker CPU {cpu:.3f} ms/msg"
                + (
                    f"; collector got {receiver.requests - exports_before} exports, "
                    f"{receiver.bytes - bytes_before:,} bytes"
                    if name == "on"
                    else ""
                )
            )
        figures = trace_cost.ratios(results)
        self.report.tracing[proxy.rtt_ms] = {
            "variants": {name: r.as_dict() for name, r in results.items()},
            "ratios": figures,
            "collector": {"exports": receiver.requests - exports_before, "bytes": receiver.bytes - bytes_before},
        }
        if figures:
            self.report.notes.append(
                f"tracing at {proxy.rtt_ms:g} ms: "
                + ", ".join(f"{k.replace('_', ' ')} {v:.3f}x" for k, v in figures.items())
                + " (CPU: API + worker per message; rate: end to end)"
            )

    def status(self, rtt_index: int, proxy: DelayProxy) -> None:
        """Message status on against QM_STATUS=off: the shipped stack end to end, same run, same proxy."""
        c = self.config
        try:
            cost = status_cost.run(
                self.procs,
                self.reaper,
                self.client,
                proxy,
                lambda n: self.prefix("ours", "s", rtt_index, n),
                workdir=self.workdir,
                order_on_first=rtt_index % 2 == 0,
                clients=c["e2e_clients"],
                total=c["e2e_messages"],
                time_limit=c["e2e_seconds"],
                processes=c["e2e_processes"],
                threads=c["threads"],
                server_pid=self.server_pid,
                drain_timeout=c["drain_timeout"],
            )
        except Exception as exc:
            self.failed(f"status {proxy.rtt_ms:g} ms", exc)
            return
        self.report.status[proxy.rtt_ms] = cost
        for line in cost.lines():
            self.log(line)

    def drains(self, rtt_index: int, proxy: DelayProxy) -> None:
        c = self.config
        # (scenario, queue, messages, processes, what runs): the shipped worker on preloaded `log`
        # messages, and a bench actor of 50 ms (a controlled task) on a queue of its own.
        runs = (
            ("shipped", "log", c["drain_messages"], c["drain_processes"], workers.SHIPPED),
            ("sleep", "sleep", c["sleep_messages"], c["sleep_processes"], workers.Shape("bench", "sleep")),
        )
        for round_no in range(c["rounds"]):
            order = IMPLS if (round_no + rtt_index) % 2 == 0 else IMPLS[::-1]
            for scenario, queue, messages, processes, shape in runs:
                for impl in order:
                    prefix = self.prefix(impl, "w", rtt_index, round_no)
                    try:
                        url = _make_queue(self.client, impl, prefix, queue)
                        result = workers.drain(
                            self.procs,
                            self.reaper,
                            self.client,
                            proxy,
                            impl,
                            prefix,
                            url,
                            scenario=scenario,
                            queue=queue,
                            messages=messages,
                            processes=processes,
                            threads=c["threads"],
                            workdir=self.workdir,
                            timeout=c["drain_timeout"],
                            server_pid=self.server_pid,
                            shape=shape,
                            marks=scenario == "sleep",
                        )
                    except Exception as exc:  # one broken run must not hide the others
                        self.failed(f"{proxy.rtt_ms:g} ms round {round_no + 1} {scenario} {impl}", exc)
                        continue
                    self.report.drains.setdefault((proxy.rtt_ms, scenario, impl), []).append(result)
                    self.log(
                        f"{proxy.rtt_ms:g} ms drain {scenario:7} {impl:5}: {result.remaining_at_ready} msgs in "
                        f"{result.drain_seconds:.2f} s = {result.rate:,.0f}/s"
                    )

    def latency(self, rtt_index: int, proxy: DelayProxy, order: tuple[str, ...]) -> None:
        c = self.config
        for impl in order:
            try:
                result = latency.run(
                    self.procs,
                    self.reaper,
                    self.client,
                    proxy,
                    impl,
                    self.prefix(impl, "l", rtt_index),
                    rate=c["latency_rate"],
                    seconds=c["latency_seconds"],
                    processes=c["e2e_processes"],
                    threads=c["threads"],
                    workdir=self.workdir,
                    drain_timeout=c["drain_timeout"],
                )
            except Exception as exc:
                self.failed(f"latency {proxy.rtt_ms:g} ms {impl}", exc)
                continue
            self.report.latency[(proxy.rtt_ms, impl)] = result
            if result.error or result.unseen:
                self.report.notes.append(
                    f"latency {proxy.rtt_ms:g} ms {impl}: {result.unseen} accepted messages never started; "
                    + (result.error or "")
                )
            self.log(
                f"{proxy.rtt_ms:g} ms latency {impl:5}: {result.accepted}/{result.sent} accepted, POST -> start "
                f"p50 {result.percentile(50):.0f} ms, p99 {result.percentile(99):.0f} ms"
            )

    def payloads(self, proxy: DelayProxy, endpoint: str) -> None:
        """Large messages through S3 (ours only: stock has no such path): at this RTT on SQS and S3 alike."""
        try:
            figures = payloads.run(self.procs, endpoint, proxy, self.workdir, quick=bool(self.config.get("quick")))
        except Exception as exc:
            self.failed(f"payloads {proxy.rtt_ms:g} ms", exc)
            return
        self.report.payloads[proxy.rtt_ms] = figures
        self.log(f"{proxy.rtt_ms:g} ms payloads: 5 MiB p50 {figures.as_dict()['large_p50_ms']:,.0f} ms")

    def fleet(self, rtt_index: int, proxy: DelayProxy, order: tuple[str, ...]) -> None:
        c = self.config
        for impl in order:
            prefix = self.prefix(impl, "f", rtt_index)
            try:
                result = fleet.run(
                    self.procs,
                    self.reaper,
                    self.client,
                    proxy,
                    impl,
                    prefix,
                    _make_queue(self.client, impl, prefix, "log"),
                    messages=c["fleet_messages"],
                    processes=c["fleet_processes"],
                    threads=c["threads"],
                    workdir=self.workdir,
                    timeout=c["drain_timeout"],
                )
            except Exception as exc:
                self.failed(f"fleet {proxy.rtt_ms:g} ms {impl}", exc)
                continue
            self.report.fleet[(proxy.rtt_ms, impl)] = result
            if result.error:
                self.report.notes.append(f"fleet {proxy.rtt_ms:g} ms {impl}: {result.error}")
            self.log(f"{proxy.rtt_ms:g} ms fleet {impl:5}: started {result.started} ({result.rate:,.0f}/s)")

    def idle(self, proxies: dict[float, DelayProxy]) -> None:
        c = self.config
        queues = ["noop", "sleep"][: c["idle_queues"]]
        started = {}
        for rtt_index, (rtt, proxy) in enumerate(proxies.items()):
            for impl in IMPLS:
                try:
                    started[(rtt, impl)] = workers.idle(
                        self.procs,
                        proxy,
                        impl,
                        self.prefix(impl, "i", rtt_index),
                        queues=queues,
                        workdir=self.workdir,
                    )
                except Exception as exc:
                    self.failed(f"idle {rtt:g} ms {impl}", exc)
        self.log(f"{len(started)} idle workers up; waiting {c['idle_seconds']:.0f} s")
        settle = workers.idle_settle_seconds(c["idle_seconds"])
        time.sleep(settle)
        for idle_run in started.values():
            workers.settle_idle(idle_run)
        window = min(workers.IDLE_WINDOW_SECONDS, c["idle_seconds"] - settle)
        before = {key: r.proxy.counts(r.tag).get("ReceiveMessage", 0) for key, r in started.items()}
        time.sleep(window)
        for key, idle_run in started.items():
            idle_run.window_receives = idle_run.proxy.counts(idle_run.tag).get("ReceiveMessage", 0) - before[key]
            idle_run.window_seconds = window
        time.sleep(c["idle_seconds"] - settle - window)
        for key, idle_run in started.items():
            workers.stop_idle(idle_run, self.reaper)
            self.report.idle[key] = idle_run

    # -- the whole run --------------------------------------------------------------------------

    def run(self, only: set[str]) -> Report:
        c = self.config
        try:
            services = "sqs,s3" if "payloads" in only else "sqs"
            with ministack(self.procs, services=services) as (endpoint, server_pid), contextlib.ExitStack() as stack:
                self.server_pid = server_pid
                self.client = sqs_client(endpoint)
                proxies = {rtt: stack.enter_context(delay_proxy(self.procs, endpoint, rtt)) for rtt in c["rtts"]}
                self.log(
                    f"ministack at {endpoint}; proxies at {', '.join(f'{r:g} ms' for r in proxies)}; "
                    f"queues prefixed {self.run_id}"
                )
                try:
                    if "proxy" in only:
                        self.proxy_check(endpoint, proxies)
                    for rtt_index, proxy in enumerate(proxies.values()):
                        order = IMPLS if rtt_index % 2 == 0 else IMPLS[::-1]
                        if "api" in only:
                            self.api(rtt_index, proxy, order)
                        if "e2e" in only:
                            self.e2e(rtt_index, proxy, order)
                        # In round trips only where a round trip takes time: at every RTT above 0.
                        if "latency" in only and proxy.rtt_ms > 0:
                            self.latency(rtt_index, proxy, order)
                        if "fleet" in only and proxy.rtt_ms > 0:
                            self.fleet(rtt_index, proxy, order)
                        if "workers" in only:
                            self.drains(rtt_index, proxy)
                        if "status" in only and proxy.rtt_ms > 0:
                            self.status(rtt_index, proxy)
                        if "payloads" in only and proxy.rtt_ms > 0:
                            self.payloads(proxy, endpoint)
                        if "tracing" in only:
                            self.tracing(rtt_index, proxy)
                        if "mix" in only and proxy.rtt_ms > 0:  # every shipped message type end to end (bench/mix.py)
                            figures = mix.scenario(
                                self.procs, self.reaper, self.client, proxy, self.prefix, c, rtt_index=rtt_index,
                                server_pid=self.server_pid, workdir=self.workdir, log=self.log, failed=self.failed,
                            )  # fmt: skip
                            self.report.mix[proxy.rtt_ms] = figures
                            self.report.notes.extend(figures.notes())
                    if "idle" in only and c["idle_seconds"] > 0:
                        self.idle(proxies)
                    self.log("waiting for SIGTERMed workers to exit")
                    self.reaper.join()
                    if self.trace_receiver is not None:
                        self.trace_receiver.close()
                    for runs in self.report.drains.values():
                        for r in runs:
                            workers.collect(r)
                    for r in self.report.idle.values():
                        workers.collect(r)
                    self.report.proxies = {rtt: p.stats() for rtt, p in proxies.items()}
                    for rtt, stats in self.report.proxies.items():
                        if stats.get("errors"):
                            self.report.notes.append(f"the {rtt:g} ms proxy saw errors: {stats['errors']}")
                finally:
                    self.log(f"deleted {delete_queues(self.client, self.run_id)} queues")
        finally:
            self.procs.kill_all()
        self._notes()
        self.log("done")
        return self.report

    def _notes(self) -> None:
        slow = [
            (key, r.shutdown_seconds)
            for key, runs in self.report.drains.items()
            for r in runs
            if not math.isnan(r.shutdown_seconds) and r.shutdown_seconds > 5
        ]
        if slow:
            (rtt, scenario, impl), worst = max(slow, key=lambda x: x[1])
            self.report.notes.append(
                f"{len(slow)} worker run(s) took over 5 s from SIGTERM to exit (worst: {rtt:g} ms {scenario} {impl}, "
                f"{worst:.1f} s): a graceful stop waits for the receive in flight (ours long-polls 20 s when idle)."
            )
        errors = [f"{k}: {r.error.strip()}" for k, runs in self.report.drains.items() for r in runs if r.error]
        errors += [f"idle {k}: {r.error.strip()}" for k, r in self.report.idle.items() if r.error]
        self.report.notes.extend(errors)


def _floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer messages and requests, no idle test")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated: {', '.join(SCENARIOS)}")
    parser.add_argument("--sqs-rtt-ms", type=_floats, help="round-trip times to run at, ms (default 0,15)")
    parser.add_argument("--json", type=Path, default=ROOT / ".state" / "bench.json", help="where to write the JSON")
    parser.add_argument("--detail", action="store_true", help="also print SQS requests per message by action")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (process logs)")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy the APIs and workers of the end-to-end runs into DIR"
    )
    parser.add_argument(
        "--ours-env",
        action="append",
        default=[],
        metavar="QM_NAME=VALUE",
        help="a setting for our APIs and workers (repeatable), e.g. to weigh one against its default",
    )
    numbers = {
        "rounds": (int, "rounds of each worker drain (median shown)"),
        "drain_messages": (int, "log messages preloaded for the shipped worker's drain"),
        "sleep_messages": (int, "messages preloaded for the 50 ms drain"),
        "idle_seconds": (float, "how long the idle workers idle (0 skips)"),
        "api_requests": (int, "requests per API concurrency level"),
        "api_seconds": (float, "time cap per API concurrency level"),
        "e2e_clients": (int, "concurrent clients in the end-to-end run"),
        "e2e_messages": (int, "messages in the end-to-end run"),
        "e2e_seconds": (float, "time cap of the end-to-end load"),
        "e2e_processes": (int, "worker processes in the end-to-end run"),
        "proxy_requests": (int, "calls per proxy check at 64 concurrent"),
        "latency_rate": (float, "POSTs per second of the fixed-rate run"),
        "latency_seconds": (float, "how long the fixed-rate run posts"),
        "fleet_messages": (int, "log messages the two-master fleet shares"),
    }
    for name, (kind, text) in numbers.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"{text} (default {FULL[name]})")
    parser.add_argument("--api-levels", type=_ints, help="API client counts (default 16,64)")
    args = parser.parse_args(argv)
    config = dict(QUICK if args.quick else FULL)
    config["quick"] = bool(args.quick)
    for name in [*numbers, "api_levels"]:
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    if args.sqs_rtt_ms is not None:
        config["rtts"] = args.sqs_rtt_ms
    if any(r < 0 for r in config["rtts"]):
        parser.error("--sqs-rtt-ms takes round-trip times of 0 or more")
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    if only - set(SCENARIOS):
        parser.error(f"--only takes {', '.join(SCENARIOS)}, not {', '.join(sorted(only - set(SCENARIOS)))}")
    args.only_set = only
    for item in args.ours_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("QM_"):
            parser.error(f"--ours-env takes QM_NAME=VALUE, not {item!r}")
        OURS_ENV[name] = value
    config["ours_env"] = dict(OURS_ENV)
    return args, config


def main(argv: list[str] | None = None) -> int:
    args, config = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = scratch_dir()
    ok = False
    try:
        run = Run(config, workdir)
        if args.profile is not None:
            profile.py_spy()  # fail now, not after minutes of work
            run.profile_dir = args.profile
        report = run.run(args.only_set)
        print(report.render())
        if args.detail:
            print()
            print(report.render_detail())
        if args.profile is not None:
            for path in sorted(args.profile.glob("*ms-*.txt")):
                print()
                print(profile.summarise(path))
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        print(f"\nJSON: {args.json}", file=sys.stderr)
        ok = True
    finally:
        if args.keep or not ok:
            print(f"logs: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    missed = report.missed()
    if missed:  # a missed target fails `make bench`, as a failed test fails `make test`
        print("MISSED: " + "; ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
