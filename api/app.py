"""The application factory and the `qm-api` entry point."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import swagger_ui
from aiohttp import web
from aiohttp.typedefs import Middleware

from api import access, keys, processes, server
from api.backpressure import DepthGuard
from api.console import setup_console
from api.metrics import ApiMetrics
from api.middlewares import auth_middleware, problem_middleware, trace_middleware
from api.openapi import build_openapi
from api.payloads import LargeBodies
from api.routes import setup_routes
from api.schemas import MAX_BATCH_BODY_BYTES
from api.sender import Sender
from broker import build_broker, worker_reports
from queue_manager import logs, tracing
from queue_manager.settings import Settings, SettingsError
from queue_manager.sqs.sending import SEND_ATTEMPTS
from queue_manager.state.dynamodb import TableMissing
from queue_manager.state.keys import idempotency_store
from queue_manager.state.status import SentIds
from queue_manager.state.stores import status_events, status_writer
from schemas import SchemaLoadError, SchemaRegistry

logger = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build the API from `settings` alone: schemas are loaded and checked here, so a broken one stops start-up.

    The queue kind of each type is its schema's; the environment and the actors are never read.

    Raises SettingsError when the API would listen beyond loopback with no API keys.
    """
    registry = SchemaRegistry.load(settings.schemas_dir)
    api_keys = access.parse_keys(settings.accepted_api_keys())
    if not api_keys and not _is_loopback(settings.host) and not settings.allow_unauthenticated:
        raise SettingsError(
            f"QM_HOST={settings.host} is reachable from other machines and no API keys are set: set QM_API_KEYS "
            "or QM_API_KEYS_FILE, bind to 127.0.0.1, or set QM_ALLOW_UNAUTHENTICATED=true to serve openly."
        )
    metrics = ApiMetrics()
    # Metrics outermost, so they count the status the client finally got.
    middlewares: list[Middleware] = [metrics.middleware(), problem_middleware, auth_middleware(api_keys)]
    # Tracing, if the settings turn it on (OpenTelemetry's variables): a SERVER span per request,
    # outermost so that it covers the whole answer; off, no middleware at all.
    traced = not tracing.active() and tracing.setup(settings, service=tracing.API_SERVICE)
    spans = tracing.live()
    if spans is not None:
        middlewares.insert(0, trace_middleware(spans))
    # Each handler enforces its own, smaller body limit; this is the largest (a batch).
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BATCH_BODY_BYTES)
    app[keys.SETTINGS] = settings
    app[keys.API_KEYS] = api_keys
    app[keys.METRICS] = metrics
    app[keys.REGISTRY] = registry
    app[keys.FIFO_TYPES] = registry.fifo_types
    app[keys.WORKER_REPORTS] = worker_reports(settings)
    app[keys.OPENAPI] = build_openapi(registry, settings, fifo_types=app[keys.FIFO_TYPES])
    # The interactive docs: Swagger UI's assets as installed by swagger-ui-py, served locally.
    swagger_ui.api_doc(app, config=app[keys.OPENAPI], url_prefix="/docs", title="queue-manager API", host_inject=False)
    if traced:
        metrics.watch_tracing()  # dropped spans, in qm_trace_spans_dropped_total
        app.cleanup_ctx.append(_tracing_context)  # first in, last out: the spans of the last sends are exported too
    # The state store first: it closes last, after the sends in flight have recorded their outcome.
    app.cleanup_ctx.append(_state_context)
    app.cleanup_ctx.append(_sqs_context)
    setup_routes(app)
    setup_console(app)  # the operations console (/ui): after the SQS context, whose broker its sampler reads
    return app


