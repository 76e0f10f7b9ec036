"""The fleet's state store on a real DynamoDB (ministack, or moto server): the table, status events
in batches, and idempotency keys moved by conditional writes.

A keyed message costs two requests (claim and done); status events cost a share of one
BatchWriteItem per write of up to 25 messages; counted here, exactly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from queue_manager.settings import Settings
from queue_manager.state import dynamodb
from queue_manager.state.base import ACCEPTED, STARTED, SUCCEEDED, StatusEvent, StoreUnavailable
from queue_manager.state.dynamodb import DynamoStatusEvents, TableMissing
from queue_manager.state.dynamodb_keys import DynamoIdempotencyKeys
from queue_manager.state.idempotency import Claim, KeyReused
from tests.conftest import SQS_KIND
from tests.support import free_port

pytestmark = pytest.mark.api

#: moto server checks a condition and writes without a lock: of 60 rounds of 16 racing conditional
#: PutItems on one key, 3 had two winners (ministack and DynamoDB make each write atomic: 0 of 60).
#: Races are tested on ministack; everything else on both.
racing = pytest.mark.skipif(SQS_KIND == "moto", reason="moto server's conditional writes are not atomic under races")


@pytest.fixture
def state_settings(settings: Settings, sqs_env: dict[str, str]) -> Settings:
    """This test's settings with a DynamoDB table of its own (not created yet) on the test server."""
    return dataclasses.replace(
        settings,
        state_table=f"{settings.queue_prefix}-state",
        state_endpoint_url=sqs_env["AWS_ENDPOINT_URL_DYNAMODB"],
    )


@pytest.fixture
def table(state_settings: Settings) -> Iterator[Any]:
    """The test's table, created as start-up creates it; deleted afterwards. Yields a plain client."""
    client = dynamodb.client(state_settings, timeout_seconds=dynamodb.TABLE_CALL_TIMEOUT_SECONDS)
    assert state_settings.state_table is not None
    assert dynamodb.ensure_table(client, state_settings.state_table, create=True)
    yield client
    client.delete_table(TableName=state_settings.state_table)
    client.close()


def events_of(message_id: str, *, at: float = 1_700_000_000.0) -> list[StatusEvent]:
    return [
        StatusEvent(message_id, ACCEPTED, at, type="log", queue="qm_log"),
        StatusEvent(message_id, STARTED, at + 1, attempt=1),
        StatusEvent(message_id, SUCCEEDED, at + 2, attempt=1, detail={"took_ms": 12}),
    ]


# The table


