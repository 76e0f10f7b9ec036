"""FIFO and fair queues at the API: queues created FIFO, the envelope's group fields and their 422s,
deduplication, the OpenAPI document, and the send batcher keeping each group's order."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dramatiq
import pytest

from api import keys
from api.sender import Sender
from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from queue_manager.sqs.errors import SQSOutcomeUnknown
from queue_manager.sqs.sending import SendResult
from tests.support import eventually, post_json, problem

pytestmark = pytest.mark.api

RECEIVER = "http://127.0.0.1:9/never-called"


def ordered(group: str | None = "g1", **extra: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = {"type": "ordered", "payload": {"url": RECEIVER, "body": {"n": 1}}, **extra}
    if group is not None:
        envelope["group_id"] = group
    return envelope


def read_in_order(sqs: Any, url: str, *, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Receive and delete every message of a queue, in the order SQS hands them out."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    empty = 0
    while time.monotonic() < deadline and empty < 2:
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageSystemAttributeNames=["All"]
        ).get("Messages", [])
        empty = 0 if batch else empty + 1
        for message in batch:
            got.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if not batch:
            time.sleep(0.2)
    return got


def body_of(message: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(message["Body"]))


def by_group(messages: list[dict[str, Any]]) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = {}
    for m in messages:
        groups.setdefault(m["Attributes"]["MessageGroupId"], []).append(body_of(m)["args"][0])
    return groups


async def test_a_fifo_type_has_a_fifo_queue_and_a_fifo_dead_letter_queue_behind_its_redrive_policy(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given the API started (it creates the queues of every type)
    name = f"{settings.queue_prefix}_ordered.fifo"
    # Then the ordered type's queue and dead-letter queue are FIFO, deduplicating by id only
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    dlq_url = sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_ordered_dlq.fifo")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    dlq_attrs = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
    assert (attrs["FifoQueue"], attrs["ContentBasedDeduplication"]) == ("true", "false")
    assert (dlq_attrs["FifoQueue"], dlq_attrs["ContentBasedDeduplication"]) == ("true", "false")
    # And its redrive policy points at the FIFO dead-letter queue
    policy = json.loads(attrs["RedrivePolicy"])
    assert policy["deadLetterTargetArn"] == dlq_attrs["QueueArn"]
    assert int(policy["maxReceiveCount"]) == settings.max_retries + 1 + settings.spare_receives
    # And the standard types stay standard
    assert sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_webhook")["QueueUrl"]
    # And /queues names both FIFO queues as SQS does
    listed = {q["type"]: q for q in (await (await api_client.get("/queues")).json())["queues"]}
    assert (listed["ordered"]["name"], listed["ordered"]["dead_letter"]["name"]) == (
        name,
        f"{settings.queue_prefix}_ordered_dlq.fifo",
    )


async def test_a_fifo_message_goes_out_with_its_group_and_its_message_id_as_deduplication_id(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # When an ordered message is posted with a group
    response = await api_client.post("/messages", json=ordered("customer-42"))
    answer = await response.json()
    # Then it is accepted onto the FIFO queue
    assert response.status == 202, answer
    assert answer["queue"] == f"{settings.queue_prefix}_ordered.fifo"
    # And SQS has it with that group and the message id as its deduplication id
    url = sqs.get_queue_url(QueueName=answer["queue"])["QueueUrl"]
    [message] = await asyncio.to_thread(read_in_order, sqs, url)
    assert message["Attributes"]["MessageGroupId"] == "customer-42"
    assert message["Attributes"]["MessageDeduplicationId"] == answer["id"]
    # And the actor can see its group
    assert body_of(message)["options"]["group_id"] == "customer-42"


async def test_two_messages_with_one_deduplication_id_are_one_sqs_message(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # When two different messages are posted with the same deduplication id (the first still queued:
    # moto server forgets an id once its message is deleted, AWS and ministack keep it 5 minutes)
    first = await api_client.post("/messages", json=ordered("g", deduplication_id="order-7-paid"))
    second = await api_client.post(
        "/messages",
        json={**ordered("g", deduplication_id="order-7-paid"), "payload": {"url": RECEIVER, "body": {"n": 2}}},
    )
    # Then both are accepted and SQS holds the first only
    assert (first.status, second.status) == (202, 202)
    url = sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_ordered.fifo")["QueueUrl"]
    messages = await asyncio.to_thread(read_in_order, sqs, url)
    assert [body_of(m)["args"][0]["body"] for m in messages] == [{"n": 1}]
    assert messages[0]["Attributes"]["MessageDeduplicationId"] == "order-7-paid"


async def test_a_group_id_on_a_standard_type_sets_the_fair_queue_group(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # When a webhook (a standard queue) is posted with a group id
    response = await api_client.post(
        "/messages", json={"type": "webhook", "payload": {"url": RECEIVER, "body": 1}, "group_id": "tenant-a"}
    )
    assert response.status == 202, await response.text()
    # Then SQS has it with that MessageGroupId and no deduplication id
    url = sqs.get_queue_url(QueueName=settings.queue_name("webhook"))["QueueUrl"]
    [message] = await asyncio.to_thread(read_in_order, sqs, url)
    assert message["Attributes"]["MessageGroupId"] == "tenant-a"
    assert "MessageDeduplicationId" not in message["Attributes"]


@pytest.mark.parametrize(
    ("envelope", "path", "keyword", "says"),
    [
        (ordered(None), "/group_id", "required", "'group_id' is a required property: 'ordered' messages go to a FIFO"),
        (ordered(delay_seconds=5), "/delay_seconds", "additionalProperties", "cannot delay per message"),
        (ordered(delay_seconds=0), "/delay_seconds", "additionalProperties", "cannot delay per message"),
        (
            {"type": "webhook", "payload": {"url": RECEIVER, "body": 1}, "deduplication_id": "d"},
            "/deduplication_id",
            "additionalProperties",
            "only FIFO types deduplicate",
        ),
        (ordered(""), "/group_id", "pattern", "does not match"),
        (ordered("x" * 129), "/group_id", "pattern", "does not match"),
        (ordered("has space"), "/group_id", "pattern", "does not match"),
        (ordered("café"), "/group_id", "pattern", "does not match"),
        (ordered(7), "/group_id", "type", "is not of type 'string'"),
        (ordered(deduplication_id="y" * 129), "/deduplication_id", "pattern", "does not match"),
    ],
    ids=[
        "fifo-without-group",
        "fifo-with-delay",
        "fifo-with-zero-delay",
        "standard-with-dedup",
        "empty-group",
        "group-too-long",
        "group-with-space",
        "group-not-ascii",
        "group-not-a-string",
        "dedup-too-long",
    ],
)
async def test_group_fields_that_break_the_queue_rules_are_422_naming_the_field(
    api_client: Any, envelope: dict[str, Any], path: str, keyword: str, says: str
) -> None:
    body = await problem(await api_client.post("/messages", json=envelope), 422)
    assert body["type"] == "urn:queue-manager:problem:invalid-message"
    assert (body["errors"][0]["path"], body["errors"][0]["keyword"]) == (path, keyword)
    assert says in body["errors"][0]["message"]
    # And in a batch the same envelope fails alone, with the same violation
    batch = await api_client.post("/messages/batch", json={"messages": [ordered("ok"), envelope]})
    results = (await batch.json())["results"]
    assert batch.status == 207
    assert [r["status"] for r in results] == [202, 422]
    assert results[1]["errors"][0]["path"] == path


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_a_fifo_message_without_group_and_with_a_bad_payload_is_told_both_at_once(api_client: Any) -> None:
    # Given an ordered message with no group_id and a payload with no body
    document = {"type": "ordered", "payload": {"url": RECEIVER}}
    # When it is posted
    response = await api_client.post("/messages", json=document)
    # Then one 422 names the missing group and the missing body, with the article its type takes
    body = await problem(response, 422)
    assert body["detail"] == "The envelope and the payload are not valid for an 'ordered' message."
    assert [(e["path"], e["keyword"]) for e in body["errors"]] == [("/group_id", "required"), ("/payload", "required")]
    assert body["errors"][1]["message"] == "'body' is a required property"
    # And an envelope alone that breaks the FIFO rules is "an 'ordered'" message's too
    alone = await problem(await api_client.post("/messages", json=ordered(None)), 422)
    assert alone["detail"] == "The envelope is not valid for an 'ordered' message."


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_the_openapi_document_shows_the_group_fields_and_what_a_fifo_type_requires(api_client: Any) -> None:
    schemas = api_client.server.app[keys.OPENAPI]["components"]["schemas"]
    fifo, standard = schemas["message.ordered"], schemas["message.webhook"]
    assert fifo["required"] == ["type", "payload", "group_id"]
    assert {"group_id", "deduplication_id"} <= set(fifo["properties"])
    assert "delay_seconds" not in fifo["properties"]
    assert "FIFO" in fifo["description"]
    assert fifo["properties"]["group_id"]["pattern"] == "^[\\x21-\\x7e]{1,128}$"
    assert "group_id" in standard["properties"] and "deduplication_id" not in standard["properties"]
    assert standard["required"] == ["type", "payload"]


async def test_a_batch_keeps_each_group_in_array_order_on_the_fifo_queue(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given 3 groups interleaved in one batch of 60 (more than one SendMessageBatch per group)
    envelopes = [
        {"type": "ordered", "payload": {"url": RECEIVER, "body": i}, "group_id": f"g{i % 3}"} for i in range(60)
    ]
    response = await api_client.post("/messages/batch", json={"messages": envelopes})
    assert response.status == 202, await response.text()
    # Then SQS hands out each group's messages in the order of the array
    url = sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_ordered.fifo")["QueueUrl"]
    groups = by_group(await asyncio.to_thread(read_in_order, sqs, url))
    assert {g: [p["body"] for p in payloads] for g, payloads in groups.items()} == {
        f"g{k}": list(range(k, 60, 3)) for k in range(3)
    }


def numbered(message_type: str, group: str | None, n: int, *, valid: bool = True) -> dict[str, Any]:
    """An envelope whose payload carries `n`; an invalid one lacks the required `body`."""
    payload: dict[str, Any] = {"url": RECEIVER, "body": n} if valid else {"url": RECEIVER}
    envelope: dict[str, Any] = {"type": message_type, "payload": payload}
    if group is not None:
        envelope["group_id"] = group
    return envelope


async def test_a_batch_sends_nothing_of_a_fifo_group_after_an_invalid_entry_of_it(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given a batch where group g's second entry is invalid, with other groups, a standard type
    # that names the same group and an ordered entry without a group around it
    envelopes = [
        numbered("ordered", "g", 0),
        numbered("ordered", "g", 1, valid=False),
        numbered("ordered", "g", 2),
        numbered("ordered", "h", 3),
        numbered("webhook", "g", 4),
        numbered("ordered", "g", 5, valid=False),
        numbered("ordered", "g", 6),
        numbered("ordered", None, 7),
        numbered("ordered", "h", 8),
    ]
    # When it is posted
    response = await api_client.post("/messages/batch", json={"messages": envelopes})
    results = (await response.json())["results"]
    # Then what follows the invalid entry in group g is refused unsent, 424, naming the entry it waits
    # on; an invalid entry behind it says what is wrong with it; everything else is unaffected
    assert response.status == 207
    assert [r["status"] for r in results] == [202, 422, 424, 202, 202, 422, 424, 422, 202]
    waiting = {
        "index": 2,
        "status": 424,
        "waits_on": 1,
        "detail": "Not sent: entry 1 of group 'g' of type 'ordered' was refused, and a FIFO group is sent in "
        "order; send the group's entries again from entry 1 on.",
    }
    assert results[2] == waiting
    assert results[6] == {**waiting, "index": 6}
    assert results[5]["errors"][0]["path"] == "/payload"
    # And the FIFO queue holds exactly entry 0 of g and both of h, the standard queue entry 4
    url = sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_ordered.fifo")["QueueUrl"]
    assert {g: [p["body"] for p in ps] for g, ps in by_group(read_in_order(sqs, url)).items()} == {
        "g": [0],
        "h": [3, 8],
    }
    webhooks = read_in_order(sqs, sqs.get_queue_url(QueueName=settings.queue_name("webhook"))["QueueUrl"])
    assert [body_of(m)["args"][0]["body"] for m in webhooks] == [4]
    # When the client fixes the refused entries and sends them again, in order
    resent = [numbered("ordered", "g", 1), envelopes[2], numbered("ordered", "g", 5), envelopes[6]]
    response = await api_client.post("/messages/batch", json={"messages": resent})
    assert response.status == 202, await response.text()
    # Then group g is whole and in order on the queue
    assert by_group(read_in_order(sqs, url)) == {"g": [e["payload"] for e in resent]}


# -- the send batcher, on a real broker --------------------------------------------------------


class RecordingBroker:
    """Wraps a broker's `send_entries` to record each call's time span and groups (and slow it down)."""

    def __init__(self, broker: QMBroker, *, pause_seconds: float = 0.05) -> None:
        self.broker = broker
        self.pause_seconds = pause_seconds
        self.calls: list[tuple[float, float, list[str | None]]] = []
        self.started: set[str] = set()
        self.lock = threading.Lock()
        self.original = broker.send_entries
        broker.send_entries = self.send_entries  # type: ignore[method-assign]

    def send_entries(self, queue_name: str, entries: list[dict[str, Any]]) -> list[SendResult]:
        started = time.monotonic()
        with self.lock:
            self.started.update(message_id(e) for e in entries)
        time.sleep(self.pause_seconds)  # a slow SQS answer, so batches overlap if they may
        results = self.original(queue_name, entries)
        with self.lock:
            self.calls.append((started, time.monotonic(), [e.get("MessageGroupId") for e in entries]))
        return results


class AwsLikeFailures(RecordingBroker):
    """Sends through the real server but fails chosen entries first, as AWS does on a FIFO queue:
    the entries of the same group behind a failed one fail too, unsent (ministack would accept
    them, moto fails the whole request)."""

    def __init__(self, broker: QMBroker, *, fail_once: set[str], fail_always: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        super().__init__(broker, pause_seconds=0.02)
        self.fail_once = set(fail_once)
        self.fail_always = set(fail_always)

    def send_entries(self, queue_name: str, entries: list[dict[str, Any]]) -> list[SendResult]:
        started = time.monotonic()
        with self.lock:
            self.started.update(message_id(e) for e in entries)
        time.sleep(self.pause_seconds)
        results: list[SendResult | None] = [None] * len(entries)
        failed_groups: set[str] = set()
        to_send: list[int] = []
        for i, entry in enumerate(entries):
            mid = message_id(entry)
            group = entry.get("MessageGroupId")
            if group in failed_groups:
                # What AWS answers for the rest of a group is not documented; a sender fault here makes
                # sure the batcher sends them again because of the group, not because of their error.
                results[i] = SendResult(mid, False, code="InvalidParameterValue", retryable=False)
            elif mid in self.fail_once or mid in self.fail_always:
                self.fail_once.discard(mid)
                retryable = mid not in self.fail_always
                results[i] = SendResult(mid, False, code="InternalError", retryable=retryable)
                failed_groups.add(str(group))
            else:
                to_send.append(i)
        if to_send:
            for i, result in zip(to_send, self.original(queue_name, [entries[i] for i in to_send]), strict=True):
                results[i] = result
        with self.lock:
            self.calls.append((started, time.monotonic(), [e.get("MessageGroupId") for e in entries]))
        return [r for r in results if r is not None]


@pytest.fixture
def fifo_broker(broker: Callable[..., QMBroker]) -> QMBroker:
    """A broker of this test's own with a FIFO queue "seq" (the broker fixture closes it)."""
    qm = broker()
    qm.fifo_queues.add("seq")
    qm.declare_queue("seq")
    qm.ensure_queue("seq")
    return qm


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=8)
    yield pool
    pool.shutdown(wait=True)


