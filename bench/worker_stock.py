"""`dramatiq bench.worker_stock`: the baseline, stock dramatiq_sqs.SQSBroker with default middleware."""

from __future__ import annotations

import os

import dramatiq
from dramatiq_sqs import SQSBroker

from bench import actors

broker = SQSBroker(
    namespace=os.environ["BENCH_NAMESPACE"],
    dead_letter=True,
    endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"],
    region_name=os.environ.get("AWS_REGION", "us-east-1"),
)
dramatiq.set_broker(broker)

bench_noop = dramatiq.actor(actor_name="bench_noop", queue_name="noop", broker=broker)(actors.noop)
bench_sleep = dramatiq.actor(actor_name="bench_sleep", queue_name="sleep", broker=broker)(actors.sleep)
log = dramatiq.actor(actor_name="log", queue_name="log", broker=broker)(actors.log)
