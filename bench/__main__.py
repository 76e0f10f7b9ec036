"""`python -m bench [--quick]`: our worker and API against stock Dramatiq + dramatiq-sqs, same server, same run.

See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

from bench import api_load, workers
from bench.common import Processes, delete_queues, ministack, scratch_dir, sqs_client
from bench.report import Report

FULL = {
    "rounds": 3,
    "noop_messages": 2000,
    "noop_processes": 2,
    "sleep_messages": 600,
    "threads": 10,
    "drain_timeout": 60.0,
    "idle_seconds": 30.0,
    "idle_queues": 2,
    "api_levels": [1, 16, 64],
    "api_requests": 3000,
    "api_seconds": 8.0,
}

QUICK = {
    **FULL,
    "rounds": 1,
    "noop_messages": 2000,
    "sleep_messages": 400,
    "drain_timeout": 30.0,
    "idle_seconds": 0.0,
    "api_requests": 1000,
    "api_seconds": 4.0,
}

IMPLS = ("ours", "stock")


def _terminate(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


def _make_queue(client: Any, impl: str, prefix: str, queue: str) -> str:
    """Create the queue (and its DLQ) the way each implementation would, so the preload has a target."""
    name = f"{prefix}_{queue}"
    if impl == "ours":
        from queue_manager.settings import Settings
        from queue_manager.sqs import admin

        defaults = Settings()
        return str(
            admin.ensure_queue(
                client,
                name,
                max_receive_count=defaults.max_retries + 1,
                visibility_timeout_seconds=defaults.visibility_timeout_seconds,
            ).url
        )
    retention = {"MessageRetentionPeriod": str(14 * 86400)}
    client.create_queue(QueueName=f"{name}_dlq", Attributes=retention)
    return str(client.create_queue(QueueName=name, Attributes=retention)["QueueUrl"])


def _log(message: str, started: float) -> None:
    print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)


def run(config: dict[str, Any], *, workdir: Path, only: set[str]) -> Report:
    report = Report(config)
    procs = Processes(workdir)
    reaper = workers.Reaper()
    run_id = "qmb" + uuid.uuid4().hex[:8]
    started = time.monotonic()
    try:
        with ministack(procs) as (endpoint, server_pid):
            _log(f"ministack at {endpoint}; queues prefixed {run_id}", started)
            client = sqs_client(endpoint)
            try:
                if "workers" in only:
                    for round_no in range(config["rounds"]):
                        order = IMPLS if round_no % 2 == 0 else IMPLS[::-1]
                        for scenario, messages, processes in (
                            ("noop", config["noop_messages"], config["noop_processes"]),
                            ("sleep", config["sleep_messages"], 1),
                        ):
                            for impl in order:
                                prefix = f"{run_id}{impl[0]}{round_no}"
                                try:
                                    url = _make_queue(client, impl, prefix, scenario)
                                    result = workers.drain(
                                        procs,
                                        reaper,
                                        client,
                                        endpoint,
                                        impl,
                                        prefix,
                                        url,
                                        scenario=scenario,
                                        queue=scenario,
                                        messages=messages,
                                        processes=processes,
                                        threads=config["threads"],
                                        workdir=workdir,
                                        timeout=config["drain_timeout"],
                                        server_pid=server_pid,
                                        marks=scenario == "sleep",
                                    )
                                except Exception as exc:  # one broken run must not hide the others
                                    _failed(report, f"round {round_no + 1} {scenario} {impl}", exc, started)
                                    continue
                                report.drains.setdefault((scenario, impl), []).append(result)
                                _log(
                                    f"round {round_no + 1} {scenario:5} {impl:5}: {result.remaining_at_ready} msgs in "
                                    f"{result.drain_seconds:.2f} s = {result.rate:,.0f}/s",
                                    started,
                                )
                if "idle" in only and config["idle_seconds"] > 0:
                    queues = ["noop", "sleep"][: config["idle_queues"]]
                    idle_runs = {}
                    for impl in IMPLS:
                        try:
                            idle_runs[impl] = workers.idle(
                                procs, reaper, endpoint, impl, f"{run_id}{impl[0]}i", queues=queues, workdir=workdir
                            )
                        except Exception as exc:
                            _failed(report, f"idle {impl}", exc, started)
                    _log(f"idle workers up; waiting {config['idle_seconds']:.0f} s", started)
                    time.sleep(config["idle_seconds"])
                    for impl, idle_run in idle_runs.items():
                        workers.stop_idle(idle_run, reaper)
                        report.idle[impl] = idle_run
                if "api" in only:
                    for impl in IMPLS:
                        try:
                            results = api_load.run_api(
                                procs,
                                endpoint,
                                impl,
                                f"{run_id}{impl[0]}a",
                                levels=config["api_levels"],
                                total=config["api_requests"],
                                time_limit=config["api_seconds"],
                                server_pid=server_pid,
                            )
                        except Exception as exc:
                            _failed(report, f"api {impl}", exc, started)
                            continue
                        for result in results:
                            report.api[(impl, result.clients)] = result
                            _log(
                                f"api {impl:5} {result.clients:3} clients: {result.accepted} accepted, "
                                f"{result.rate:,.0f}/s, p99 {result.percentile(99):.1f} ms",
                                started,
                            )
                _log("waiting for SIGTERMed workers to exit", started)
                reaper.join()
                for runs in report.drains.values():
                    for r in runs:
                        workers.collect(r)
                for r in report.idle.values():
                    workers.collect(r)
            finally:
                deleted = delete_queues(client, run_id)
                _log(f"deleted {deleted} queues", started)
    finally:
        procs.kill_all()
    _notes(report)
    _log("done", started)
    return report


def _failed(report: Report, what: str, exc: Exception, started: float) -> None:
    text = str(exc).strip()
    lines = text.splitlines()
    short = f"{type(exc).__name__}: {lines[0] if lines else ''}" + (f" ... {lines[-1]}" if len(lines) > 1 else "")
    report.notes.append(f"{what} FAILED: {short[:400]}")
    _log(f"{what} FAILED:\n{text[-3000:]}", started)


def _notes(report: Report) -> None:
    slow = [
        (s, i, r.shutdown_seconds)
        for (s, i), runs in report.drains.items()
        for r in runs
        if not math.isnan(r.shutdown_seconds) and r.shutdown_seconds > 5
    ]
    if slow:
        worst = max(slow, key=lambda x: x[2])
        report.notes.append(
            f"{len(slow)} worker run(s) took over 5 s from SIGTERM to exit (worst: {worst[0]} {worst[1]}, "
            f"{worst[2]:.1f} s): a graceful stop waits for the receive in flight (ours long-polls 20 s when idle)."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run: one round, fewer messages, no idle test")
    parser.add_argument("--only", default="workers,idle,api", help="comma-separated: workers, idle, api")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, stats files)")
    args = parser.parse_args(argv)
    config = dict(QUICK if args.quick else FULL)
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    signal.signal(signal.SIGTERM, _terminate)
    workdir = scratch_dir()
    ok = False
    try:
        report = run(config, workdir=workdir, only=only)
        print(report.render())
        if args.json:
            args.json.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        ok = True
    finally:
        if args.keep or not ok:
            print(f"logs and stats files: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
