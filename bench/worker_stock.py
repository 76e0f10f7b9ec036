"""`dramatiq bench.worker_stock`: the baseline, stock dramatiq_sqs.SQSBroker with default middleware.

Its SQS requests are counted with a botocore hook and written to
BENCH_STATS_DIR/worker-<pid>.json when the worker shuts down.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq_sqs import SQSBroker

from bench import actors
from bench.counting import RequestCounter


class WriteStats(dramatiq.Middleware):
    def __init__(self, counter: RequestCounter, stats_dir: str | None) -> None:
        self.counter = counter
        self.stats_dir = stats_dir

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.stats_dir:
            path = Path(self.stats_dir) / f"worker-{os.getpid()}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"sqs_requests": self.counter.snapshot()}, sort_keys=True))


counter = RequestCounter()
broker = SQSBroker(
    namespace=os.environ["BENCH_NAMESPACE"],
    dead_letter=True,
    endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"],
    region_name=os.environ.get("AWS_REGION", "us-east-1"),
)
broker.sqs.meta.client.meta.events.register("before-call.sqs", counter)
broker.add_middleware(WriteStats(counter, os.environ.get("BENCH_STATS_DIR")))
dramatiq.set_broker(broker)

bench_noop = dramatiq.actor(actor_name="bench_noop", queue_name="noop", broker=broker)(actors.noop)
bench_sleep = dramatiq.actor(actor_name="bench_sleep", queue_name="sleep", broker=broker)(actors.sleep)
