"""`python -m bench.api_server ours|stock PORT PREFIX`: one API under test, in a process of its own.

- ours: `api.app.create_app(Settings(...))`, the app `qm-api` serves.
- stock: a minimal aiohttp app whose POST /messages validates the envelope and payload against the
  same JSON Schemas as ours and calls its type's stock Dramatiq actor's `.send(payload)` (log,
  webhook, ordered) on a stock `dramatiq_sqs.SQSBroker` through `asyncio.to_thread`.

The stock API's `asyncio.to_thread` uses the loop's default executor (min(32, cores + 4) threads:
6 on 2 cores), as a stock app would. SQS requests are counted by the bench's proxy, not here.
Access logs are off and logging is at WARNING in both, so neither pays for per-request log lines.
The process prints READY once it listens and stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys

from aiohttp import web


def ours_app(prefix: str) -> web.Application:
    from api.app import create_app
    from queue_manager.settings import Settings

    # Defaults, but for any QM_ setting the bench was given for ours (`--ours-env`).
    settings = dataclasses.replace(
        Settings.from_env(),
        endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"],
        region=os.environ.get("AWS_REGION", "us-east-1"),
        queue_prefix=prefix,
    )
    return create_app(settings)


def stock_app(prefix: str) -> web.Application:
    import dramatiq
    from dramatiq_sqs import SQSBroker

    broker = SQSBroker(
        namespace=prefix,
        dead_letter=True,
        endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"],
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
    )

    from api.schemas import envelope_violations
    from queue_manager.settings import DEFAULT_SCHEMAS_DIR
    from schemas import SchemaRegistry

    registry = SchemaRegistry.load(DEFAULT_SCHEMAS_DIR)

    # One stock actor per shipped type (the bodies are the workers'; the API only sends). `ordered`
    # is a standard queue here: dramatiq-sqs has no FIFO, so its group_id is not sent.
    senders = {
        name: dramatiq.actor(actor_name=name, queue_name=name, broker=broker)(lambda payload: None)
        for name in ("log", "webhook", "ordered")
    }

    async def post_message(request: web.Request) -> web.Response:
        try:
            document = await request.json()
        except ValueError:
            return web.json_response({"title": "not JSON"}, status=400)
        # The same contract work as ours (envelope and payload against their JSON Schemas), so the
        # comparison is of the enqueue path, not of validating versus not validating.
        errors = envelope_violations(document) or (
            document["type"] in registry and registry.validate(document["type"], document["payload"])
        )
        if errors or document.get("type") not in senders:
            return web.json_response({"title": "bad envelope"}, status=422)
        message = await asyncio.to_thread(senders[document["type"]].send, document["payload"])
        return web.json_response({"id": message.message_id, "type": document["type"]}, status=202)

    app = web.Application()
    app.router.add_post("/messages", post_message)
    return app


async def serve(impl: str, port: int, prefix: str) -> None:
    app = ours_app(prefix) if impl == "ours" else stock_app(prefix)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    if impl == "ours":
        from api import server

        server.freeze_heap()  # as `qm-api` does once started
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print("READY", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    impl, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    asyncio.run(serve(impl, port, prefix))


if __name__ == "__main__":
    main()