def entry(broker: QMBroker, group: str, n: int) -> dict[str, Any]:
    message: dramatiq.Message[Any] = dramatiq.Message(
        queue_name="seq", actor_name="seq", args=(n,), kwargs={}, options={"group_id": group}
    )
    return broker.build_entry(message, None)


def message_id(e: dict[str, Any]) -> str:
    return str(e["MessageAttributes"]["qm-message-id"]["StringValue"])


async def send_all(sender: Sender, entries: list[dict[str, Any]]) -> list[SendResult]:
    """Send entries concurrently, each starting in list order (as concurrent requests arrive)."""
    return list(await asyncio.gather(*(sender.send("seq", e) for e in entries)))


async def test_a_group_never_has_two_batches_in_flight_and_keeps_its_arrival_order(
    fifo_broker: QMBroker, executor: ThreadPoolExecutor, sqs: Any
) -> None:
    # Given a slow SQS and 4 groups of 25 messages arriving interleaved, all at once
    recorder = RecordingBroker(fifo_broker)
    sender = Sender(fifo_broker, executor, linger_seconds=0.002)
    entries = [entry(fifo_broker, f"g{i % 4}", i) for i in range(100)]
    # When they are sent
    results = await send_all(sender, entries)
    await sender.close()
    # Then every one is accepted
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    # And batches did run side by side, but never two holding the same group
    calls = sorted(recorder.calls)
    overlapping = [(a, b) for i, a in enumerate(calls) for b in calls[i + 1 :] if b[0] < a[1]]
    assert overlapping, "no two batches were ever in flight together: the test proves nothing"
    for a, b in overlapping:
        assert not ({g for g in a[2] if g} & {g for g in b[2] if g}), (a, b)
    # And SQS hands each group out in its arrival order
    url = fifo_broker.ensure_queue("seq").url
    assert by_group(await asyncio.to_thread(read_in_order, sqs, url)) == {
        f"g{k}": list(range(k, 100, 4)) for k in range(4)
    }


