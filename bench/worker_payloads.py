"""`dramatiq bench.worker_payloads`: the shipped broker (`broker.build_broker`, from the environment) with a `log`
actor that marks when it finished a message: "<time.time()> <bench id> <pid>" in BENCH_MARKS.

The large-message bench times POST -> actor finished; the shipped `log` actor would write its
5 MiB of fields to the log, which is not what is measured.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from bench import actors
from broker import build_broker
from queue_manager.settings import Settings

broker = build_broker(Settings.from_env())
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="log", queue_name="log", broker=broker)
def log(payload: dict[str, Any]) -> None:
    """Marks the message finished (the fetch of an offloaded body happened before, inside its processing)."""
    actors.mark_start(payload)


__all__ = ["broker", "log"]
