"""Prometheus metrics on both halves; the workers' are summed over every process of a master."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Proc, Receiver
from tests.support import free_port, post_json, samples, wait_for


@pytest.mark.api
async def test_the_api_counts_requests_batches_and_sqs_requests(api_client: Any) -> None:
    # Given a few posts, one of them invalid
    for _ in range(3):
        assert (await api_client.post("/messages", json={"type": "log", "payload": {"message": "x"}})).status == 202
    assert (await api_client.post("/messages", json={"type": "nope", "payload": {}})).status == 422
    # When /metrics is read (without an API key: it is open)
    response = await api_client.get("/metrics")
    assert response.status == 200
    found = samples(await response.text())
    # Then requests are counted by route and status, and sends by batch size and SQS action
    assert found[("qm_api_requests_total", (("method", "POST"), ("route", "/messages"), ("status", "202")))] == 3
    assert found[("qm_api_requests_total", (("method", "POST"), ("route", "/messages"), ("status", "422")))] == 1
    assert found[("qm_api_request_seconds_count", (("method", "POST"), ("route", "/messages")))] == 4
    assert found[("qm_api_send_batch_size_count", ())] == 3
    # And each send's time to SQS's answer: three, each taking some time, none as long as the test
    assert found[("qm_api_send_seconds_count", ())] == 3
    assert 0 < found[("qm_api_send_seconds_sum", ())] < 3 * 5
    assert found[("qm_api_send_seconds_bucket", (("le", "+Inf"),))] == 3
    sent = found.get(("qm_api_sqs_requests_total", (("action", "SendMessage"),)), 0) + found.get(
        ("qm_api_sqs_requests_total", (("action", "SendMessageBatch"),)), 0
    )
    assert sent == 3


@pytest.mark.e2e
def test_a_two_process_worker_exports_one_sum_of_its_processes(
    api_process: Callable[..., tuple[Proc, str]], worker_process: Callable[..., Proc], receiver: Receiver
) -> None:
    # Given a worker with two processes and its metrics on a free port
    port = free_port()
    _, url = api_process()
    worker_process(processes=2, threads=2, env={"QM_WORKER_METRICS_PORT": str(port)})
    receiver.statuses["/flaky"] = [500, 200]
    # When ten webhooks go through, one of them failing once
    for path in ["/ok"] * 9 + ["/flaky"]:
        document = {"type": "webhook", "payload": {"url": receiver.url(path), "body": {}}}
        status, answer = post_json(url + "/messages", document, timeout=10)
        assert status == 202, answer

    def read() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return samples(response.read().decode())
        except OSError:
            return {}

    processed = ("qm_worker_messages_total", (("actor", "webhook"), ("outcome", "processed")))
    timed = ("qm_worker_processing_seconds_count", (("actor", "webhook"),))
    # (both counts: the fork reads the processes' files while they write, so a read can fall between
    # the last attempt's timing and its count)
    found = wait_for(
        lambda: (m := read()) and m.get(processed) == 10 and m.get(timed) == 11 and m, timeout=30, what="10 processed"
    )
    # Then one endpoint reports both processes' work: processed, retried, timings and SQS requests
    assert found[("qm_worker_messages_total", (("actor", "webhook"), ("outcome", "retried")))] == 1
    assert found[("qm_worker_messages_total", (("actor", "webhook"), ("outcome", "failed")))] == 1
    assert found[("qm_worker_queue_wait_seconds_count", (("actor", "webhook"),))] == 10  # first attempts only
    assert found[("qm_worker_sqs_requests_total", (("action", "ReceiveMessage"),))] >= 2
    assert ("qm_worker_sqs_requests_total", (("action", "ChangeMessageVisibilityBatch"),)) in found