async def test_a_failed_entry_is_sent_again_ahead_of_the_rest_of_its_group(
    fifo_broker: QMBroker, executor: ThreadPoolExecutor, sqs: Any
) -> None:
    # Given SQS fails message 3 of group a once (and, as AWS does, the rest of group a in that batch)
    entries = [entry(fifo_broker, "ab"[i % 2], i) for i in range(20)]
    failing = AwsLikeFailures(fifo_broker, fail_once={message_id(entries[6])})
    sender = Sender(fifo_broker, executor, linger_seconds=0.002)
    # When all 20 are sent at once
    results = await send_all(sender, entries)
    await sender.close()
    # Then every one is accepted, the failed one after a second attempt
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    assert len(failing.calls) >= 2
    # And both groups are on SQS in arrival order: nothing of group a overtook the failed one
    url = fifo_broker.ensure_queue("seq").url
    assert by_group(await asyncio.to_thread(read_in_order, sqs, url)) == {
        "a": list(range(0, 20, 2)),
        "b": list(range(1, 20, 2)),
    }


async def test_an_entry_that_fails_for_good_fails_what_waits_behind_it_in_its_group(
    fifo_broker: QMBroker, executor: ThreadPoolExecutor, sqs: Any
) -> None:
    # Given SQS refuses message 2 of group a for good, answering slowly
    first = [entry(fifo_broker, "a", i) for i in range(4)] + [entry(fifo_broker, "b", 4)]
    failing = AwsLikeFailures(fifo_broker, fail_once=set(), fail_always={message_id(first[1])})
    failing.pause_seconds = 0.2
    sender = Sender(fifo_broker, executor, linger_seconds=0.002)

    async def sent(e: dict[str, Any]) -> None:
        await eventually(lambda: message_id(e) in failing.started, timeout=10, interval=0.005, what="the entry sent")

    # When group a's first message goes alone, the rest of a arrives while it is in flight,
    # and two more of a arrive while the batch with the refused one is in flight
    head = asyncio.ensure_future(sender.send("seq", first[0]))
    await sent(first[0])
    behind = asyncio.gather(*(sender.send("seq", e) for e in first[1:]))
    await sent(first[1])
    waiting = asyncio.gather(*(sender.send("seq", entry(fifo_broker, "a", n)) for n in (5, 6)))
    results = [await head, *await behind]
    later = [await sender.send("seq", entry(fifo_broker, "a", n)) for n in (7, 8)]
    waited = await waiting
    await sender.close()
    # Then the first is accepted, the refused one fails, and so does everything of a that was
    # waiting behind it (or it would overtake it); group b and what came after are accepted
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert [r.ok for r in waited] == [False, False]
    assert waited[0].code == "EarlierMessageFailed" and "earlier message of group 'a'" in (waited[0].detail or "")
    assert all(r.ok for r in later)
    url = fifo_broker.ensure_queue("seq").url
    assert by_group(await asyncio.to_thread(read_in_order, sqs, url)) == {"a": [0, 7, 8], "b": [4]}


