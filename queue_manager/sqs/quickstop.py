"""Quick stops of a `dramatiq` worker process: two of the CLI's one-second waits, cut from inside.

Dramatiq 2.2's CLI and Worker poll on the way out; nothing of ours is slow, but a stop paid for
their polls one after the other. Both cuts act on this process's own Worker and signal handler,
chosen at its boot (no Dramatiq code is patched), and both fall back to Dramatiq's own way where
their conditions do not hold:

* The worker threads wait for work in `work_queue.get(timeout=1)` and look at their `running` flag
  only between two waits, so `Worker.stop` joined them up to 1 s after it told them to stop.
  `StoppingWorkQueue` is that queue (the broker puts it on the Worker when it boots, before the
  threads exist) with one more state: once the broker has drained (`stop_waiting`), a wait lasts at
  most `STOPPING_WAIT_SECONDS`, and the waits under way end now, so a thread sees that it was told
  to stop within that. An idle thread wakes no more often than before.

* The worker process's main thread sleeps in one-second steps (`while running: time.sleep(1)`)
  and only then calls `Worker.stop`; its SIGTERM (and SIGHUP) handler just sets `running`.
  `chain_signal_handlers` puts a handler before it that calls it (so its log line, and a second
  signal's exit, are Dramatiq's) and then, if the signal interrupted that idle loop itself, does
  at once what the CLI does after the loop: `worker.stop(...)`, `broker.close()`, closing its log
  pipe, and exits with the code the CLI would return (0). The CLI's own calls are then never
  reached, so the worker stops once and logs its lines once. A signal handled anywhere else (the
  main thread inside a call, where it may hold a lock the stop needs) is left to the CLI's loop.

The third wait, the master's log watcher (`multiprocessing.connection.wait(pipes, timeout=1)`,
joined after the last worker process exited), is in the master, where none of our code runs: an
exit costs about 1 s more there (see the README's "Stopping a worker").
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from queue import Empty, PriorityQueue
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

#: The longest a worker thread waits for work once the worker stops: how soon it sees it must stop.
STOPPING_WAIT_SECONDS = 0.02

#: The signals whose Dramatiq handler in a worker process stops it.
STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)

#: What the CLI's worker process returns when its loop ends (dramatiq.cli.RET_OK).
EXIT_OK = 0


class StoppingWorkQueue(PriorityQueue[Any]):
    """Dramatiq's work queue, whose timed waits end early once the worker stops (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self._stopping = False

    def stop_waiting(self) -> None:
        """From now on a timed wait lasts at most STOPPING_WAIT_SECONDS; those under way end by then."""
        with self.not_empty:
            self._stopping = True
            self.not_empty.notify_all()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block or timeout is None:
            return super().get(block, timeout)
        # queue.Queue.get with a timeout, but its deadline shortens when the worker stops.
        with self.not_empty:
            wait_shortened_at_stop(self.not_empty, self._qsize, timeout, lambda: self._stopping, STOPPING_WAIT_SECONDS)
            if not self._qsize():
                raise Empty
            item = self._get()
            self.not_full.notify()
            return item


def wait_shortened_at_stop(
    cond: threading.Condition,
    ready: Callable[[], object],
    timeout: float,
    stopping: Callable[[], bool],
    stop_wait: float,
) -> None:
    """Wait on `cond` (held by the caller) until `ready()`, for at most `timeout` seconds; once
    `stopping()`, for at most `stop_wait` more, a wait under way included (a stop notifies `cond`)."""
    deadline = time.monotonic() + timeout
    while not ready():
        now = time.monotonic()
        if stopping():
            deadline = min(deadline, now + stop_wait)
        if now >= deadline:
            return
        cond.wait(deadline - now)


def use_stopping_work_queue(worker: Any) -> None:
    """Give a booting Worker a StoppingWorkQueue; its threads and consumers are created after this."""
    queue = getattr(worker, "work_queue", None)
    if isinstance(queue, PriorityQueue) and not isinstance(queue, StoppingWorkQueue) and queue.empty():
        worker.work_queue = StoppingWorkQueue()


def stop_waiting(worker: Any) -> None:
    """The worker's threads are about to be told to stop: let them see it at once."""
    queue = getattr(worker, "work_queue", None)
    if isinstance(queue, StoppingWorkQueue):
        queue.stop_waiting()


def _is_dramatiq_termhandler(handler: Any) -> bool:
    return (
        callable(handler)
        and getattr(handler, "__module__", None) == "dramatiq.cli"
        and getattr(handler, "__qualname__", None) == "worker_process.<locals>.termhandler"
    )


def chain_signal_handlers(worker: Any) -> bool:
    """In a `dramatiq` worker process, stop `worker` as soon as a stop signal comes (see the module).

    Does nothing (returns False) outside the CLI's worker process: when the handlers in place are
    not its own, or off the main thread, where handlers cannot be set.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    chained = False
    for signum in STOP_SIGNALS:
        previous = signal.getsignal(signum)
        if _is_dramatiq_termhandler(previous):
            signal.signal(signum, _handler(worker, previous))
            chained = True
    return chained


def _handler(worker: Any, previous: Any) -> Any:
    def stop_now(signum: int, frame: FrameType | None) -> None:
        # Dramatiq's handler first: it logs "Stopping worker process..." and ends the loop (or, on a
        # second signal, exits at once by raising SystemExit, which goes on from here untouched).
        previous(signum, frame)
        cli = _idle_loop(frame, worker)
        if cli is None:
            return  # the CLI's loop stops the worker within a second, as without this handler
        args, broker, logging_pipe = cli
        # What dramatiq.cli.worker_process does after its loop, in its order; then its return.
        worker.stop(timeout=args.worker_shutdown_timeout)
        broker.close()
        logging_pipe.close()
        raise SystemExit(EXIT_OK)

    return stop_now


def _idle_loop(frame: FrameType | None, worker: Any) -> tuple[Any, Any, Any] | None:
    """What the CLI's loop would stop with, if `frame` is that loop for `worker` and was just told to stop.

    The frame is the CLI's `worker_process` itself (not a call it makes: those may hold locks), its
    Worker is ours, its `running` was set False by the handler just run, and its `args`, `broker`
    and `logging_pipe` are what the code after the loop uses. Any other case: None.
    """
    cli = sys.modules.get("dramatiq.cli")
    worker_process = getattr(cli, "worker_process", None)
    if frame is None or worker_process is None or frame.f_code is not getattr(worker_process, "__code__", None):
        return None
    names = frame.f_locals
    if names.get("worker") is not worker or names.get("running") is not False:
        return None
    args, broker, logging_pipe = names.get("args"), names.get("broker"), names.get("logging_pipe")
    if broker is not getattr(worker, "broker", None):
        return None
    if not isinstance(getattr(args, "worker_shutdown_timeout", None), int):
        return None
    if not callable(getattr(logging_pipe, "close", None)):
        return None
    return args, broker, logging_pipe
