"""One Idempotency-Key, one message across API hosts: real `qm-api` processes that share nothing but
a DynamoDB table (QM_STATE_TABLE), each with a state folder of its own, as two machines behind a
load balancer would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from queue_manager.settings import Settings
from queue_manager.state import dynamodb
from tests.conftest import SQS_KIND, VENV_BIN, Proc, settings_env
from tests.support import drain, free_port, wait_for

pytestmark = pytest.mark.api

PROBLEM_TYPE = "urn:queue-manager:problem:state-unavailable"


@pytest.fixture
def state_table(settings: Settings, sqs_env: dict[str, str]) -> Iterator[str]:
    """The name of this test's table (the APIs create it); deleted afterwards."""
    name = f"{settings.queue_prefix}-state"
    yield name
    client = dynamodb.client(Settings(state_endpoint_url=sqs_env["AWS_ENDPOINT_URL_DYNAMODB"]))
    with contextlib.suppress(client.exceptions.ResourceNotFoundException):
        client.delete_table(TableName=name)


def log_messages(sqs: Any, settings: Settings) -> list[dict[str, Any]]:
    """The log messages on the queue (left in flight), decoded."""
    return [json.loads(base64.b64decode(m["Body"])) for m in drain(sqs, settings.queue_name("log"), timeout=3)]


def start_hosts(api_process: Callable[..., tuple[Proc, str]], tmp_path: Path, table: str) -> list[str]:
    """Two API processes on one table, each with a state folder of its own: two hosts of a fleet."""
    urls = []
    for host in ("one", "two"):
        _, url = api_process(env={"QM_STATE_DIR": str(tmp_path / host), "QM_STATE_TABLE": table})
        urls.append(url)
    return urls


async def test_a_key_posted_to_two_hosts_at_once_is_one_message_and_a_retry_on_either_replays(
    api_process: Callable[..., tuple[Proc, str]], settings: Settings, sqs: Any, tmp_path: Path, state_table: str
) -> None:
    # Given two API hosts that share a DynamoDB table and nothing else
    one, two = await asyncio.to_thread(start_hosts, api_process, tmp_path, state_table)
    keys = [f"order-{i}" for i in range(5)]
    async with ClientSession() as session:

        async def post(url: str, key: str) -> tuple[int, dict[str, Any], str | None]:
            document = {"type": "log", "payload": {"message": key}}
            async with session.post(url + "/messages", json=document, headers={"Idempotency-Key": key}) as r:
                return r.status, await r.json(), r.headers.get("Idempotent-Replayed")

        # When each key is posted to both hosts at once (one after the other on moto server, whose
        # conditional writes are not atomic under races: see tests/test_state_dynamodb.py)
        if SQS_KIND == "moto":
            answers = [await post(url, key) for key in keys for url in (one, two)]
        else:
            answers = await asyncio.gather(*(post(url, key) for key in keys for url in (one, two)))
        # Then both hosts answer 202 with the same id, one of them as a replay of the other's send
        for i, key in enumerate(keys):
            first, second = answers[2 * i], answers[2 * i + 1]
            assert first[0] == second[0] == 202, (first, second)
            assert first[1] == second[1], key
            assert sorted([first[2], second[2]], key=str) == sorted([None, "true"], key=str), (key, first, second)
        # And a retry on either host replays it
        for i, key in enumerate(keys):
            for url in (two, one):
                assert await post(url, key) == (202, answers[2 * i][1], "true")
    # And SQS holds exactly one message per key
    queued = await asyncio.to_thread(log_messages, sqs, settings)
    assert sorted(m["args"][0]["message"] for m in queued) == keys
    assert {m["message_id"] for m in queued} == {a[1]["id"] for a in answers}


async def test_with_dynamodb_out_of_reach_a_keyed_post_is_503_state_unavailable_and_nothing_is_sent(
    api_process: Callable[..., tuple[Proc, str]], settings: Settings, sqs: Any, tmp_path: Path
) -> None:
    # Given an API whose DynamoDB endpoint refuses connections (it starts anyway)
    dead = f"http://127.0.0.1:{free_port()}"
    _, url = await asyncio.to_thread(
        api_process,
        env={"QM_STATE_DIR": str(tmp_path), "QM_STATE_TABLE": "qm-state", "AWS_ENDPOINT_URL_DYNAMODB": dead},
    )
    async with ClientSession() as session:
        # When a keyed message is posted
        keyed = {"type": "log", "payload": {"message": "keyed"}}
        async with session.post(url + "/messages", json=keyed, headers={"Idempotency-Key": "k-1"}) as r:
            status, body, retry_after = r.status, await r.json(content_type=None), r.headers.get("Retry-After")
        # Then it is a 503 state-unavailable with Retry-After: the key could not be checked, so it was not sent
        assert status == 503, body
        assert body["type"] == PROBLEM_TYPE
        assert "was not sent" in body["detail"]
        assert retry_after == "1"
        # And a message without a key is accepted as ever: it never touches the store
        async with session.post(url + "/messages", json={"type": "log", "payload": {"message": "plain"}}) as r:
            assert r.status == 202, await r.text()
    queued = await asyncio.to_thread(log_messages, sqs, settings)
    assert [m["args"][0]["message"] for m in queued] == ["plain"]


def test_without_the_table_and_with_qm_create_tables_false_the_api_refuses_to_start(
    spawn: Callable[..., Proc], settings: Settings, tmp_path: Path
) -> None:
    # Given QM_CREATE_TABLES=false and a table nobody made
    env = {
        **settings_env(settings),
        "QM_PORT": str(free_port()),
        "QM_STATE_TABLE": "nobody-made-this",
        "QM_CREATE_TABLES": "false",
        "QM_STATE_DIR": str(tmp_path),
    }
    proc = spawn([str(VENV_BIN / "qm-api")], env=env, name="api")
    # When the API starts, then it stops with status 2 and a line naming the table and the setting
    wait_for(lambda: proc.process.poll() is not None, timeout=30, what="the API to stop")
    assert proc.process.returncode == 2, proc.output()
    assert (
        "qm-api: cannot start: The DynamoDB table 'nobody-made-this' (QM_STATE_TABLE) does not exist" in proc.output()
    )
    assert "QM_CREATE_TABLES=false" in proc.output()
    assert "Traceback" not in proc.output()