class NoAnswerFor(RecordingBroker):
    """Sends through the real server, except the batch holding one chosen message: that one gets no
    answer (as when SQS took the request and the connection died), after a pause."""

    def __init__(self, broker: QMBroker, lost: str) -> None:
        super().__init__(broker, pause_seconds=0.2)
        self.lost = lost

    def send_entries(self, queue_name: str, entries: list[dict[str, Any]]) -> list[SendResult]:
        if self.lost in {message_id(e) for e in entries}:
            with self.lock:
                self.started.update(message_id(e) for e in entries)
            time.sleep(self.pause_seconds)
            raise SQSOutcomeUnknown("no answer (the test's)")
        return super().send_entries(queue_name, entries)


async def test_a_batch_without_an_answer_fails_what_waits_behind_it_unsent(
    fifo_broker: QMBroker, executor: ThreadPoolExecutor, sqs: Any
) -> None:
    # Given SQS never answers the batch holding message 0 of group a
    head = entry(fifo_broker, "a", 0)
    lost = NoAnswerFor(fifo_broker, message_id(head))
    sender = Sender(fifo_broker, executor, linger_seconds=0.002)
    # When more of group a arrives while that batch is in flight, and more again after it failed
    first = asyncio.ensure_future(sender.send("seq", head))
    await eventually(lambda: message_id(head) in lost.started, timeout=10, interval=0.005, what="the batch sent")
    behind = await asyncio.gather(*(sender.send("seq", entry(fifo_broker, "a", n)) for n in (1, 2)))
    with pytest.raises(SQSOutcomeUnknown):
        await first
    after = await sender.send("seq", entry(fifo_broker, "a", 3))
    await sender.close()
    # Then what waited behind it was not sent (its clients retry in order), and what came after is
    assert [r.code for r in behind] == ["EarlierMessageFailed"] * 2
    assert after.ok
    assert by_group(await asyncio.to_thread(read_in_order, sqs, fifo_broker.ensure_queue("seq").url)) == {"a": [3]}


