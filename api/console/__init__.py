"""The operations console: `/ui`, a page served by the API itself, and the JSON endpoints it reads.

The page and its assets (`static/`: HTML, one script, one style sheet, no build step) ship in the
package and work offline. The console reads the same API as every client, with the API key the
operator types in, sent as `Authorization: Bearer` (no cookie). `setup_console` adds its routes and
the shared depth sampler (`sampler.py`) to the app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from api import keys
from api.console import handlers
from api.console.sampler import SAMPLER, DepthSampler

#: The console's chart history, kept in QM_STATE_DIR across a restart.
HISTORY_FILE = "console-history.json"


def setup_console(app: web.Application) -> None:
    """Add the console's routes, and its sampler once the broker is up (append after the SQS context)."""
    app.router.add_get("/", handlers.index)
    app.router.add_get("/ui", handlers.page)
    app.router.add_get("/ui/", handlers.page)
    app.router.add_get("/ui/static/{name}", handlers.asset)
    app.router.add_get("/console/session", handlers.session)
    app.router.add_get("/console/overview", handlers.overview)
    app.router.add_post("/console/validate", handlers.validate)
    app.cleanup_ctx.append(_sampler_context)


async def _sampler_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    sampler = DepthSampler(
        app[keys.BROKER],
        app[keys.EXECUTOR],
        app[keys.REGISTRY].types,
        interval_seconds=settings.console_sample_seconds,
        reports=app[keys.WORKER_REPORTS],
        history_path=None if settings.state_dir is None else settings.state_dir / HISTORY_FILE,
    )
    sampler.load()
    app[SAMPLER] = sampler
    app[keys.SENDER].sent_listeners.append(sampler.count_sent)
    try:
        yield
    finally:
        await sampler.close()
