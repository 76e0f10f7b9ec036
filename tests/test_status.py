"""Message status end to end: GET /messages/{id} and `qm status` over the real API and worker processes."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import pytest

from api import keys
from api.app import create_app
from queue_manager.settings import Settings
from queue_manager.state.base import STARTED, StatusEvent
from queue_manager.state.sqlite import DATABASE_NAME, SQLiteStatusEvents
from tests.conftest import VENV_BIN, Proc, Receiver
from tests.support import free_port, post_json, queue_depth, samples, wait_for

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def get_status(api: str, message_id: str, *, wait: float | None = None) -> tuple[int, Any]:
    url = f"{api}/messages/{message_id}" + (f"?wait={wait:g}" if wait is not None else "")
    try:
        with urllib.request.urlopen(url, timeout=40) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def post_webhook(api: str, url: str, *, headers: dict[str, str] | None = None) -> tuple[str, str]:
    request = urllib.request.Request(
        api + "/messages",
        data=json.dumps({"type": "webhook", "payload": {"url": url, "body": {}}}).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        return json.loads(response.read())["id"], response.headers["Location"]


def state_of(api: str, message_id: str, state: str, *, timeout: float = 30) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status, document = get_status(api, message_id)
        return document if status == 200 and document["state"] == state else None

    found: dict[str, Any] = wait_for(reached, timeout=timeout, what=f"state {state}")
    return found


def events(document: dict[str, Any]) -> list[tuple[str, int]]:
    return [(e["event"], e.get("attempt", 0)) for e in document["events"]]


@pytest.fixture(params=["sqlite", "dynamodb"])
def stack(
    request: pytest.FixtureRequest,
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    tmp_path: Path,
    settings: Settings,
) -> Callable[..., tuple[str, Proc]]:
    """The API and a worker sharing one state store: a state directory (as `make run`), or a DynamoDB table
    (as a fleet; the worker gets a state directory of its own, so the table is all they share)."""

    env = {"QM_STATE_DIR": str(tmp_path / "state")}
    own: dict[str, str] = {}
    if request.param == "dynamodb":
        env["QM_STATE_TABLE"] = f"{settings.queue_prefix}-state"
        own = {"QM_STATE_DIR": str(tmp_path / "worker-state")}

    def start(*, worker_env: dict[str, str] | None = None, with_worker: bool = True) -> tuple[str, Proc | None]:
        _, api = api_process(env=env)
        worker = worker_process(threads=2, env={**env, **own, **(worker_env or {})}) if with_worker else None
        return api, worker

    start.worker_env = {**env, **own}  # type: ignore[attr-defined]  # what another worker of the stack gets

    return start


@pytest.mark.e2e
def test_a_message_that_fails_twice_then_succeeds_reads_succeeded_after_three_attempts_with_both_errors(
    stack: Callable[..., tuple[str, Proc]], receiver: Receiver, settings: Settings
) -> None:
    # Given a receiver that answers 500, 503, then 200, and a worker allowed two retries
    receiver.statuses["/flaky"] = [500, 503, 200]
    api, _ = stack()
    # When a webhook is posted with a trace
    message_id, location = post_webhook(api, receiver.url("/flaky"), headers={"traceparent": TRACEPARENT})
    # Then the 202 says where its status is, and the status ends succeeded after three attempts
    assert location == f"/messages/{message_id}"
    document = state_of(api, message_id, "succeeded")
    assert document["attempts"] == 3
    assert document["type"] == "webhook"
    assert document["queue"] == settings.queue_name("webhook")
    assert document["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert document["stale"] is False
    assert events(document) == [
        ("accepted", 0), ("started", 1), ("retry_scheduled", 1), ("started", 2), ("retry_scheduled", 2),
        ("started", 3), ("succeeded", 3),
    ]  # fmt: skip
    errors = [e["error"] for e in document["events"] if e["event"] == "retry_scheduled"]
    assert "answered 500" in errors[0] and "answered 503" in errors[1]
    assert all(e["delay_ms"] >= 0 for e in document["events"] if e["event"] == "retry_scheduled")
    assert document["last_error"] == errors[1]
    assert document["accepted_at"] <= document["started_at"] <= document["finished_at"]
    # And `qm status` prints the same document (a final state answers a wait at once)
    started = time.monotonic()
    shown = subprocess.run(
        [str(VENV_BIN / "qm"), "--url", api, "status", message_id, "--wait", "20"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == document
    assert time.monotonic() - started < 10


@pytest.mark.e2e
def test_a_dead_lettered_message_redriven_that_then_succeeds_shows_its_whole_history(
    stack: Callable[..., tuple[str, Proc]], receiver: Receiver
) -> None:
    # Given a receiver that refuses the first delivery for good (400 dead-letters at once)
    receiver.statuses["/later"] = [400, 200]
    api, _ = stack()
    message_id, _ = post_webhook(api, receiver.url("/later"))
    dead = state_of(api, message_id, "dead_lettered")
    assert "400" in dead["dead_letter_reason"]
    assert dead["attempts"] == 1
    # When it is redriven
    code, moved = post_json(f"{api}/queues/webhook/redrive", {"ids": [message_id]})
    assert code == 200 and moved["ids"] == [message_id], moved
    # Then it runs again and succeeds, its history whole
    document = state_of(api, message_id, "succeeded")
    assert events(document) == [
        ("accepted", 0), ("started", 1), ("dead_lettered", 1), ("redriven", 0), ("started", 1), ("succeeded", 1),
    ]  # fmt: skip
    assert document["attempts"] == 2
    assert "400" in document["last_error"]


@pytest.mark.e2e
def test_a_worker_killed_mid_message_reads_running_then_the_next_attempt_after_redelivery(
    stack: Callable[..., tuple[str, Proc]], worker_process: Callable[..., Proc], receiver: Receiver, tmp_path: Path
) -> None:
    # Given a receiver that holds the first delivery for a long time (visibility timeout: 5 s)
    receiver.delays["/slow"] = 20.0
    api, worker = stack(worker_env={"QM_WEBHOOK_TIMEOUT_SECONDS": "30"})
    message_id, _ = post_webhook(api, receiver.url("/slow"))
    running = state_of(api, message_id, "running")
    assert running["attempts"] == 1
    # When the worker is killed mid-message
    worker.kill_all()
    worker.wait(10)
    # Then the status still says running: nobody knows better until SQS delivers it again
    assert get_status(api, message_id)[1]["state"] == "running"
    receiver.delays["/slow"] = 0.0
    worker_process(threads=2, env=stack.worker_env)  # type: ignore[attr-defined]
    document = state_of(api, message_id, "succeeded")
    assert events(document) == [("accepted", 0), ("started", 1), ("started", 2), ("succeeded", 2)]
    assert document["attempts"] == 2


@pytest.mark.e2e
def test_a_receive_handed_back_unrun_costs_no_retry(
    stack: Callable[..., tuple[str, Proc | None]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given a webhook whose receiver always answers 500
    receiver.statuses["/down"] = [500]
    api, _ = stack(with_worker=False)
    message_id, _ = post_webhook(api, receiver.url("/down"))
    # And its first receive handed back unrun, as a stopping worker hands back what it holds (SQS counts it)
    url = sqs.get_queue_url(QueueName=settings.queue_name("webhook"))["QueueUrl"]
    held = wait_for(
        lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1).get("Messages"),
        timeout=15,
        what="the message",
    )
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=held[0]["ReceiptHandle"], VisibilityTimeout=0)
    # When a worker allowed one retry runs it
    worker_process(threads=2, env={**stack.worker_env, "QM_MAX_RETRIES": "1"})  # type: ignore[attr-defined]
    # Then it runs twice, its first run and its one retry, before it is dead-lettered (counting
    # receives, it was dead-lettered after one run)
    document = state_of(api, message_id, "dead_lettered")
    assert len(receiver.to("/down")) == 2
    assert document["attempts"] == 2
    assert "retries exhausted after 2 attempt(s)" in document["dead_letter_reason"]


# -- the API alone (in process) ----------------------------------------------------------------


@pytest.fixture
async def status_api(aiohttp_client: Any, settings: Settings, tmp_path: Path) -> Any:
    return await aiohttp_client(create_app(dataclasses.replace(settings, state_dir=tmp_path)))


@pytest.mark.api
async def test_unknown_malformed_and_expired_ids(aiohttp_client: Any, settings: Settings, tmp_path: Path) -> None:
    client = await aiohttp_client(
        create_app(dataclasses.replace(settings, state_dir=tmp_path, status_retention_seconds=60))
    )
    old = str(uuid.uuid4())
    store = SQLiteStatusEvents(tmp_path / DATABASE_NAME, retention_seconds=60)
    store.write([StatusEvent(old, "accepted", time.time() - 120, type="log")])
    store.close()
    unknown = await client.get(f"/messages/{uuid.uuid4()}")
    assert unknown.status == 404
    assert unknown.content_type == "application/problem+json"
    for bad in ("not-an-id", "0B6F9A52-8C41-4B7E-9D0E-6A1F3F2B9C17", "x" * 3000, "%00", "batch"):
        response = await client.get(f"/messages/{bad}")
        assert response.status == 404, bad
        assert (await response.json())["type"] == "urn:queue-manager:problem:not-found"
    gone = await client.get(f"/messages/{old}")
    assert gone.status == 410
    assert "QM_STATUS_RETENTION_SECONDS" in (await gone.json())["detail"]
    for wait in ("31", "-1", "soon", "nan"):
        response = await client.get(f"/messages/{old}?wait={wait}")
        assert response.status == 422, wait


@pytest.mark.api
async def test_a_status_right_after_the_202_is_accepted_and_a_wait_answers_when_it_changes(status_api: Any) -> None:
    # Given a message just accepted (no worker)
    response = await status_api.post("/messages", json={"type": "log", "payload": {"message": "hi"}})
    assert response.status == 202
    message_id = (await response.json())["id"]
    assert response.headers["Location"] == f"/messages/{message_id}"
    first = await status_api.get(f"/messages/{message_id}")
    assert first.status == 200
    accepted = await first.json()
    assert (accepted["state"], accepted["attempts"], accepted["trace_id"]) == ("accepted", 0, None)
    # When a worker starts it while a client waits up to 20 s
    store = status_api.server.app[keys.STATUS_STORE]

    async def start_later() -> None:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(store.write, [StatusEvent(message_id, STARTED, time.time(), 1, type="log")])

    started = time.monotonic()
    waiting = asyncio.ensure_future(status_api.get(f"/messages/{message_id}?wait=20"))
    await start_later()
    answer = await waiting
    # Then the wait answers with the new state, long before its 20 s
    assert answer.status == 200
    assert (await answer.json())["state"] == "running"
    assert time.monotonic() - started < 5


@pytest.mark.api
async def test_every_accepted_entry_of_a_batch_has_its_status_url(status_api: Any) -> None:
    batch = {"messages": [{"type": "log", "payload": {"message": "a"}}, {"type": "log", "payload": {}}]}
    response = await status_api.post("/messages/batch", json=batch)
    assert response.status == 207
    results = (await response.json())["results"]
    assert results[0]["status_url"] == f"/messages/{results[0]['id']}"
    assert "status_url" not in results[1]
    status = await status_api.get(results[0]["status_url"])
    assert (await status.json())["state"] == "accepted"


@pytest.mark.api
async def test_a_delayed_message_reads_delayed_until_its_time(status_api: Any) -> None:
    response = await status_api.post(
        "/messages", json={"type": "log", "payload": {"message": "x"}, "delay_seconds": 600}
    )
    document = await (await status_api.get(response.headers["Location"])).json()
    assert document["state"] == "delayed"
    assert document["next_attempt_at"] > document["accepted_at"]


# Not on moto: its server does not answer a deduplicated send with the MessageId of the one that stands.
async def test_a_fifo_send_sqs_deduplicated_reads_deduplicated_and_names_the_message_that_stands(
    status_api: Any,
) -> None:
    envelope = {
        "type": "ordered",
        "group_id": "g1",
        "deduplication_id": "same-" + uuid.uuid4().hex,
        "payload": {"url": "http://127.0.0.1:9/hook", "body": {}},
    }
    first = await (await status_api.post("/messages", json=envelope)).json()
    second = await (
        await status_api.post("/messages", json={**envelope, "payload": {**envelope["payload"], "body": 2}})
    ).json()
    assert first["id"] != second["id"]
    standing = await (await status_api.get(f"/messages/{first['id']}")).json()
    dropped = await (await status_api.get(f"/messages/{second['id']}")).json()
    assert standing["state"] == "accepted"
    assert (dropped["state"], dropped["stands"]) == ("deduplicated", first["id"])


@pytest.mark.api
async def test_a_store_that_cannot_be_written_never_fails_a_202_and_counts_the_failed_writes(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    # Given a state directory where the status database cannot be opened
    (tmp_path / DATABASE_NAME).mkdir()
    client = await aiohttp_client(create_app(dataclasses.replace(settings, state_dir=tmp_path)))
    # When messages are posted
    ids = []
    for n in range(3):
        response = await client.post("/messages", json={"type": "log", "payload": {"message": str(n)}})
        assert response.status == 202
        ids.append((await response.json())["id"])
    # Then every write is counted as failed, and a read is a 503 that says why
    writer = client.server.app[keys.STATUS_WRITER]
    await asyncio.to_thread(wait_for, lambda: writer.counts["failed"] == 3, timeout=10, what="three failed writes")
    metrics = samples(await (await client.get("/metrics")).text())
    assert metrics[("qm_status_writes_total", (("outcome", "failed"),))] == 3
    read = await client.get(f"/messages/{ids[0]}")
    assert read.status == 503
    assert "status store" in (await read.json())["detail"]


@pytest.mark.api
async def test_status_off_answers_404_and_records_nothing(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, state_dir=tmp_path, status=False)))
    response = await client.post("/messages", json={"type": "log", "payload": {"message": "x"}})
    assert response.status == 202
    read = await client.get(response.headers["Location"])
    assert read.status == 404
    assert "off" in (await read.json())["detail"]
    assert not (tmp_path / DATABASE_NAME).exists()


@pytest.mark.e2e
def test_a_worker_whose_status_store_is_broken_still_processes_and_acks_and_counts_the_failed_writes(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
    tmp_path: Path,
) -> None:
    # Given a worker whose state directory holds a directory where the status database should be
    broken = tmp_path / "broken"
    (broken / DATABASE_NAME).mkdir(parents=True)
    metrics_port = free_port()
    _, api = api_process(env={"QM_STATE_DIR": str(tmp_path / "api")})
    worker_process(threads=2, env={"QM_STATE_DIR": str(broken), "QM_WORKER_METRICS_PORT": str(metrics_port)})
    # When webhooks are posted
    ids = [post_webhook(api, receiver.url("/ok"))[0] for _ in range(3)]
    # Then every one is delivered and acknowledged (the queue empties)
    wait_for(lambda: len(receiver.to("/ok")) == 3, timeout=30, what="three deliveries")
    wait_for(lambda: sum(queue_depth(sqs, settings.queue_name("webhook")).values()) == 0, timeout=30, what="acks")

    # And the worker counts its failed status writes (a start and a success each)
    def failed() -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        except OSError:  # the master's metrics fork is not serving yet
            return -1.0
        return samples(text).get(("qm_status_writes_total", (("outcome", "failed"),)), 0.0)

    wait_for(lambda: failed() == 6, timeout=10, what="six failed status writes")
    # And the API's own record stands
    assert {get_status(api, i)[1]["state"] for i in ids} == {"accepted"}


@pytest.mark.api
async def test_a_dead_letter_the_redrive_policy_moved_is_recorded_when_the_listing_shows_it(
    status_api: Any, sqs: Any, settings: Settings
) -> None:
    # Given a message whose worker crashed on every attempt: SQS moved it, with none of our attributes
    app = status_api.server.app
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="log", actor_name="log", args=({"message": "x"},), kwargs={}, options={}
    )
    entry = app[keys.BROKER].build_entry(message, None)
    url = sqs.get_queue_url(QueueName=settings.queue_name("log") + "_dlq")["QueueUrl"]
    await asyncio.to_thread(
        sqs.send_message, QueueUrl=url, MessageBody=entry["MessageBody"], MessageAttributes=entry["MessageAttributes"]
    )
    store = app[keys.STATUS_STORE]
    now = time.time()
    await asyncio.to_thread(
        store.write,
        [
            StatusEvent(message.message_id, "accepted", now - 60, type="log"),
            StatusEvent(message.message_id, STARTED, now - 50, 1, type="log"),
        ],
    )
    before = await (await status_api.get(f"/messages/{message.message_id}")).json()
    assert before["state"] == "running"
    # When the dead-letter listing shows it (twice)
    for _ in range(2):
        assert (await status_api.get("/queues/log/dead-letters")).status == 200
    # Then its status says dead-lettered by the redrive policy, recorded once
    after = await (await status_api.get(f"/messages/{message.message_id}?wait=5")).json()
    assert after["state"] == "dead_lettered"
    assert "redrive policy" in after["dead_letter_reason"]
    assert [e["event"] for e in after["events"]] == ["accepted", "started", "dead_lettered"]