async def test_a_server_that_accepts_the_rest_of_a_group_after_a_failure_gets_no_resend_behind_it(
    fifo_broker: QMBroker, executor: ThreadPoolExecutor, sqs: Any, sqs_server: Any
) -> None:
    # Given a batch whose second entry is one a FIFO queue refuses (a per-message delay); ministack
    # refuses that entry alone and takes the rest of its group, moto refuses the whole request
    entries = [entry(fifo_broker, "a", i) for i in range(4)]
    entries[1]["DelaySeconds"] = 5
    sender = Sender(fifo_broker, executor, linger_seconds=0.05)
    RecordingBroker(fifo_broker, pause_seconds=0.1)
    # When they are sent together
    outcomes = await asyncio.gather(*(sender.send("seq", e) for e in entries), return_exceptions=True)
    await sender.close()
    url = fifo_broker.ensure_queue("seq").url
    queued = [m for g in by_group(await asyncio.to_thread(read_in_order, sqs, url)).values() for m in g]
    # Then whatever the server did, what SQS holds is in arrival order and the refused one is not
    # among it: it is never sent again behind the later ones
    accepted = [i for i, o in enumerate(outcomes) if isinstance(o, SendResult) and o.ok]
    assert queued == accepted
    assert 1 not in queued
    if sqs_server.kind == "ministack":
        assert accepted == [0, 2, 3]


