"""One Idempotency-Key, one message id: through SQS outages whose outcome the API cannot know.

SQS is frozen with SIGSTOP: the kernel still accepts connections and takes the request bytes, so a
send reaches SQS and gets no answer until SIGCONT, the case where the API cannot know the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from api import keys
from api.app import create_app
from queue_manager.settings import Settings
from queue_manager.state import idempotency
from tests.conftest import SQSServer
from tests.support import drain, eventually, free_port, queued_ids, wait_for

pytestmark = pytest.mark.api

LOG = {"type": "log", "payload": {"message": "pay invoice 42"}}


def sends(client: Any) -> int:
    """SendMessage and SendMessageBatch requests the app's broker has made."""
    counts = client.server.app[keys.BROKER].request_counts()
    return int(counts.get("SendMessage", 0) + counts.get("SendMessageBatch", 0))


def copies(sqs: Any, settings: Settings, expected: int) -> Counter[str]:
    """Message ids of LOG's copies on the queue, once there are `expected` of them (left in flight)."""
    found: Counter[str] = Counter()

    def gather() -> bool:
        for m in drain(sqs, settings.queue_name("log"), timeout=2):
            body = json.loads(base64.b64decode(m["Body"]))
            if body["args"] == [LOG["payload"]]:
                found[body["message_id"]] += 1
        return sum(found.values()) >= expected

    wait_for(gather, timeout=20, interval=0.1, what=f"{expected} copies on the queue")
    gather()  # and no more than that: a late copy would show up here
    return found