def test_the_table_is_created_once_with_its_ttl_and_creating_it_again_is_harmless(
    state_settings: Settings, table: Any
) -> None:
    # Given the table start-up created
    name = state_settings.state_table
    described = table.describe_table(TableName=name)["Table"]
    # Then it has the shared layout: pk and sk strings, on demand, TTL on `expires`
    assert {k["AttributeName"]: k["KeyType"] for k in described["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    assert described["TableStatus"] == "ACTIVE"
    ttl = table.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires")
    # And a second start-up (another process, another host) finds it and changes nothing
    assert dynamodb.ensure_table(table, name, create=True)
    assert dynamodb.ensure_table(table, name, create=False)


def test_a_missing_table_that_must_not_be_created_is_an_error_naming_the_settings(state_settings: Settings) -> None:
    client = dynamodb.client(state_settings, timeout_seconds=dynamodb.TABLE_CALL_TIMEOUT_SECONDS)
    with pytest.raises(TableMissing) as raised:
        dynamodb.ensure_table(client, "nobody-made-this", create=False)
    assert "'nobody-made-this' (QM_STATE_TABLE) does not exist and QM_CREATE_TABLES=false" in str(raised.value)


def test_dynamodb_out_of_reach_at_start_up_is_not_an_error(state_settings: Settings) -> None:
    # Given an endpoint nobody listens on: start-up goes on (keyed requests will be 503s)
    dead = dataclasses.replace(state_settings, state_endpoint_url=f"http://127.0.0.1:{free_port()}")
    assert dynamodb.ensure_table(dynamodb.client(dead), "any", create=True) is False


def test_the_dynamodb_endpoint_comes_from_the_aws_variables_as_sqs_does() -> None:
    assert Settings.from_env({}).state_endpoint_url is None
    assert Settings.from_env({"AWS_ENDPOINT_URL": "http://a:1"}).state_endpoint_url == "http://a:1"
    both = {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_DYNAMODB": "http://b:2"}
    assert Settings.from_env(both).state_endpoint_url == "http://b:2"
    assert Settings.from_env({"QM_STATE_TABLE": "qm-state"}).state_table == "qm-state"
    assert Settings.from_env({"QM_STATE_TABLE": ""}).state_table is None
    assert Settings.from_env({"QM_CREATE_TABLES": "false"}).create_tables is False


# Status events


def test_status_events_round_trip_oldest_first(state_settings: Settings, table: Any) -> None:
    # Given events of two messages, written in one call, out of order
    store = DynamoStatusEvents(table, state_settings.state_table)
    one, two = events_of("m-1"), events_of("m-2", at=1_700_000_100.0)
    store.write([one[2], two[0], one[0], two[1], one[1]])
    # Then each message reads back its own events, oldest first, exactly as written
    assert store.read("m-1") == one
    assert store.read("m-2") == two[:2]
    assert store.read("unknown") == []
    # And the write was one request: one item per message, both in one BatchWriteItem
    assert store.requests["BatchWriteItem"] == 1
    # And each item expires its retention after its newest event (the TTL DynamoDB purges by)
    item = table.get_item(
        TableName=state_settings.state_table, Key={"pk": {"S": "msg#m-1"}, "sk": {"S": "ev#" + one[0].key}}
    )["Item"]
    assert int(item["expires"]["N"]) == int(one[2].at + dynamodb.DEFAULT_STATUS_RETENTION_SECONDS)


def test_a_write_of_more_than_25_messages_goes_in_batches_of_25(state_settings: Settings, table: Any) -> None:
    # Given 60 messages of three events each, written in one call
    store = DynamoStatusEvents(table, state_settings.state_table)
    messages = [f"m-{i}" for i in range(60)]
    store.write([e for m in messages for e in events_of(m)])
    # Then it took three requests (25 + 25 + 10 items), 0.05 per message
    assert store.requests["BatchWriteItem"] == 3
    # And every message has all its events
    for m in messages:
        assert [e.kind for e in store.read(m)] == [ACCEPTED, STARTED, SUCCEEDED]


def test_writing_the_same_events_again_is_harmless(state_settings: Settings, table: Any) -> None:
    store = DynamoStatusEvents(table, state_settings.state_table)
    events = events_of("m-1")
    # When the same events are written again, alone and within a larger write
    store.write(events)
    store.write(events)
    store.write([events[2], *events_of("m-2")])
    # Then each is read once
    assert store.read("m-1") == events


def test_a_message_with_many_items_is_read_across_pages(state_settings: Settings, table: Any) -> None:
    # Given a message whose events came in seven writes, read two items a page
    store = DynamoStatusEvents(table, state_settings.state_table, page_size=2)
    events = [StatusEvent("m-1", STARTED, 1_700_000_000.0 + i, attempt=i + 1) for i in range(7)]
    for event in reversed(events):
        store.write([event])
    # Then every event is read, oldest first, over four queries
    assert store.read("m-1") == events
    assert store.requests["Query"] == 4


def test_status_writes_and_reads_raise_store_unavailable_when_dynamodb_is_out_of_reach(
    state_settings: Settings,
) -> None:
    dead = dataclasses.replace(state_settings, state_endpoint_url=f"http://127.0.0.1:{free_port()}")
    store = DynamoStatusEvents(dead)
    with pytest.raises(StoreUnavailable, match="DynamoDB cannot be reached"):
        store.write(events_of("m-1"))
    with pytest.raises(StoreUnavailable):
        store.read("m-1")


# Idempotency keys


@pytest.fixture
async def keys_store(state_settings: Settings, table: Any) -> Any:
    """Open DynamoDB idempotency stores on the test's table (closed at teardown); `lease_seconds` per store."""
    opened: list[DynamoIdempotencyKeys] = []

    async def open_store(*, lease_seconds: float = 30.0) -> DynamoIdempotencyKeys:
        store = DynamoIdempotencyKeys(state_settings, lease_seconds=lease_seconds)
        await store.open()
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        await store.close()


async def test_a_key_is_claimed_once_then_replays_its_answer_on_every_store(keys_store: Callable[..., Any]) -> None:
    # Given two stores on one table: two API hosts
    here, there = await keys_store(), await keys_store()
    # When a key is claimed on one
    first = await here.claim("k-1", "fp")
    # Then that one sends; the other host, while it does, waits
    assert first.owner is not None and not first.resend
    assert await there.claim("k-1", "fp") == Claim()
    # And once it is done, both replay its answer
    here.done("k-1", "fp", {"id": "m-1"})
    await here.flush()
    assert (await there.claim("k-1", "fp")).answer == {"id": "m-1"}
    assert (await here.claim("k-1", "fp")).answer == {"id": "m-1"}
    # And the same key with another message is refused
    with pytest.raises(KeyReused):
        await there.claim("k-1", "another")
    # And a refused claim cost one request: DynamoDB handed back the item with the refusal
    assert there.requests == {"PutItem": 3}


async def test_claim_and_done_are_two_requests_per_keyed_message(keys_store: Callable[..., Any]) -> None:
    store = await keys_store()
    for i in range(20):
        claim = await store.claim(f"k-{i}", "fp")
        assert claim.owner is not None
        store.done(f"k-{i}", "fp", {"id": f"m-{i}"})
    await store.close()
    assert store.requests == {"PutItem": 20, "UpdateItem": 20}


async def test_an_unknown_outcome_is_sent_again_by_the_next_claim_and_a_refused_one_frees_the_key(
    keys_store: Callable[..., Any],
) -> None:
    here, there = await keys_store(), await keys_store()
    # Given a send whose outcome is unknown
    first = await here.claim("k-1", "fp")
    here.failed("k-1", first.owner, unknown=True)
    await here.flush()
    # Then the next claim, on any host, sends it again (same key, same message id) and others wait
    again = await there.claim("k-1", "fp")
    assert again.owner is not None and again.resend
    assert (await here.claim("k-1", "fp")).owner is None
    # Given a send that surely did not reach SQS
    second = await here.claim("k-2", "fp")
    here.failed("k-2", second.owner, unknown=False)
    await here.flush()
    # Then the key is free, for another message too
    assert (await there.claim("k-2", "other")).owner is not None


@racing
async def test_a_pending_key_past_its_lease_is_taken_over_by_exactly_one_of_racing_hosts(
    keys_store: Callable[..., Any],
) -> None:
    # Given a key whose owner died mid-send (its lease is 0.2 s)
    dead = await keys_store(lease_seconds=0.2)
    assert (await dead.claim("k-1", "fp")).owner is not None
    await asyncio.sleep(0.3)  # past the lease (the state under test, not an assertion)
    # When four hosts (whose own leases are long) claim it at once
    stores = [await keys_store() for _ in range(4)]
    claims = await asyncio.gather(*(s.claim("k-1", "fp") for s in stores))
    # Then exactly one sends it again, and the others wait for it
    owners = [c for c in claims if c.owner is not None]
    assert len(owners) == 1 and owners[0].resend
    assert all(c.answer is None for c in claims)


@racing
async def test_a_key_claimed_at_once_on_many_hosts_has_one_owner(keys_store: Callable[..., Any]) -> None:
    stores = [await keys_store() for _ in range(4)]
    keys = [f"k-{uuid.uuid4().hex[:6]}" for _ in range(5)]
    claims = await asyncio.gather(*(s.claim(k, "fp") for k in keys for s in stores))
    for i in range(len(keys)):
        assert sum(c.owner is not None for c in claims[i * 4 : (i + 1) * 4]) == 1


async def test_a_claim_with_dynamodb_out_of_reach_raises_store_unavailable_fast(state_settings: Settings) -> None:
    dead = dataclasses.replace(
        state_settings, state_endpoint_url=f"http://127.0.0.1:{free_port()}", state_timeout_seconds=0.5
    )
    store = DynamoIdempotencyKeys(dead, lease_seconds=30)
    await store.open()  # out of reach: start-up goes on
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(StoreUnavailable, match="DynamoDB cannot be reached"):
            await store.claim("k-1", "fp")
        assert loop.time() - started < 3
    finally:
        await store.close()


async def test_a_plain_client_sees_the_shared_layout_of_a_key(keys_store: Callable[..., Any], table: Any) -> None:
    # The layout the status half and operators rely on: key#<prefix>#<key>, sk "key", a TTL of the window
    store = await keys_store()
    await store.claim("k-1", "fp")
    item = table.get_item(
        TableName=store.table,
        Key={"pk": {"S": f"key#{store.queue_prefix}#k-1"}, "sk": {"S": "key"}},
        ConsistentRead=True,
    )["Item"]
    assert item["state"] == {"S": "pending"}
    assert abs(int(item["expires"]["N"]) - (time.time() + store.window_seconds)) < 5


# Throttling: DynamoDB's answers injected into a real client (botocore's before-call hook answers in
# the server's place), everything else on the real server.


class _Answer:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


def throttle(
    client: Any, operation: str, *, times: int, answer: Callable[[dict[str, Any]], dict[str, Any]]
) -> list[int]:
    """Answer the next `times` calls of `operation` with `answer(request)` instead of the server; counts them."""
    calls: list[int] = []

    def hook(params: dict[str, Any], **_: Any) -> Any:
        if len(calls) >= times:
            return None
        calls.append(1)
        parsed = answer(json.loads(params["body"]))  # the request as sent (DynamoDB speaks JSON)
        return _Answer(400 if "Error" in parsed else 200), parsed

    client.meta.events.register(f"before-call.dynamodb.{operation}", hook)
    return calls


THROTTLED = {"Error": {"Code": "ThrottlingException", "Message": "Rate of requests exceeds the allowed throughput."}}


def test_unprocessed_status_items_are_written_again_with_backoff_then_given_up(
    state_settings: Settings, table: Any
) -> None:
    store = DynamoStatusEvents(table, state_settings.state_table)
    # Given DynamoDB leaves every item unprocessed twice, then takes them
    unprocessed = throttle(table, "BatchWriteItem", times=2, answer=lambda p: {"UnprocessedItems": p["RequestItems"]})
    store.write(events_of("m-1"))
    # Then the write went through on the third request
    assert (len(unprocessed), store.requests["BatchWriteItem"]) == (2, 3)
    assert len(store.read("m-1")) == 3
    # Given DynamoDB leaves them unprocessed every time
    throttle(table, "BatchWriteItem", times=99, answer=lambda p: {"UnprocessedItems": p["RequestItems"]})
    # Then the write gives up after its bounded attempts, saying why
    with pytest.raises(StoreUnavailable, match="unprocessed after 5 attempts"):
        store.write(events_of("m-2"))


async def test_a_throttled_claim_is_503_state_unavailable_and_nothing_is_sent(
    aiohttp_client: Any, state_settings: Settings, table: Any, tmp_path: Any
) -> None:
    from api import keys
    from api.app import create_app

    # Given the API on DynamoDB, whose PutItems are throttled (after botocore's own retry)
    client = await aiohttp_client(create_app(dataclasses.replace(state_settings, state_dir=tmp_path)))
    store = client.server.app[keys.IDEMPOTENCY]
    throttled = throttle(store.client, "PutItem", times=99, answer=lambda p: THROTTLED)
    # When a keyed message is posted
    response = await client.post(
        "/messages", json={"type": "log", "payload": {"message": "x"}}, headers={"Idempotency-Key": "k"}
    )
    # Then it is a 503 state-unavailable, and SQS was never asked
    assert response.status == 503
    body = await response.json()
    assert body["type"] == "urn:queue-manager:problem:state-unavailable"
    assert "ThrottlingException" not in body["detail"]  # the log has it; the client gets advice
    assert response.headers["Retry-After"] == "1"
    assert throttled
    counts = client.server.app[keys.BROKER].request_counts()
    assert counts.get("SendMessage", 0) + counts.get("SendMessageBatch", 0) == 0
    # And an unkeyed message is accepted meanwhile
    response = await client.post("/messages", json={"type": "log", "payload": {"message": "y"}})
    assert response.status == 202


async def test_a_key_whose_window_is_over_is_a_new_key(state_settings: Settings, table: Any) -> None:
    # Given a key done within a window of 1 s (its item expires at the next whole second after it)
    store = DynamoIdempotencyKeys(dataclasses.replace(state_settings, idempotency_window_seconds=1), lease_seconds=30)
    await store.open()
    try:
        claim = await store.claim("k-1", "fp")
        store.done("k-1", "fp", {"id": "m-1"})
        await store.flush()
        assert (await store.claim("k-1", "fp")).answer == {"id": "m-1"}
        await asyncio.sleep(2.1)  # past the window, before DynamoDB's TTL purge (the state under test)
        # When the key comes again, with another message
        again = await store.claim("k-1", "another")
        # Then it is claimed afresh: not a replay, not a reuse
        assert again.owner is not None and again.owner != claim.owner and not again.resend
    finally:
        await store.close()