# -- across API processes, and the client ---------------------------------------------------


def test_one_idempotency_key_is_one_fifo_message_whichever_api_process_sends_it(
    api_process: Any, settings: Settings, sqs: Any
) -> None:
    # Given two API processes (each remembers its own keys)
    _, first_api = api_process()
    _, second_api = api_process()
    document = {**ordered("g"), "idempotency_key": "order-9"}
    # When the same keyed message is posted to each (a client retry landing elsewhere)
    answers = [post_json(url + "/messages", document) for url in (first_api, second_api)]
    # Then both are accepted with the same id, and SQS holds one message: its deduplication id is that id
    assert [status for status, _ in answers] == [202, 202], answers
    assert answers[0][1]["id"] == answers[1][1]["id"]
    url = sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_ordered.fifo")["QueueUrl"]
    [message] = read_in_order(sqs, url)
    assert message["Attributes"]["MessageDeduplicationId"] == answers[0][1]["id"]


def test_the_qm_client_needs_a_group_for_a_fifo_type_and_sends_it(
    api_process: Any, settings: Settings, sqs: Any, tmp_path: Any
) -> None:
    from tests.test_client import qm

    _, url = api_process()
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps({"url": RECEIVER, "body": {"n": 1}}))
    # Without a group the client refuses locally, naming the field, and sends nothing
    refused = qm(url, "send", "ordered", str(payload))
    assert refused.returncode == 2, refused.stderr
    assert "group_id" in refused.stderr and "Nothing was sent" in refused.stderr
    # With one it is sent, to the FIFO queue, with that group
    sent = qm(url, "send", "ordered", str(payload), "--group-id", "tenant-1", "--deduplication-id", "d-1")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["queue"] == f"{settings.queue_prefix}_ordered.fifo"
    queue = sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_ordered.fifo")["QueueUrl"]
    [message] = read_in_order(sqs, queue)
    assert (message["Attributes"]["MessageGroupId"], message["Attributes"]["MessageDeduplicationId"]) == (
        "tenant-1",
        "d-1",
    )
