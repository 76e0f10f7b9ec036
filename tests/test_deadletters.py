"""Dead-letter tools: GET /queues/{type}/dead-letters peeks without losing anything, and
POST /queues/{type}/redrive moves exactly what was asked back to the source queue."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest

from api.app import create_app
from queue_manager.settings import Settings
from queue_manager.sqs import deadletters
from queue_manager.sqs.broker import QMBroker
from tests.conftest import InProcessWorker
from tests.support import dead_letter, drain, eventually, queue_depth, queued_ids

pytestmark = pytest.mark.api


async def test_queues_keep_their_depths_and_say_the_oldest_age_is_unknown(api_client: Any, settings: Settings) -> None:
    response = await api_client.get("/queues")
    assert response.status == 200
    body = await response.json()
    log = next(q for q in body["queues"] if q["type"] == "log")
    empty = {"visible": 0, "in_flight": 0, "delayed": 0}
    assert log == {
        "type": "log",
        "name": settings.queue_name("log"),
        **empty,
        "oldest_age_seconds": None,
        "dead_letter": {"name": settings.queue_name("log") + "_dlq", **empty, "oldest_age_seconds": None},
    }
    assert "GetQueueAttributes" in body["notes"]["oldest_age_seconds"]


async def test_peek_shows_dead_letters_twice_and_loses_none(api_client: Any, sqs: Any, settings: Settings) -> None:
    # Given three dead letters
    ids = await asyncio.to_thread(
        dead_letter, api_client.server.app, sqs, settings, {"message": "a"}, {"message": "b"}, {"message": "c"}
    )
    dlq = settings.queue_name("log") + "_dlq"
    # When they are peeked twice
    first = await api_client.get("/queues/log/dead-letters")
    second = await api_client.get("/queues/log/dead-letters?limit=100")
    # Then both peeks show the same three, with what the consumer recorded
    assert first.status == second.status == 200
    one, two = await first.json(), await second.json()
    assert sorted(m["id"] for m in one["messages"]) == sorted(ids)
    assert sorted(m["id"] for m in two["messages"]) == sorted(ids)
    item = one["messages"][0]
    assert item["type"] == "log"
    assert item["receive_count"] == 3
    assert item["error"] == "RuntimeError: boom"
    assert item["source_queue"] == "log"
    assert item["sqs_message_id"] and item["sent_timestamp_ms"] and item["sent_at"]
    # And each peek is a receive on the dead-letter queue, which only counts it there
    assert {m["dead_letter_receive_count"] for m in two["messages"]} == {2}
    # And nothing left the queue or stayed hidden
    assert queue_depth(sqs, dlq) == {"visible": 3, "in_flight": 0, "delayed": 0}


async def test_peek_shows_at_most_limit(api_client: Any, sqs: Any, settings: Settings) -> None:
    await asyncio.to_thread(dead_letter, api_client.server.app, sqs, settings, *({"message": str(i)} for i in range(5)))
    response = await api_client.get("/queues/log/dead-letters?limit=2")
    assert response.status == 200
    assert (await response.json())["count"] == 2
    assert queue_depth(sqs, settings.queue_name("log") + "_dlq") == {"visible": 5, "in_flight": 0, "delayed": 0}


async def test_peek_of_an_empty_dead_letter_queue_is_empty(api_client: Any) -> None:
    response = await api_client.get("/queues/webhook/dead-letters")
    assert response.status == 200
    assert (await response.json())["messages"] == []


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize("limit", ["0", "101", "ten", "-1"])
async def test_a_limit_out_of_range_is_422(api_client: Any, limit: str) -> None:
    response = await api_client.get(f"/queues/log/dead-letters?limit={limit}")
    assert response.status == 422
    assert response.content_type == "application/problem+json"
    assert (await response.json())["errors"][0]["path"] == "/limit"


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_unknown_types_are_404(api_client: Any) -> None:
    assert (await api_client.get("/queues/nope/dead-letters")).status == 404
    response = await api_client.post("/queues/nope/redrive", json={})
    assert response.status == 404
    assert response.content_type == "application/problem+json"


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize("body", [{"ids": "x"}, {"ids": []}, {"ids": [1]}, {"all": True}, [], {"ids": ["a", "a"]}])
async def test_a_bad_redrive_body_is_422(api_client: Any, body: Any) -> None:
    response = await api_client.post("/queues/log/redrive", json=body)
    assert response.status == 422
    assert (await response.json())["errors"]


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_a_redrive_body_that_is_not_json_is_400(api_client: Any) -> None:
    response = await api_client.post("/queues/log/redrive", data=b"{", headers={"Content-Type": "application/json"})
    assert response.status == 400


async def test_redrive_of_all_moves_every_dead_letter_once(api_client: Any, sqs: Any, settings: Settings) -> None:
    # Given four dead letters
    ids = await asyncio.to_thread(
        dead_letter, api_client.server.app, sqs, settings, *({"message": str(i)} for i in range(4))
    )
    # When all are redriven (an empty body means all)
    response = await api_client.post("/queues/log/redrive")
    # Then the answer names each, by the fallback this server needs
    assert response.status == 200
    body = await response.json()
    assert body["method"] == "receive-send-delete"
    assert body["moved"] == 4
    assert sorted(body["ids"]) == sorted(ids)
    # And each is on the source queue once, without the dead-letter attributes, and the DLQ is empty
    assert queue_depth(sqs, settings.queue_name("log") + "_dlq") == {"visible": 0, "in_flight": 0, "delayed": 0}
    moved = await asyncio.to_thread(drain, sqs, settings.queue_name("log"), timeout=2)
    assert sorted(json.loads(base64.b64decode(m["Body"]))["message_id"] for m in moved) == sorted(ids)
    attrs = moved[0]["MessageAttributes"]
    assert set(attrs) == {"qm-type", "qm-message-id"}


async def test_redrive_of_selected_ids_moves_exactly_those(api_client: Any, sqs: Any, settings: Settings) -> None:
    # Given five dead letters
    ids = await asyncio.to_thread(
        dead_letter, api_client.server.app, sqs, settings, *({"message": str(i)} for i in range(5))
    )
    chosen = [ids[1], ids[3]]
    # When two of them, and an id that is not there, are redriven
    response = await api_client.post("/queues/log/redrive", json={"ids": [*chosen, "missing"]})
    # Then exactly those two moved, and the others stay on the dead-letter queue, visible at once
    assert response.status == 200
    body = await response.json()
    assert sorted(body["ids"]) == sorted(chosen)
    assert body["moved"] == 2
    assert body["not_found"] == ["missing"]
    dlq = settings.queue_name("log") + "_dlq"
    assert queue_depth(sqs, dlq) == {"visible": 3, "in_flight": 0, "delayed": 0}
    assert sorted(await asyncio.to_thread(queued_ids, sqs, settings.queue_name("log"))) == sorted(chosen)
    assert sorted(await asyncio.to_thread(queued_ids, sqs, dlq)) == sorted(set(ids) - set(chosen))


async def test_dead_letter_actions_are_audited_by_key_position_never_the_key(
    aiohttp_client: Any, sqs: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an API with two keys, used with the second
    client = await aiohttp_client(create_app(dataclasses.replace(settings, api_keys=("first-key", "second-key"))))
    await asyncio.to_thread(dead_letter, client.server.app, sqs, settings, {"message": "a"})
    headers = {"Authorization": "Bearer second-key"}
    # When it peeks and redrives
    with caplog.at_level(logging.INFO, logger="queue_manager.audit"):
        assert (await client.get("/queues/log/dead-letters", headers=headers)).status == 200
        assert (await client.post("/queues/log/redrive", json={}, headers=headers)).status == 200
    # Then each action is one audit line naming the key's position, the action, the queue and the count
    lines = [r for r in caplog.records if r.name == "queue_manager.audit"]
    dlq = settings.queue_name("log") + "_dlq"
    assert [r.getMessage() for r in lines] == [
        f"who=key#1 what=peek queue={dlq} count=1.",
        f"who=key#1 what=redrive queue={dlq} count=1 method=receive-send-delete.",
    ]
    assert not any("second-key" in r.getMessage() for r in caplog.records)


async def test_a_missing_dead_letter_queue_is_503(api_client: Any, sqs: Any, settings: Settings) -> None:
    sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=settings.queue_name("log") + "_dlq")["QueueUrl"])
    response = await api_client.get("/queues/log/dead-letters")
    assert response.status == 503
    assert "Retry-After" in response.headers


async def test_a_redriven_message_is_processed_by_a_worker(
    api_client: Any,
    sqs: Any,
    settings: Settings,
    broker: Callable[..., QMBroker],
    worker: Callable[..., InProcessWorker],
) -> None:
    # Given a dead letter and a worker for its type
    (message_id,) = await asyncio.to_thread(dead_letter, api_client.server.app, sqs, settings, {"message": "again"})
    qm = broker()
    done: list[Any] = []
    dramatiq.actor(broker=qm, actor_name="log", queue_name="log")(done.append)
    worker(qm, threads=2)
    # When it is redriven by id
    response = await api_client.post("/queues/log/redrive", json={"ids": [message_id]})
    assert (await response.json())["ids"] == [message_id]
    # Then the worker runs it
    await eventually(lambda: done, timeout=15, what="the redriven message processed")
    assert done == [{"message": "again"}]


class FakeClient:
    """A client whose server has StartMessageMoveTask; records the actions called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        self.calls.append("GetQueueAttributes")
        return {"Attributes": {"QueueArn": "arn:" + QueueUrl, "ApproximateNumberOfMessages": "7"}}

    def start_message_move_task(self, SourceArn: str, DestinationArn: str) -> dict[str, Any]:
        self.calls.append(f"StartMessageMoveTask {SourceArn} -> {DestinationArn}")
        return {"TaskHandle": "handle-1"}


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
def test_redrive_of_all_uses_a_move_task_where_the_server_has_one() -> None:
    client = FakeClient()
    result = deadletters.DeadLetters(client).redrive("dlq", "src")
    assert result.method == "start-message-move-task"
    assert result.moved == 7
    assert result.task_handle == "handle-1"
    assert "StartMessageMoveTask arn:dlq -> arn:src" in client.calls
    assert not any(c.startswith("Receive") for c in client.calls)
