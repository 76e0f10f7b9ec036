"""`dramatiq actors bench.marks`: the shipped actors, with `log` marking when it starts each message.

The shipped `log` actor keeps its name, queue and options; only its body is wrapped, to append
"<time.time()> <bench id> <pid>" to BENCH_MARKS first and then run the shipped body. Everything
else is `dramatiq actors` as shipped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from actors import log as shipped
from bench.actors import mark_start

_shipped_body: Callable[[dict[str, Any]], None] = shipped.log.fn


def _marked_log(payload: dict[str, Any]) -> None:
    mark_start(payload)
    _shipped_body(payload)


shipped.log.fn = _marked_log
