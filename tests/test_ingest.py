"""Ingest under load and trouble: micro-batched sends, the batch endpoint, idempotency, API keys,
backpressure and SQS outages."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from api import keys
from api.app import create_app
from queue_manager.settings import Settings, SettingsError
from tests.conftest import SQSServer
from tests.support import LOG, drain, eventually, queue_depth, queued_ids
from tests.test_bench_proxy import proxy_process

pytestmark = pytest.mark.api


async def test_concurrent_posts_are_coalesced_into_batches_and_each_waits_for_its_own_entry(
    aiohttp_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given 50 concurrent posts to one queue, on an API whose batches may wait 100 ms for company (on
    # a loaded test machine the in-process client's posts trickle in over more than the default 15 ms)
    api_client = await aiohttp_client(create_app(dataclasses.replace(settings, send_linger_ms=100)))
    broker = api_client.server.app[keys.BROKER]

    def sends() -> int:
        counts = broker.request_counts()
        return counts.get("SendMessageBatch", 0) + counts.get("SendMessage", 0)

    before = sends()
    responses = await asyncio.gather(
        *(api_client.post("/messages", json={"type": "log", "payload": {"message": f"m{i}"}}) for i in range(50))
    )
    # Then every one is accepted, with far fewer SQS calls than messages, and each 202 is on the queue
    ids = [(await r.json())["id"] for r in responses]
    assert [r.status for r in responses] == [202] * 50
    assert sends() - before <= 20, broker.request_counts()
    assert sorted(await asyncio.to_thread(queued_ids, sqs, settings.queue_name("log"))) == sorted(ids)


@pytest.mark.alone  # counts batches against a rate: other tests' load beside it changes the count
async def test_64_clients_on_qm_api_fill_their_batches_when_sqs_answers_15_ms_late(
    api_process: Any, sqs_server: SQSServer, settings: Settings, sqs: Any, tmp_path: Path
) -> None:
    if sqs_server.kind != "ministack":
        # A figure, not a yes or no: it holds at SQS-like speed, and moto server spends more of the
        # two cores per call than ministack (0.120 there in CI, against 0.10 on ministack).
        pytest.skip("sends per message are measured on ministack, the faster server")
    # A measurement: asyncio's debug mode slows the 64 clients' loop enough to leave the API's
    # batches part-full (78-95 sends per 640 here, over the 76 allowed), so it is off for this test
    asyncio.get_running_loop().set_debug(False)
    # Given qm-api whose SQS answers each call 15 ms late (the bench's delaying proxy, as real SQS)
    with proxy_process(sqs_server.url, 15, tmp_path) as proxy:
        _, url = await asyncio.to_thread(api_process, env={"AWS_ENDPOINT_URL_SQS": proxy.endpoint("api")})

        # When 64 clients each post 10 messages, one after another
        async def client(session: ClientSession, n: int) -> list[int]:
            statuses = []
            for i in range(10):
                envelope = {"type": "log", "payload": {"message": f"{n}-{i}"}}
                async with session.post(url + "/messages", json=envelope) as response:
                    statuses.append(response.status)
            return statuses

        before = proxy.get("/_proxy/counts").get("api", {})
        async with ClientSession(timeout=ClientTimeout(total=60)) as session:
            results = await asyncio.gather(*(client(session, n) for n in range(64)))
        counts = proxy.get("/_proxy/counts")["api"]
    sends = sum(counts.get(a, 0) - before.get(a, 0) for a in ("SendMessage", "SendMessageBatch"))
    # Then every post is accepted, and while a batch is in flight the next one fills up instead of
    # leaving part-full: close to one SendMessageBatch per ten messages
    assert [s for statuses in results for s in statuses] == [202] * 640
    assert sends <= 640 * 0.12, counts
    assert len(await asyncio.to_thread(drain, sqs, settings.queue_name("log"), timeout=10)) == 640


async def test_batch_endpoint_sends_the_valid_entries_and_reports_each_in_order(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given a batch of two valid envelopes around an invalid one
    body = {
        "messages": [
            {"type": "log", "payload": {"message": "a"}},
            {"type": "log", "payload": {"level": "loud"}},
            {"type": "log", "payload": {"message": "c"}},
        ]
    }
    # When it is posted
    response = await api_client.post("/messages/batch", json=body)
    # Then the answer is 207 with one result per entry, in order, and the valid two are queued
    assert response.status == 207
    results = (await response.json())["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert [r["status"] for r in results] == [202, 422, 202]
    assert results[1]["errors"][0]["path"] in ("/payload", "/payload/level")
    assert {e["path"] for e in results[1]["errors"]} == {"/payload", "/payload/level"}
    assert sorted(await asyncio.to_thread(queued_ids, sqs, settings.queue_name("log"))) == sorted(
        [results[0]["id"], results[2]["id"]]
    )


async def test_batch_endpoint_answers_202_when_every_entry_is_sent(api_client: Any) -> None:
    response = await api_client.post("/messages/batch", json={"messages": [LOG] * 25})
    assert response.status == 202
    results = (await response.json())["results"]
    assert [r["status"] for r in results] == [202] * 25
    assert len({r["id"] for r in results}) == 25


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_batch_of_more_than_100_is_refused(api_client: Any) -> None:
    response = await api_client.post("/messages/batch", json={"messages": [LOG] * 101})
    assert response.status == 422
    body = await response.json()
    assert body["errors"][0]["path"] == "/messages"
    assert body["errors"][0]["keyword"] == "maxItems"


async def test_a_retried_post_with_the_same_idempotency_key_returns_the_first_answer(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given a post with an Idempotency-Key
    first = await api_client.post("/messages", json=LOG, headers={"Idempotency-Key": "order-7"})
    # When it is retried, and also sent concurrently twice more
    again = await asyncio.gather(
        *(api_client.post("/messages", json=LOG, headers={"Idempotency-Key": "order-7"}) for _ in range(2))
    )
    # Then each answer is the first one, and only one message is on the queue, carrying the key
    first_body = await first.json()
    for response in again:
        assert response.status == 202
        assert response.headers["Idempotent-Replayed"] == "true"
        assert await response.json() == first_body
    messages = await asyncio.to_thread(drain, sqs, settings.queue_name("log"))
    assert len(messages) == 1
    assert json.loads(base64.b64decode(messages[0]["Body"]))["options"]["idempotency_key"] == "order-7"


async def test_an_idempotency_key_reused_with_another_message_is_422(api_client: Any) -> None:
    await api_client.post("/messages", json=LOG, headers={"Idempotency-Key": "k1"})
    response = await api_client.post(
        "/messages", json={"type": "log", "payload": {"message": "other"}}, headers={"Idempotency-Key": "k1"}
    )
    assert response.status == 422
    body = await response.json()
    assert body["errors"] == [
        {"path": "/idempotency_key", "keyword": "unique", "message": "already used with a different message"}
    ]


async def test_idempotency_key_in_the_envelope_works_in_a_batch(api_client: Any, settings: Settings, sqs: Any) -> None:
    envelope = {**LOG, "idempotency_key": "batch-1"}
    first = await api_client.post("/messages/batch", json={"messages": [envelope]})
    second = await api_client.post("/messages/batch", json={"messages": [envelope]})
    assert (await first.json())["results"][0]["id"] == (await second.json())["results"][0]["id"]
    assert len(await asyncio.to_thread(drain, sqs, settings.queue_name("log"))) == 1


@pytest.fixture
def keyed_settings(settings: Settings, tmp_path: Path) -> Settings:
    key_file = tmp_path / "keys"
    key_file.write_text("# rotated in next week\nkey-from-file\n")
    return dataclasses.replace(settings, api_keys=("key-one", "key-two"), api_keys_file=key_file)


async def test_api_keys_are_required_and_any_configured_key_works(
    aiohttp_client: Any, keyed_settings: Settings
) -> None:
    client = await aiohttp_client(create_app(keyed_settings))
    # Without a key, or with a wrong one: 401 with a challenge
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic key-one"}):
        response = await client.post("/messages", json=LOG, headers=headers)
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="queue-manager"'
        assert response.content_type == "application/problem+json"
        assert (await response.json())["detail"] == "A valid API key is required: send `Authorization: Bearer <key>`."
    # Every configured key is accepted (rotation), from the environment or the file
    for key in ("key-one", "key-two", "key-from-file"):
        response = await client.post("/messages", json=LOG, headers={"Authorization": f"Bearer {key}"})
        assert response.status == 202
    # Health endpoints stay open
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 200
    assert (await client.get("/schemas")).status == 401


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
def test_listening_beyond_loopback_without_keys_refuses_to_start(settings: Settings) -> None:
    with pytest.raises(SettingsError, match=re.escape("QM_HOST=0.0.0.0 is reachable from other machines and no API")):
        create_app(dataclasses.replace(settings, host="0.0.0.0"))
    create_app(dataclasses.replace(settings, host="0.0.0.0", allow_unauthenticated=True))
    create_app(dataclasses.replace(settings, host="0.0.0.0", api_keys=("k",)))


async def test_a_queue_over_its_depth_ceiling_is_answered_429(aiohttp_client: Any, settings: Settings) -> None:
    # Given a ceiling of 3 messages
    client = await aiohttp_client(create_app(dataclasses.replace(settings, max_queue_depth=3)))
    for _ in range(3):
        assert (await client.post("/messages", json=LOG)).status == 202

    # When the depth reading catches up, a post is refused with Retry-After
    async def refused() -> Any:
        response = await client.post("/messages", json=LOG)
        return response if response.status == 429 else None

    deadline = asyncio.get_running_loop().time() + 15
    response = None
    while response is None and asyncio.get_running_loop().time() < deadline:
        response = await refused()
        await asyncio.sleep(0.2)
    assert response is not None
    assert response.headers["Retry-After"] == "5"
    assert (await response.json())["title"] == "Too Many Requests"


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_too_many_waiting_sends_are_shed_with_503(
    aiohttp_client: Any, settings: Settings, sqs_server: SQSServer
) -> None:
    # Given an API that lets 2 sends wait, and SQS not answering
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, max_waiting_sends=2, request_timeout_seconds=2))
    )
    sqs_server.pause()
    try:
        responses = await asyncio.gather(*(client.post("/messages", json=LOG) for _ in range(6)))
    finally:
        sqs_server.resume()
    # Then the extra ones are answered 503 at once, and none is a 500
    assert [r.status for r in responses] == [503] * 6
    assert all(r.headers["Retry-After"] == "1" for r in responses)
    details = [(await r.json())["detail"] for r in responses]
    shed = [d for d in details if "2 messages are already waiting for SQS; the limit is 2" in d]
    assert len(shed) == 4, details


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_sqs_stopped_mid_run_gives_503s_never_a_500_and_no_lost_202(
    api_process: Any, settings: Settings, sqs: Any, sqs_server: SQSServer
) -> None:
    # Given a real API process taking a steady stream of posts
    _, url = await asyncio.to_thread(
        api_process, env={"QM_SQS_TIMEOUT_SECONDS": "1", "QM_REQUEST_TIMEOUT_SECONDS": "4"}
    )
    accepted: list[str] = []
    statuses: list[int] = []

    async def client(session: ClientSession, n: int) -> None:
        for i in range(n):
            async with session.post(url + "/messages", json={"type": "log", "payload": {"message": str(i)}}) as r:
                statuses.append(r.status)
                if r.status == 202:
                    accepted.append((await r.json())["id"])
                else:
                    assert r.content_type == "application/problem+json"
                    assert "Retry-After" in r.headers
            await asyncio.sleep(0.02)

    async with ClientSession(timeout=ClientTimeout(total=30)) as session:
        clients = asyncio.gather(*(client(session, 60) for _ in range(4)))
        # When SQS stops answering mid-run for a few seconds, then comes back
        await eventually(lambda: len(accepted) >= 8, timeout=10, what="the run under way")
        sqs_server.pause()
        try:
            await asyncio.sleep(5)
        finally:
            sqs_server.resume()
        await clients
        # Then the API recovered on its own
        async with session.post(url + "/messages", json=LOG) as r:
            assert r.status == 202
            accepted.append((await r.json())["id"])
    assert 500 not in statuses
    assert 503 in statuses
    # And every message answered 202 is on the queue
    # (moto's receives slow down as the queue grows: give the drain time)
    on_queue = set(await asyncio.to_thread(queued_ids, sqs, settings.queue_name("log"), timeout=60))
    missing = set(accepted) - on_queue
    assert not missing, (len(missing), len(accepted), len(on_queue), queue_depth(sqs, settings.queue_name("log")))
    assert queue_depth(sqs, settings.queue_name("log"))["delayed"] == 0
