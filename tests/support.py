"""Helpers the test modules share: deadline-bounded waits, reads of what SQS holds, posts to the
API, its problem bodies, and sends through a broker's batched path.

Fixtures, and the classes they yield, live in conftest.py; plain functions live here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from prometheus_client.parser import text_string_to_metric_families

from api import keys
from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker

#: The media type of every problem the API answers.
PROBLEM = "application/problem+json"
#: The header of a JSON body sent as raw data.
JSON = {"Content-Type": "application/json"}
#: A valid log message.
LOG = {"type": "log", "payload": {"message": "hello"}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")
        time.sleep(interval)


async def eventually(predicate: Callable[[], Any], *, timeout: float, interval: float = 0.05, what: str) -> Any:
    """`wait_for` without blocking the event loop (the app under test may run on it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out after {timeout} s waiting for {what}.")
        await asyncio.sleep(interval)


def listening(url: str) -> int:
    """How many sockets listen on the URL's port (from /proc/net/tcp, Linux only)."""
    port = int(url.rsplit(":", 1)[1])
    return sum(
        1
        for fields in (line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:])
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A"  # TCP_LISTEN
    )


def queue_depth(sqs: Any, name: str) -> dict[str, int]:
    """Visible, in-flight and delayed counts of the queue named `name`."""
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {
        "visible": int(attrs["ApproximateNumberOfMessages"]),
        "in_flight": int(attrs["ApproximateNumberOfMessagesNotVisible"]),
        "delayed": int(attrs["ApproximateNumberOfMessagesDelayed"]),
    }


def drain(sqs: Any, name: str, *, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Receive (and leave in flight) every message now visible on the queue named `name`.

    An empty receive is not taken as proof of an empty queue (moto server sometimes answers one
    while messages are visible): it stops once the queue reports none visible, or at the deadline.
    """
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        ).get("Messages", [])
        got.extend(batch)
        if not batch:
            visible = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
            if int(visible["Attributes"]["ApproximateNumberOfMessages"]) == 0:
                break
    return got


def queued_ids(sqs: Any, name: str, *, timeout: float = 5.0) -> list[str]:
    """Message ids on a queue (left in flight), decoded from the bodies; duplicates kept."""
    return [json.loads(base64.b64decode(m["Body"]))["message_id"] for m in drain(sqs, name, timeout=timeout)]


def post_json(url: str, document: Any, *, timeout: float = 30.0) -> tuple[int, Any]:
    """POST `document` as JSON to `url`; the status and the decoded answer, errors included."""
    request = urllib.request.Request(url, data=json.dumps(document).encode(), headers=JSON)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


async def problem(response: Any, status: int) -> dict[str, Any]:
    """The problem document of `response`, once its status and media type are checked."""
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.json()
    return body


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text as {(name, sorted labels): value}."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def dead_letter(app: Any, sqs: Any, settings: Settings, *payloads: Any, error: str = "RuntimeError: boom") -> list[str]:
    """Put messages on the log type's dead-letter queue as the consumer does; returns their ids."""
    broker = app[keys.BROKER]
    url = sqs.get_queue_url(QueueName=settings.queue_name("log") + "_dlq")["QueueUrl"]
    ids = []
    for payload in payloads:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="log", actor_name="log", args=(payload,), kwargs={}, options={}
        )
        entry = broker.build_entry(message, None)
        attrs = {
            **entry["MessageAttributes"],
            "qm-error": {"DataType": "String", "StringValue": error},
            "qm-receive-count": {"DataType": "Number", "StringValue": "3"},
            "qm-source-queue": {"DataType": "String", "StringValue": "log"},
        }
        sqs.send_message(QueueUrl=url, MessageBody=entry["MessageBody"], MessageAttributes=attrs)
        ids.append(message.message_id)
    return ids


def send_messages(broker: QMBroker, messages: list[dramatiq.Message[Any]]) -> list[str]:
    """Enqueue through the broker's batched send path, ten to a batch; returns the message ids."""
    for start in range(0, len(messages), 10):
        chunk = messages[start : start + 10]
        results = broker.send_entries(chunk[0].queue_name, [broker.build_entry(m, None) for m in chunk])
        assert all(r.ok for r in results), results
    return [m.message_id for m in messages]


def send(broker: QMBroker, actor: dramatiq.Actor[Any, Any], *payloads: Any) -> list[str]:
    """Send one message of `actor` per payload through the batched path; returns the message ids."""
    return send_messages(broker, [actor.message(p) for p in payloads])
