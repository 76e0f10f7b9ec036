"""The ack thread against a real SQS server: how urgent FIFO deletes share batches, and when a partial one goes."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from queue_manager.settings import Settings
from queue_manager.sqs.acks import Acks, Lease
from tests.support import queue_depth, wait_for

pytestmark = pytest.mark.api


class SlowDeletes:
    """A real boto3 SQS client whose DeleteMessageBatch answers `seconds` late, noting each batch's size."""

    def __init__(self, client: Any, seconds: float) -> None:
        self._client = client
        self.seconds = seconds
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def delete_message_batch(self, **kwargs: Any) -> Any:
        with self.lock:
            self.batches.append(len(kwargs["Entries"]))
        time.sleep(self.seconds)
        return self._client.delete_message_batch(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_urgent_deletes_wait_for_the_queues_delete_in_flight_then_go_together(sqs: Any, settings: Settings) -> None:
    # Given five received messages, and deletes that take 300 ms to answer
    url = sqs.create_queue(QueueName=settings.queue_prefix + "_acks")["QueueUrl"]
    sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(5)])
    handles: list[str] = []
    wait_for(
        lambda: (
            handles.extend(
                m["ReceiptHandle"]
                for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
            )
            or len(handles) == 5
        ),
        timeout=10,
        what="five messages",
    )
    client = SlowDeletes(sqs, 0.3)
    acks = Acks(client, visibility_timeout_seconds=30, flush_interval_seconds=10)
    try:
        # When each is acked as urgent (a FIFO group's last message here), 30 ms apart
        started = time.monotonic()
        for handle in handles:
            acks.delete(url, handle, soon=True)
            time.sleep(0.03)
        wait_for(lambda: sum(client.batches) == 5, timeout=5, what="every delete sent")
        # Then the first went at once, and the four acked while it was in flight went together
        # when it was answered, long before the 10 s flush interval
        assert client.batches == [1, 4]
        assert time.monotonic() - started < 2
        wait_for(lambda: queue_depth(sqs, settings.queue_prefix + "_acks")["in_flight"] == 0, timeout=5, what="empty")
    finally:
        acks.stop()


def test_a_partial_delete_batch_goes_once_its_flush_interval_is_up_not_at_the_next_tick(
    sqs: Any, settings: Settings
) -> None:
    # Given a received message and an ack thread already asleep (started by a lease), with a 1 s flush interval
    url = sqs.create_queue(QueueName=settings.queue_prefix + "_acks_flush")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="m")
    handles: list[str] = []
    wait_for(
        lambda: (
            handles.extend(m["ReceiptHandle"] for m in sqs.receive_message(QueueUrl=url).get("Messages", []))
            or len(handles) == 1
        ),
        timeout=10,
        what="the message",
    )
    acks = Acks(sqs, visibility_timeout_seconds=30, flush_interval_seconds=1.0)
    sent: list[float] = []
    acks.delete_batch_listeners.append(lambda size: sent.append(time.monotonic()))
    now = time.monotonic()
    acks.track(Lease(url, "another-message", now, now + 30, now + 30))
    try:
        time.sleep(0.2)
        # When the message is acked a moment into the thread's sleep
        acked = time.monotonic()
        acks.delete(url, handles[0])
        wait_for(lambda: sent, timeout=5, what="the delete batch")
        # Then its batch goes about a flush interval later (it went at the thread's second tick, 1.8 s, before)
        assert 0.9 <= sent[0] - acked < 1.5
        wait_for(
            lambda: queue_depth(sqs, settings.queue_prefix + "_acks_flush")["in_flight"] == 0, timeout=5, what="empty"
        )
    finally:
        acks.stop()
