"""One Idempotency-Key, one message: through an SQS outage whose outcome the API cannot know."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from queue_manager.settings import Settings
from tests.conftest import SQSServer, drain
from tests.test_ingest import queued_ids

pytestmark = pytest.mark.api

LOG = {"type": "log", "payload": {"message": "pay invoice 42"}}


async def test_a_send_whose_outcome_is_unknown_is_one_message_id_however_often_it_is_retried(
    api_process: Any, settings: Settings, sqs: Any, sqs_server: SQSServer
) -> None:
    # Given an API whose SQS calls time out after 1 s, and SQS frozen (it takes the request, answers nothing)
    _, url = api_process(env={"QM_SQS_TIMEOUT_SECONDS": "1", "QM_REQUEST_TIMEOUT_SECONDS": "3"})
    headers = {"Idempotency-Key": "invoice-42"}
    async with ClientSession(timeout=ClientTimeout(total=30)) as session:
        async with session.post(url + "/messages", json={"type": "log", "payload": {"message": "warm"}}) as warm:
            assert warm.status == 202
        sqs_server.pause()
        try:
            # When a keyed POST is made while SQS is frozen
            started = time.monotonic()
            async with session.post(url + "/messages", json=LOG, headers=headers) as first:
                problem = await first.json()
                status = first.status
            waited = time.monotonic() - started
            # And the client retries with the same key while SQS is still frozen
            async with session.post(url + "/messages", json=LOG, headers=headers) as second:
                second_status = second.status
                second_problem = await second.json()
        finally:
            sqs_server.resume()
        # Then both answers were 503s that say the outcome is unknown and to retry with the same key
        assert (status, second_status) == (503, 503), (problem, second_problem)
        assert first.content_type == "application/problem+json"
        for detail in (problem["detail"], second_problem["detail"]):
            assert "outcome is unknown" in detail and "same Idempotency-Key" in detail, detail
        assert waited < 3 * 2, waited  # no hidden re-sends stretched the wait
        # And a retry once SQS is back is accepted
        async with session.post(url + "/messages", json=LOG, headers=headers) as third:
            assert third.status == 202, await third.text()
            answer = await third.json()
    # And every copy SQS holds of that key's message carries one and the same message id
    await asyncio.sleep(1.5)  # a send frozen with SQS lands when it thaws
    bodies = [json.loads(base64.b64decode(m["Body"])) for m in drain(sqs, settings.queue_name("log"), timeout=10)]
    copies = [b for b in bodies if b["args"] == [LOG["payload"]]]
    ids = {b["message_id"] for b in copies}
    assert ids == {answer["id"]}, ids
    # And there is one copy per request that reached SQS, none from botocore re-sending on its own
    assert 1 <= len(copies) <= 3, len(copies)


async def test_the_message_id_is_a_function_of_the_key(api_process: Any, settings: Settings, sqs: Any) -> None:
    # Given two API processes (a restart forgets every key), and a key that was used on the first
    first_api, url = api_process()
    async with ClientSession() as session:
        async with session.post(url + "/messages", json=LOG, headers={"Idempotency-Key": "k-1"}) as r:
            first = await r.json()
        first_api.kill_all()
        _, url2 = api_process()
        # When the same key is posted to the second
        async with session.post(url2 + "/messages", json=LOG, headers={"Idempotency-Key": "k-1"}) as r:
            again = await r.json()
        async with session.post(url2 + "/messages", json=LOG, headers={"Idempotency-Key": "k-2"}) as r:
            other = await r.json()
    # Then it gets the same message id; another key gets another
    assert again["id"] == first["id"]
    assert other["id"] != first["id"]
    assert sorted(queued_ids(sqs, settings.queue_name("log"))) == sorted([first["id"], first["id"], other["id"]])
