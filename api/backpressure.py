"""An optional ceiling on queue depth: above it the API answers 429 instead of piling on."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor

from queue_manager.sqs.broker import QMBroker

logger = logging.getLogger(__name__)

#: How old a depth reading may be before it is read again (in the background).
REFRESH_SECONDS = 2.0


class DepthGuard:
    """Knows, at most a few seconds late, whether a queue is over its ceiling; never blocks a request."""

    def __init__(self, broker: QMBroker, executor: Executor, *, max_depth: int) -> None:
        self.broker = broker
        self.executor = executor
        self.max_depth = max_depth
        self._depths: dict[str, int] = {}
        self._read_at: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def over(self, queue_name: str) -> int | None:
        """The last depth read if it is at or over the ceiling, else None; refreshes stale readings."""
        if not self.max_depth:
            return None
        if time.monotonic() - self._read_at.get(queue_name, 0.0) > REFRESH_SECONDS:
            self._read_at[queue_name] = time.monotonic()
            task = asyncio.get_running_loop().create_task(self._refresh(queue_name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        depth = self._depths.get(queue_name, 0)
        return depth if depth >= self.max_depth else None

    async def _refresh(self, queue_name: str) -> None:
        try:
            depths = await asyncio.get_running_loop().run_in_executor(self.executor, self.broker.depths, queue_name)
        except Exception as exc:  # a failed reading keeps the last one; sends report SQS trouble themselves
            logger.warning("Could not read the depth of %r: %s.", queue_name, exc)
            return
        self._depths[queue_name] = depths["queue"]["visible"] + depths["queue"]["delayed"]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
