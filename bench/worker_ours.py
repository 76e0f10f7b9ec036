"""`dramatiq bench.worker_ours`: our broker (broker.build_broker from the environment) and the bench actors.

QM_QUEUE_PREFIX and QM_WORKER_METRICS_PORT come from the bench; everything else is the default.
"""

from __future__ import annotations

import dramatiq

from bench import actors
from broker import broker

bench_noop = dramatiq.actor(actor_name="bench_noop", queue_name="noop", broker=broker)(actors.noop)
bench_sleep = dramatiq.actor(actor_name="bench_sleep", queue_name="sleep", broker=broker)(actors.sleep)
log = dramatiq.actor(actor_name="log", queue_name="log", broker=broker)(actors.log)

__all__ = ["bench_noop", "bench_sleep", "broker", "log"]
