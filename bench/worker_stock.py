"""`dramatiq bench.worker_stock`: the baseline, stock dramatiq_sqs.SQSBroker with default middleware.

It declares the shipped message types' queues (`log`, `webhook`, `ordered`; all standard queues,
as stock has no FIFO support; `webhook` and `ordered` POST as the shipped actors do, see
bench/actors.py) and the bench's own (`noop`, `sleep`); the bench picks the queues with
`--queues`, the same number ours consumes.
"""

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

log = dramatiq.actor(actor_name="log", queue_name="log", broker=broker)(actors.stock_log)
webhook = dramatiq.actor(actor_name="webhook", queue_name="webhook", broker=broker)(actors.stock_webhook)
ordered = dramatiq.actor(actor_name="ordered", queue_name="ordered", broker=broker)(actors.stock_webhook)
bench_noop = dramatiq.actor(actor_name="bench_noop", queue_name="noop", broker=broker)(actors.noop)
bench_sleep = dramatiq.actor(actor_name="bench_sleep", queue_name="sleep", broker=broker)(actors.sleep)
