"""The application factory and the `qm-api` entry point."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from api import keys
from api.middlewares import problem_middleware
from api.routes import setup_routes
from api.sender import Sender
from broker import build_broker
from schemas import SchemaLoadError, SchemaRegistry
from settings import Settings, SettingsError
from sqs import constants

logger = logging.getLogger(__name__)

#: Room for the envelope around the largest payload SQS can carry.
ENVELOPE_OVERHEAD_BYTES = 4096


def create_app(settings: Settings) -> web.Application:
    """Build the API: schemas are loaded and checked here, so a broken one stops start-up."""
    registry = SchemaRegistry.load(settings.schemas_dir)
    app = web.Application(
        middlewares=[problem_middleware],
        # Nothing larger than this can fit in one SQS message once base64-encoded.
        client_max_size=constants.MAX_ENCODED_JSON_BYTES + ENVELOPE_OVERHEAD_BYTES,
    )
    app[keys.SETTINGS] = settings
    app[keys.REGISTRY] = registry
    app.cleanup_ctx.append(_sqs_context)
    setup_routes(app)
    return app


async def _sqs_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    executor = ThreadPoolExecutor(max_workers=settings.send_concurrency, thread_name_prefix="qm-sqs")
    broker = build_broker(settings)
    for message_type in app[keys.REGISTRY].types:
        broker.declare_queue(message_type)
    app[keys.EXECUTOR] = executor
    app[keys.BROKER] = broker
    app[keys.SENDER] = Sender(broker, executor)
    loop = asyncio.get_running_loop()
    for message_type in app[keys.REGISTRY].types:
        try:
            await loop.run_in_executor(executor, broker.ensure_queue, message_type)
        except Exception as exc:  # SQS may come up later: sends create the queue then, /readyz tells
            logger.warning("Could not set up the queue for %r yet: %s.", message_type, exc)
    try:
        yield
    finally:
        await app[keys.SENDER].close()
        executor.shutdown(wait=True)


def main() -> None:
    """Run the API from the environment's settings."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = Settings.from_env()
        app = create_app(settings)
    except (SettingsError, SchemaLoadError) as exc:
        print(f"qm-api: cannot start: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=settings.shutdown_timeout_seconds)


if __name__ == "__main__":
    main()