def key_state(settings: Settings, key: str) -> str | None:
    """The key's row in the API's idempotency store, read as another process would."""
    assert settings.state_dir is not None
    with sqlite3.connect(settings.state_dir / idempotency.DATABASE_NAME) as db:
        row = db.execute("SELECT state FROM idempotency_keys WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def outage_settings(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(settings, state_dir=tmp_path / "state")


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_a_send_still_in_flight_when_its_request_gives_up_is_replayed_once_sqs_answers(
    aiohttp_client: Any, outage_settings: Settings, sqs: Any, sqs_server: SQSServer
) -> None:
    # Given an API that waits 1 s for SQS per request, while a send may take 5 s
    settings = dataclasses.replace(outage_settings, request_timeout_seconds=1, sqs_timeout_seconds=5)
    client = await aiohttp_client(create_app(settings))
    headers = {"Idempotency-Key": "invoice-42"}
    before = sends(client)
    sqs_server.pause()
    try:
        # When a keyed POST is made while SQS is frozen, and retried while it still is
        first = await client.post("/messages", json=LOG, headers=headers)
        second = await client.post("/messages", json=LOG, headers=headers)
        # Then the retry waited for the send in flight instead of sending a second copy
        assert sends(client) - before == 1
        assert key_state(settings, "invoice-42") == "pending"
        # And both are 503s that say the outcome is unknown and to retry with the same key
        for response in (first, second):
            assert response.status == 503
            body = await response.json()
            assert body["type"] == "urn:queue-manager:problem:outcome-unknown"
            assert "retry with the same Idempotency-Key" in body["detail"], body
        assert "the send is still in flight" in (await first.json())["detail"]
        assert "still being sent to SQS" in (await second.json())["detail"]
    finally:
        sqs_server.resume()
    # When SQS answers the send in flight, and the client retries once more
    await eventually(lambda: key_state(settings, "invoice-42") == "done", timeout=10, what="the late answer recorded")
    third = await client.post("/messages", json=LOG, headers=headers)
    # Then the retry replays SQS's late answer, and SQS holds exactly one copy: nothing was sent again
    assert third.status == 202
    assert third.headers["Idempotent-Replayed"] == "true"
    answer = await third.json()
    assert sends(client) - before == 1
    assert await asyncio.to_thread(copies, sqs, settings, 1) == {answer["id"]: 1}


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_a_send_sqs_took_and_never_answered_is_sent_again_with_the_same_id(
    aiohttp_client: Any, outage_settings: Settings, sqs: Any, sqs_server: SQSServer
) -> None:
    # Given an API whose sends give up after 1 s without an answer, within a 5 s request timeout
    settings = dataclasses.replace(outage_settings, request_timeout_seconds=5, sqs_timeout_seconds=1)
    client = await aiohttp_client(create_app(settings))
    headers = {"Idempotency-Key": "invoice-43"}
    before = sends(client)
    sqs_server.pause()
    try:
        # When a keyed POST is made while SQS is frozen
        started = time.monotonic()
        first = await client.post("/messages", json=LOG, headers=headers)
        waited = time.monotonic() - started
        # Then it is a 503 after the one read timeout: botocore did not send it again on its own
        assert first.status == 503
        body = await first.json()
        assert body["type"] == "urn:queue-manager:problem:outcome-unknown"
        assert "SQS did not answer within 1 s" in body["detail"], body
        assert "retry with the same Idempotency-Key" in body["detail"], body
        assert waited < 2.5, waited
        await eventually(lambda: key_state(settings, "invoice-43") == "unknown", timeout=5, what="the key unknown")
        # (SQS stays frozen past two more read timeouts, where botocore would have re-sent it twice)
        await asyncio.sleep(2.5)
        assert sends(client) - before == 1
    finally:
        sqs_server.resume()
    # When the client retries once SQS answers again, and once more
    second = await client.post("/messages", json=LOG, headers=headers)
    third = await client.post("/messages", json=LOG, headers=headers)
    # Then the first retry sent the message again and was accepted, and the next replays it
    assert second.status == 202, await second.text()
    assert "Idempotent-Replayed" not in second.headers
    answer = await second.json()
    assert third.status == 202
    assert third.headers["Idempotent-Replayed"] == "true"
    assert await third.json() == answer
    # And SQS holds one copy per send that reached it (the frozen one and the re-send), both with one id
    assert sends(client) - before == 2
    assert await asyncio.to_thread(copies, sqs, settings, 2) == {answer["id"]: 2}


async def test_a_send_that_surely_did_not_reach_sqs_is_not_accepted_and_frees_its_key(
    aiohttp_client: Any, outage_settings: Settings
) -> None:
    # Given an API whose SQS endpoint refuses connections
    settings = dataclasses.replace(outage_settings, endpoint_url=f"http://127.0.0.1:{free_port()}")
    client = await aiohttp_client(create_app(settings))
    # When a keyed POST is made
    response = await client.post("/messages", json=LOG, headers={"Idempotency-Key": "invoice-44"})
    # Then it is a 503 that says SQS did not accept it, and the key is free for a retry
    assert response.status == 503
    body = await response.json()
    assert body["type"] == "urn:queue-manager:problem:sqs-unavailable"
    assert body["detail"].startswith("SQS did not accept the message: SQS cannot be reached"), body
    await eventually(lambda: key_state(settings, "invoice-44") is None, timeout=5, what="the key freed")
    # And the key may come with another message now (a key still held would make that a 422)
    other = {"type": "log", "payload": {"message": "corrected"}}
    response = await client.post("/messages", json=other, headers={"Idempotency-Key": "invoice-44"})
    assert response.status == 503
    assert (await response.json())["type"] == "urn:queue-manager:problem:sqs-unavailable"


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_an_unkeyed_send_whose_outcome_is_unknown_says_how_to_make_retries_safe(
    aiohttp_client: Any, outage_settings: Settings, sqs_server: SQSServer
) -> None:
    # Given an API that waits 1 s for SQS, and SQS frozen
    client = await aiohttp_client(create_app(dataclasses.replace(outage_settings, request_timeout_seconds=1)))
    sqs_server.pause()
    try:
        # When a POST without a key is made
        response = await client.post("/messages", json=LOG)
    finally:
        sqs_server.resume()
    # Then the 503 says the outcome is unknown and that a key makes a retry safe
    assert response.status == 503
    body = await response.json()
    assert body["type"] == "urn:queue-manager:problem:outcome-unknown"
    assert "send an Idempotency-Key with each message" in body["detail"], body


async def test_the_message_id_is_a_function_of_the_key_and_the_message(
    api_process: Any, settings: Settings, sqs: Any, tmp_path: Path
) -> None:
    # Given two API runs that share nothing (each with a state directory of its own), and a key used on the first
    first_api, url = await asyncio.to_thread(api_process, env={"QM_STATE_DIR": str(tmp_path / "one")})
    async with ClientSession() as session:
        async with session.post(url + "/messages", json=LOG, headers={"Idempotency-Key": "k-1"}) as r:
            first = await r.json()
        first_api.kill_all()
        _, url2 = await asyncio.to_thread(api_process, env={"QM_STATE_DIR": str(tmp_path / "two")})
        # When the same key and message are posted to the second, another key, and the key with another message
        async with session.post(url2 + "/messages", json=LOG, headers={"Idempotency-Key": "k-1"}) as r:
            again = await r.json()
        async with session.post(url2 + "/messages", json=LOG, headers={"Idempotency-Key": "k-2"}) as r:
            other_key = await r.json()
        other_message = {"type": "log", "payload": {"message": "another"}}
        async with session.post(url2 + "/messages", json=other_message, headers={"Idempotency-Key": "k-3"}) as r:
            k3 = await r.json()
        _, url3 = await asyncio.to_thread(api_process, env={"QM_STATE_DIR": str(tmp_path / "three")})
        async with session.post(url3 + "/messages", json=LOG, headers={"Idempotency-Key": "k-3"}) as r:
            k3_reused = await r.json()
    # Then the same key and message get the same id; another key or another message, another id
    assert again["id"] == first["id"]
    assert len({first["id"], other_key["id"], k3["id"], k3_reused["id"]}) == 4
    assert sorted(await asyncio.to_thread(queued_ids, sqs, settings.queue_name("log"))) == sorted(
        [first["id"], first["id"], other_key["id"], k3["id"], k3_reused["id"]]
    )
