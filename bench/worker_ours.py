"""`dramatiq bench.worker_ours`: the shipped actors and broker (`broker.py`, from the environment), plus bench actors.

QM_QUEUE_PREFIX and QM_WORKER_METRICS_PORT come from the bench; everything else is the default. The
bench actors are for scenarios that need a controlled task (50 ms, or nothing at all); they run on
queues of their own beside the shipped `webhook` and `ordered` queues.
"""

from __future__ import annotations

import dramatiq

from actors import broker
from bench import actors

bench_noop = dramatiq.actor(actor_name="bench_noop", queue_name="noop", broker=broker)(actors.noop)
bench_sleep = dramatiq.actor(actor_name="bench_sleep", queue_name="sleep", broker=broker)(actors.sleep)

__all__ = ["bench_noop", "bench_sleep", "broker"]
