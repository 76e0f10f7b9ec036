"""`python -m bench.state`: what the fleet state store (DynamoDB) costs a keyed message, against SQLite.

One run, one ministack (SQS and DynamoDB) behind the bench's delaying proxy (`--rtt-ms` on every
SQS and DynamoDB call, counted by action): our API with its idempotency keys in SQLite (the
baseline), then in DynamoDB (`QM_STATE_TABLE`); each takes `--messages` keyed POSTs from
`--clients` clients, then the same keys again (replays). Then the status half: `DynamoStatusEvents`
writes three events for each of `--messages` messages, 25 messages per write, through the proxy.

Printed: requests per message by action, the rate and the latency of each, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp

from bench.common import (
    AWS_ENV,
    Processes,
    answers,
    child_env,
    delay_proxy,
    diff,
    free_port,
    ministack,
    scratch_dir,
    wait_for,
)

DYNAMODB_ACTIONS = ("PutItem", "UpdateItem", "GetItem", "DeleteItem", "BatchWriteItem", "Query", "DescribeTable")


async def _post_keyed(url: str, keys: list[str], clients: int) -> tuple[float, list[float], Counter[int]]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    todo = list(keys)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        start = time.perf_counter()

        async def client() -> None:
            while todo:
                key = todo.pop()
                t0 = time.perf_counter()
                document = {"type": "log", "payload": {"message": key}}
                async with session.post(url, json=document, headers={"Idempotency-Key": key}) as r:
                    await r.read()
                    statuses[r.status] += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - start, sorted(latencies), statuses


def _p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_api(procs: Processes, proxy: object, store: str, messages: int, clients: int, work: Path) -> dict[str, object]:
    from bench.common import DelayProxy

    assert isinstance(proxy, DelayProxy)
    tag = f"state-{store}"
    prefix = "b" + uuid.uuid4().hex[:8]
    extra = {"QM_STATE_DIR": str(work / tag), "QM_LOG_LEVEL": "WARNING"}
    if store == "dynamodb":
        extra["QM_STATE_TABLE"] = f"{prefix}-state"
    port = free_port()
    command = [sys.executable, "-m", "bench.api_server", "ours", str(port), prefix]
    # child_env points AWS_ENDPOINT_URL (DynamoDB's fallback) at the proxy too, under the same tag.
    process, log = procs.start(command, env=child_env(proxy.endpoint(tag), extra), log_name=tag)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: "READY" in log.read_text(errors="replace") or process.poll() is not None, timeout=60, what=tag)
    if process.poll() is not None or not answers(base + "/messages"):
        raise SystemExit(f"the {store} API did not start:\n{log.read_text(errors='replace')[-3000:]}")
    try:
        keys = [f"k-{i}" for i in range(messages)]
        asyncio.run(_post_keyed(base + "/messages", [f"warm-{i}" for i in range(20)], 4))
        before = proxy.counts(tag)
        seconds, latencies, statuses = asyncio.run(_post_keyed(base + "/messages", list(keys), clients))
        first = diff(proxy.counts(tag), before)
        before = proxy.counts(tag)
        replay_seconds, replay_latencies, replay_statuses = asyncio.run(
            _post_keyed(base + "/messages", list(keys), clients)
        )
        replays = diff(proxy.counts(tag), before)
    finally:
        Processes.stop(process, timeout=15)
    return {
        "store": store,
        "statuses": dict(statuses),
        "replay_statuses": dict(replay_statuses),
        "rate": messages / seconds,
        "p50": _p(latencies, 0.5),
        "p99": _p(latencies, 0.99),
        "replay_p50": _p(replay_latencies, 0.5),
        "first": {k: v / messages for k, v in first.items()},
        "replays": {k: v / messages for k, v in replays.items()},
        "replay_rate": messages / replay_seconds,
    }


def run_status(proxy: object, messages: int) -> dict[str, object]:
    from bench.common import DelayProxy
    from queue_manager.settings import Settings
    from queue_manager.state import dynamodb
    from queue_manager.state.base import ACCEPTED, STARTED, SUCCEEDED, StatusEvent
    from queue_manager.state.dynamodb import DynamoStatusEvents

    assert isinstance(proxy, DelayProxy)
    settings = Settings(state_table="b" + uuid.uuid4().hex[:8] + "-status", state_endpoint_url=proxy.endpoint("status"))
    client = dynamodb.client(settings, timeout_seconds=dynamodb.TABLE_CALL_TIMEOUT_SECONDS)
    assert settings.state_table is not None
    dynamodb.ensure_table(client, settings.state_table, create=True)
    store = DynamoStatusEvents(client, settings.state_table)
    now = time.time()
    ids = [uuid.uuid4().hex for _ in range(messages)]
    before = proxy.counts("status")
    started = time.perf_counter()
    for start in range(0, messages, 25):
        store.write(
            [
                StatusEvent(m, kind, now + i, attempt=0 if kind == ACCEPTED else 1)
                for m in ids[start : start + 25]
                for i, kind in enumerate((ACCEPTED, STARTED, SUCCEEDED))
            ]
        )
    seconds = time.perf_counter() - started
    counts = diff(proxy.counts("status"), before)
    assert all(len(store.read(m)) == 3 for m in ids[:5])
    return {
        "per_message": {k: v / messages for k, v in counts.items()},
        "ms_per_write": seconds * 1000 / -(-messages // 25),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.state", description=__doc__.splitlines()[0])
    parser.add_argument("--rtt-ms", type=float, default=15.0, help="added to every SQS and DynamoDB call (default 15)")
    parser.add_argument("--messages", type=int, default=400, help="keyed POSTs per store (default 400)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ENV)  # the status half runs here, on the local server's credentials
    work = scratch_dir()
    procs = Processes(work)
    try:
        with ministack(procs, services="sqs,dynamodb") as (url, _), delay_proxy(procs, url, args.rtt_ms) as proxy:
            results = [
                run_api(procs, proxy, store, args.messages, args.clients, work) for store in ("sqlite", "dynamodb")
            ]
            status = run_status(proxy, args.messages)
    finally:
        procs.kill_all()
    print(f"keyed POSTs: {args.messages} keys, {args.clients} clients, {args.rtt_ms:g} ms per call")
    for r in results:
        store_first = sum(v for k, v in r["first"].items() if k in DYNAMODB_ACTIONS)  # type: ignore[attr-defined]
        store_replay = sum(v for k, v in r["replays"].items() if k in DYNAMODB_ACTIONS)  # type: ignore[attr-defined]
        print(
            f"  {r['store']:8}  {r['rate']:7.0f} msg/s  p50 {r['p50']:6.1f} ms  p99 {r['p99']:6.1f} ms  "
            f"store requests/msg {store_first:.2f}  replays: p50 {r['replay_p50']:.1f} ms, store requests/replay "
            f"{store_replay:.2f}  statuses {r['statuses']} {r['replay_statuses']}"
        )
        print(f"            per message by action: {r['first']}; per replay: {r['replays']}")
    base, fleet = results
    print(
        f"  dynamodb / sqlite: rate {fleet['rate'] / base['rate']:.2f}x, "  # type: ignore[operator]
        f"p50 {fleet['p50'] / base['p50']:.2f}x"  # type: ignore[operator]
    )
    print(
        f"status events (3 per message, 25 messages per write): {status['per_message']} requests per message, "
        f"{status['ms_per_write']:.1f} ms per write"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
