"""Large messages in the dead-letter queue: download the body a dead letter keeps in S3."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Any

from aiohttp import web

from api import keys, problems
from api.deadletters import _audit, _known_type, _run, caller
from queue_manager.payloads.store import PayloadMissing, StorageUnavailable
from queue_manager.payloads.wire import Pointer
from queue_manager.sqs import deadletters


async def download(request: web.Request) -> web.Response:
    """The Dramatiq message a dead letter keeps in S3, as JSON (its S3 object, base64-decoded)."""
    who = caller(request)
    message_type = _known_type(request)
    wanted = request.match_info["id"]
    offloader = request.app[keys.SENDER].offloader
    if offloader is None:
        raise problems.NotFound("Large messages are off (QM_PAYLOAD_BUCKET is unset): no dead letter has a payload.")
    broker = request.app[keys.BROKER]

    def find() -> deadletters.DeadLetter | None:
        urls = broker.ensure_queue(message_type)
        items = broker.dead_letters.peek(urls.dead_letter_url, limit=deadletters.MAX_PEEK_MESSAGES)
        return next((i for i in items if wanted in (i.id, i.sqs_message_id)), None)

    item = await _run(request, find, "read the dead-letter queue")
    if item is None or item.payload_location is None:
        raise problems.NotFound(
            f"No dead letter {wanted!r} with a payload in S3 among the first {deadletters.MAX_PEEK_MESSAGES} of "
            f"{broker.dead_letter_queue_name(message_type)!r}."
        )
    bucket, _, key = item.payload_location.removeprefix("s3://").partition("/")

    def read() -> str:
        return offloader.store.get(Pointer(bucket, key))

    try:
        body = await asyncio.get_running_loop().run_in_executor(request.app[keys.SENDER].offload_executor, read)
    except PayloadMissing as exc:
        raise problems.NotFound(f"The payload of dead letter {wanted!r} is gone: {exc}.") from None
    except StorageUnavailable as exc:
        raise problems.StorageUnavailable(
            f"Could not read the payload of dead letter {wanted!r}: {exc}.",
            retry_after_seconds=problems.RETRY_AFTER_READ_SECONDS,
        ) from None
    _audit(who, "download", broker.dead_letter_queue_name(message_type), 1)
    headers: dict[str, Any] = {"Content-Disposition": f'attachment; filename="{wanted}.json"'}
    try:
        decoded = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return web.Response(text=body, content_type="text/plain", headers=headers)
    return web.Response(body=decoded, content_type="application/json", headers=headers)
