"""What tracing costs: our end-to-end run three ways in one invocation, the same load each time.

- `absent`: OpenTelemetry cannot be imported (a package of that name on PYTHONPATH that raises
  ImportError) while an endpoint is set, so `queue_manager.tracing.setup` stops before the SDK, as
  on an install without the `tracing` extra;
- `off`: the SDK installed, nothing configured (the default: every hook returns at once);
- `on`: OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local OTLP/HTTP receiver (this module, in a
  thread of the bench), the default batch span processor (batches of 512, or every 5 s). Each
  variant's CPU is read `SETTLE_SECONDS` after the queue empties, so that what is still queued then
  (at most a batch per process) is exported inside the measured window; the bench logs the
  collector's exports and bytes. The receiver's own CPU is the bench's, not counted.

CPU is the API's and the worker's, per message processed; throughput is the end-to-end rate (to the
empty queue).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import OURS_ENV

#: The variants, in the order they run (the order is reversed on every other RTT by the caller).
VARIANTS = ("absent", "off", "on")

#: How long after the queue empties each variant's CPU is read: the batch span processor's schedule
#: delay (OTEL_BSP_SCHEDULE_DELAY, 5 s), and time for the export it starts then.
SETTLE_SECONDS = 6.5


class Receiver:
    """An OTLP/HTTP endpoint that takes every export (200, empty body) and counts requests and bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", 0))
                self.rfile.read(size)
                with receiver.lock:
                    receiver.requests += 1
                    receiver.bytes += size
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def blocker(workdir: Path) -> Path:
    """A directory whose `opentelemetry` package cannot be imported: the SDK looks not installed."""
    folder = workdir / "no-opentelemetry"
    (folder / "opentelemetry").mkdir(parents=True, exist_ok=True)
    (folder / "opentelemetry" / "__init__.py").write_text('raise ImportError("opentelemetry is not installed")\n')
    return folder


@contextmanager
def variant(name: str, receiver: Receiver, workdir: Path) -> Iterator[None]:
    """Run what is inside with OURS_ENV set for the variant; restore it after."""
    saved = dict(OURS_ENV)
    if name == "absent":
        OURS_ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
        OURS_ENV["PYTHONPATH"] = os.pathsep.join([str(blocker(workdir)), str(Path(__file__).resolve().parent.parent)])
    elif name == "on":
        OURS_ENV["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url
    try:
        yield
    finally:
        OURS_ENV.clear()
        OURS_ENV.update(saved)


def ratios(results: dict[str, Any]) -> dict[str, float]:
    """off/absent and on/off: CPU per message (API + worker) and end-to-end rate."""

    def cpu(name: str) -> float:
        r = results[name]
        return float(r.cpu_ms_per_message(r.api_cpu_seconds + r.worker_cpu_seconds))

    out: dict[str, float] = {}
    if "absent" in results and "off" in results:
        out["off_vs_absent_cpu"] = cpu("off") / cpu("absent")
        out["off_vs_absent_rate"] = results["off"].rate / results["absent"].rate
    if "on" in results and "off" in results:
        out["on_vs_off_cpu"] = cpu("on") / cpu("off")
        out["on_vs_off_rate"] = results["on"].rate / results["off"].rate
    return out
