"""Make the embedded SQS server answer a waiting long poll as soon as a message is sent, as SQS does.

ministack checks a waiting ReceiveMessage only every 100 ms (`_act_receive_message` sleeps
`asyncio.sleep(min(0.1, ...))` between looks at the queue), so a message sent to an idle queue
waited 50 ms on average, 100 ms at worst, before its long poll returned it. Real SQS answers at once.
Every place ministack's sqs module makes a message receivable (a send, a visibility set to 0, a move
to a dead-letter queue) calls `esm_wake.set()`. `install` gives that module a `sleep` that returns
early when that happens, and an `esm_wake` whose `set()` also ends those sleeps: each woken receive
looks at its queue again at once (a wake for another queue costs it one look). Nothing on disk changes.
A send on the server's loop (every HTTP request) cannot come between a receive's look and its sleep;
one from another thread (ministack's in-process callers) that does is seen at the next 100 ms look.

This file runs inside ministack's own interpreter (its venv, which has no queue_manager):
`queue_manager.local_sqs`'s bootstrap loads it by path and calls `install()` before the server
starts. It imports only the standard library. If an upgrade of ministack renames what it relies on,
`install` changes nothing and says so in one line: long polls then answer on ministack's own looks.
tests/test_local_sqs_wake.py guards those names.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import threading
import types
from typing import Any

#: ministack's SQS service module, and what `install` needs of it.
SQS_MODULE = "ministack.services.sqs"
RECEIVE = "_act_receive_message"
WAKE = "esm_wake"

#: How the one line that says the server runs unpatched ends (the bench looks for it in the server's log).
UNPATCHED = "long polls answer on ministack's own 100 ms looks."


class Sleepers:
    """Sleeps that end early on `wake()`, from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sleeping: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    async def sleep(self, delay: float, result: Any = None) -> Any:
        """`asyncio.sleep(delay, result)`, ended early by `wake()`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(max(0.0, delay), _release, future)
        entry = (loop, future)
        with self._lock:
            self._sleeping.add(entry)
        try:
            await future
        finally:
            timer.cancel()
            with self._lock:
                self._sleeping.discard(entry)
        return result

    def wake(self) -> None:
        """End every sleep under way: at once on the calling thread's loop, through the loop's own
        thread (`call_soon_threadsafe`) for any other."""
        with self._lock:
            sleeping = list(self._sleeping)
        if not sleeping:
            return
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, future in sleeping:
            if loop is here:
                _release(future)
            else:
                with contextlib.suppress(RuntimeError):  # that loop is closed: nothing of it waits any more
                    loop.call_soon_threadsafe(_release, future)


def _release(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WakingEvent:
    """A `threading.Event` whose `set()` also wakes the sleepers; every other use goes to the event
    (ministack's Lambda event-source poller waits on and clears the same one)."""

    def __init__(self, event: threading.Event, sleepers: Sleepers) -> None:
        self._event = event
        self._sleepers = sleepers

    def set(self) -> None:
        self._event.set()
        self._sleepers.wake()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._event, name)


def missing(module: types.ModuleType) -> list[str]:
    """What `install` needs of ministack's sqs module and does not find there."""
    gaps = []
    if not isinstance(getattr(module, WAKE, None), threading.Event):
        gaps.append(f"{WAKE} (a threading.Event)")
    if getattr(module, "asyncio", None) is not asyncio:
        gaps.append("asyncio (the module)")
    receive = getattr(module, RECEIVE, None)
    names = set(getattr(getattr(receive, "__code__", None), "co_names", ()))
    if not {"asyncio", "sleep"} <= names:
        gaps.append(f"{RECEIVE} calling asyncio.sleep")
    return gaps


def patch(module: types.ModuleType) -> bool:
    """Give `module` (ministack's sqs module) the waking sleep and event; False, changing nothing and
    saying why in one line, if it lacks what that needs."""
    gaps = missing(module)
    if gaps:
        print(
            f"local SQS: ministack's {module.__name__} no longer has {', '.join(gaps)}; {UNPATCHED}",
            file=sys.stderr,
            flush=True,
        )
        return False
    sleepers = Sleepers()
    shim = types.ModuleType("asyncio", asyncio.__doc__)
    shim.__dict__.update(asyncio.__dict__)
    shim.sleep = sleepers.sleep  # type: ignore[attr-defined]
    setattr(module, WAKE, WakingEvent(getattr(module, WAKE), sleepers))
    module.asyncio = shim  # type: ignore[attr-defined]
    return True


def install() -> bool:
    """Patch ministack's sqs module in this interpreter (before the server starts)."""
    try:
        module = importlib.import_module(SQS_MODULE)
    except Exception as exc:  # any failure leaves the server as it is
        print(
            f"local SQS: cannot import {SQS_MODULE} ({exc!r}); {UNPATCHED}",
            file=sys.stderr,
            flush=True,
        )
        return False
    return patch(module)
