"""The worker metrics fork: one process per `dramatiq` master serves every worker process's samples.

dramatiq imports this module in a fork of its master, logs "Fork process ... is ready for action."
and then calls `serve`. So the fork's logs get the workers' format (JSON under JSON logging) when
this module is imported, for that line too. Only the fork imports it: WorkerMetrics names it
without importing it.
"""

from __future__ import annotations

import logging
import os
import time
from http.server import HTTPServer

from queue_manager import logs
from queue_manager.settings import Settings, SettingsError
from queue_manager.sqs.middleware.metrics import samples_dir

logger = logging.getLogger(__name__)

#: The first pause after the metrics port could not be bound; it doubles up to the longest.
FIRST_BIND_RETRY_SECONDS = 1.0
MAX_BIND_RETRY_SECONDS = 30.0


def _format_logs() -> Settings | SettingsError:
    """Give the fork's log handlers (dramatiq's text ones) the workers' format; return the settings."""
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        logs.reformat("auto")
        return exc
    logs.reformat(settings.log_format, level=settings.log_level)
    return settings


_settings = _format_logs()


def serve() -> int:
    """Serve /metrics until stopped; a port in use is tried again, and errors are logged, not raised."""
    if isinstance(_settings, SettingsError):
        logger.error("The worker metrics fork cannot start: %s", _settings)
        return 1
    try:
        _serve(_settings.worker_metrics_host, _settings.worker_metrics_port)
    except Exception:  # the fork's own failure must not end as a text traceback, nor touch the workers
        logger.exception("The worker metrics fork failed; the workers carry on without /metrics.")
        return 1
    return 0


def _serve(host: str, port: int) -> None:
    directory = samples_dir(os.getppid())
    directory.mkdir(parents=True, exist_ok=True)
    # Must be set before prometheus_client is first imported in this process.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import CollectorRegistry, MetricsHandler, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    handler = MetricsHandler.factory(registry)
    pause, attempts = FIRST_BIND_RETRY_SECONDS, 0
    while True:
        attempts += 1
        try:
            server = HTTPServer((host, port), handler)
            break
        except OSError as exc:
            # A port still held by a master that is shutting down (a rolling deploy) frees soon:
            # keep trying, saying so once.
            if attempts == 1:
                logger.error(
                    "Cannot serve worker metrics on %s:%d (%s); trying again, up to every %.0f s.",
                    host,
                    port,
                    exc.strerror or exc,
                    MAX_BIND_RETRY_SECONDS,
                )
            time.sleep(pause)
            pause = min(pause * 2, MAX_BIND_RETRY_SECONDS)
    logger.info("Serving worker metrics on http://%s:%d/metrics (attempt %d).", host, port, attempts)
    server.serve_forever()