async def _sqs_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    executor = ThreadPoolExecutor(max_workers=settings.send_concurrency, thread_name_prefix="qm-sqs")
    broker = build_broker(settings, fifo_types=app[keys.FIFO_TYPES])
    for message_type in app[keys.REGISTRY].types:
        broker.declare_queue(message_type)
    app[keys.EXECUTOR] = executor
    app[keys.BROKER] = broker
    offloader = broker.offloader  # large messages (S3): None unless QM_PAYLOAD_BUCKET is set
    uploads = ThreadPoolExecutor(max_workers=settings.payload_concurrency, thread_name_prefix="qm-s3")
    app[keys.LARGE_BODIES] = LargeBodies(settings.payload_concurrency if offloader is not None else 0)
    app[keys.SENDER] = Sender(
        broker,
        executor,
        linger_seconds=settings.send_linger_ms / 1000,
        max_waiting=settings.max_waiting_sends,
        offloader=offloader,
        offload_executor=uploads,
    )
    app[keys.METRICS].watch_broker(broker)
    app[keys.SENDER].batch_listeners.append(app[keys.METRICS].batch_sizes.observe)
    app[keys.SENDER].send_time_listeners.append(app[keys.METRICS].send_seconds.observe)
    app[keys.DEPTH_GUARD] = DepthGuard(broker, executor, max_depth=settings.max_queue_depth)
    # Message status: one store for reads and this process's writer (nothing opens before it is used).
    app[keys.STATUS_STORE] = status_store = status_events(settings)
    app[keys.STATUS_WRITER] = status_writer(
        settings,
        status_store,
        on_outcome=app[keys.METRICS].count_status_writes,
        on_request=app[keys.METRICS].count_status_request,
    )
    app[keys.SENT_IDS] = SentIds()
    loop = asyncio.get_running_loop()
    if offloader is not None and settings.payload_create_bucket:
        try:
            await loop.run_in_executor(uploads, offloader.store.ensure_bucket)
        except Exception as exc:  # S3 may come up later: large messages are answered 503 until then
            logger.warning("Could not create the payload bucket %r yet: %s.", settings.payload_bucket, exc)
    for message_type in app[keys.REGISTRY].types:
        try:
            await loop.run_in_executor(executor, broker.ensure_queue, message_type)
        except Exception as exc:  # SQS may come up later: sends create the queue then, /readyz tells
            logger.warning("Could not set up the queue for %r yet: %s.", message_type, exc)
    try:
        yield
    finally:
        await app[keys.SENDER].close()
        writer = app[keys.STATUS_WRITER]
        if writer is not None:  # after the sender too: its last 202s' events are written
            await asyncio.to_thread(writer.close)
        await app[keys.DEPTH_GUARD].close()
        if settings.stats_dir is not None:
            settings.stats_dir.mkdir(parents=True, exist_ok=True)
            path = settings.stats_dir / f"api-{os.getpid()}.json"
            path.write_text(json.dumps({"sqs_requests": broker.request_counts()}, sort_keys=True))
        executor.shutdown(wait=True)
        uploads.shutdown(wait=True)


async def _state_context(app: web.Application) -> AsyncIterator[None]:
    """The idempotency keys: DynamoDB with QM_STATE_TABLE (a fleet), else SQLite in the state folder (a host)."""
    settings = app[keys.SETTINGS]
    state_dir = settings.state_dir or Path(tempfile.mkdtemp(prefix="qm-api-state-"))
    store = idempotency_store(settings, state_dir=state_dir, lease_seconds=_send_lease_seconds(settings))
    try:
        try:
            await store.open()
        except TableMissing as exc:  # QM_CREATE_TABLES=false and no table: stop start-up, naming both
            raise SettingsError(str(exc)) from None
        app[keys.IDEMPOTENCY] = store
        yield
    finally:
        await store.close()
        if settings.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)


async def _tracing_context(app: web.Application) -> AsyncIterator[None]:
    """Export the spans still buffered at the stop (for a few seconds at most), after the sends' own."""
    yield
    await asyncio.get_running_loop().run_in_executor(None, tracing.shutdown)


def _send_lease_seconds(settings: Settings) -> float:
    """How long a key's send may stay in flight: the request's wait, then every attempt's connect and read."""
    return settings.request_timeout_seconds + SEND_ATTEMPTS * 2 * settings.sqs_timeout_seconds


def main() -> None:
    """Run the API from the environment's settings."""
    try:
        settings = Settings.from_env()
        logs.configure(settings.log_format, level=settings.log_level)
        if settings.api_processes > 1 and not processes.is_child():
            SchemaRegistry.load(settings.schemas_dir)  # refuse to start here, once, not in every child
            raise SystemExit(
                processes.supervise(
                    settings.api_processes,
                    shutdown_timeout_seconds=settings.shutdown_timeout_seconds,
                    state_dir=settings.state_dir,
                )
            )
        app = create_app(settings)
    except (SettingsError, SchemaLoadError) as exc:
        print(f"qm-api: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        server.run(
            app,
            host=settings.host,
            port=settings.port,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
            reuse_port=processes.is_child(),
            header_timeout=settings.header_timeout_seconds,
            keepalive_timeout=settings.keepalive_seconds,
        )
    except (server.PortInUse, SettingsError) as exc:  # SettingsError: the state store's table is missing
        print(f"qm-api: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":  # `python -m api.app`: last, once every name above is defined
    main()
