"""The URL map."""

from __future__ import annotations

from aiohttp import web

from api import deadletter_payloads, deadletters, handlers, status


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/messages", handlers.post_message)
    app.router.add_post("/messages/batch", handlers.post_batch)
    app.router.add_get("/messages/{id}", status.get_message)
    app.router.add_get("/schemas", handlers.list_schemas)
    app.router.add_get("/schemas/{type}", handlers.get_schema)
    app.router.add_get("/queues", handlers.list_queues)
    app.router.add_get("/scaling", handlers.scaling)
    app.router.add_get("/queues/{name}/dead-letters", deadletters.list_dead_letters)
    app.router.add_post("/queues/{name}/redrive", deadletters.redrive)
    app.router.add_post("/queues/{name}/dead-letters/delete", deadletters.delete_dead_letters)
    app.router.add_get("/queues/{name}/dead-letters/{id}/payload", deadletter_payloads.download)
    app.router.add_get("/openapi.json", handlers.openapi)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
