"""The bench's delaying SQS proxy: it delays every call, overlaps concurrent ones, keeps connections
alive on both sides, and counts exactly the calls each tagged client made, by action."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config

from tests.conftest import AWS_ENV, ROOT, SQSServer
from tests.support import free_port, wait_for

RTT_MS = 15.0
PROXY = [sys.executable, "-m", "bench.proxy"]


class RunningProxy:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port

    def endpoint(self, tag: str) -> str:
        return f"http://127.0.0.1:{self.port}/t/{tag}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
            return json.loads(response.read())


@contextlib.contextmanager
def proxy_process(upstream: str, rtt_ms: float, log_dir: Path) -> Iterator[RunningProxy]:
    port = free_port()
    log_path = log_dir / f"proxy-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*PROXY, "--upstream", upstream, "--port", str(port), "--sqs-rtt-ms", str(rtt_ms)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "READY" in log_path.read_text() or process.poll() is not None, timeout=30, what="the proxy")
        assert process.poll() is None, log_path.read_text()
        yield RunningProxy(process, port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def proxy(sqs_server: SQSServer, tmp_path: Path) -> Iterator[RunningProxy]:
    with proxy_process(sqs_server.url, RTT_MS, tmp_path) as running:
        yield running


def client_for(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def test_proxy_counts_exactly_the_calls_each_tag_made_by_action(proxy: RunningProxy) -> None:
    # Given two clients, each with a tag of its own
    alpha, beta = client_for(proxy.endpoint("alpha")), client_for(proxy.endpoint("beta"))
    name = f"proxy-{uuid.uuid4().hex[:8]}"

    # When they make known calls through the proxy
    url = alpha.create_queue(QueueName=name)["QueueUrl"]
    try:
        alpha.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{i}"} for i in range(3)])
        for _ in range(2):
            beta.send_message(QueueUrl=url, MessageBody="single")
        received = beta.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
        beta.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(received)]
        )
    finally:
        alpha.delete_queue(QueueUrl=url)

    # Then the proxy counted each call once, under the caller's tag and its action
    counts = proxy.get("/_proxy/counts")
    assert counts == {
        "alpha": {"CreateQueue": 1, "SendMessageBatch": 1, "DeleteQueue": 1},
        "beta": {"SendMessage": 2, "ReceiveMessage": 1, "DeleteMessageBatch": 1},
    }
    # And the calls really reached the server and came back intact
    assert sorted(m["Body"] for m in received) == ["m0", "m1", "m2", "single", "single"]


@pytest.mark.alone  # compares call times through the proxy and direct: load beside it skews both
def test_every_call_is_delayed_by_the_round_trip_time(proxy: RunningProxy, sqs_server: SQSServer) -> None:
    # Given a client through the 15 ms proxy and one straight to the server
    through, direct = client_for(proxy.endpoint("timing")), client_for(sqs_server.url)
    name = f"proxy-{uuid.uuid4().hex[:8]}"
    direct.create_queue(QueueName=name)
    through.get_queue_url(QueueName=name)  # both connections open before timing

    # When each makes the same calls
    def timed(client: Any) -> list[float]:
        times = []
        for _ in range(10):
            start = time.perf_counter()
            client.get_queue_url(QueueName=name)
            times.append((time.perf_counter() - start) * 1000)
        return times

    through_ms, direct_ms = timed(through), timed(direct)
    direct.delete_queue(QueueUrl=direct.get_queue_url(QueueName=name)["QueueUrl"])

    # Then no call through the proxy took less than the round-trip time, and the median adds about that
    assert min(through_ms) >= RTT_MS
    added = sorted(through_ms)[5] - sorted(direct_ms)[5]
    assert RTT_MS <= added < RTT_MS + 25, f"median added {added:.1f} ms"


@pytest.mark.alone  # times concurrent calls: other tests' load beside it stretches them
def test_concurrent_calls_are_delayed_side_by_side_not_one_after_another(sqs_server: SQSServer, tmp_path: Path) -> None:
    # Given a proxy with a long delay (so the server's own time, which grows with the host's load,
    # is small beside it), a queue, and 64 raw SQS calls ready to go at once
    slow_ms = 200.0
    direct = client_for(sqs_server.url)
    name = f"proxy-{uuid.uuid4().hex[:8]}"
    url = direct.create_queue(QueueName=name)["QueueUrl"]
    headers = {
        "X-Amz-Target": "AmazonSQS.GetQueueUrl",
        "Content-Type": "application/x-amz-json-1.0",
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/sqs/aws4_request, "
        "SignedHeaders=host, Signature=0",
    }
    body = json.dumps({"QueueName": name}).encode()
    calls = 64

    async def burst(proxy: RunningProxy) -> tuple[float, list[int]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=calls)) as session:

            async def one() -> int:
                async with session.post(proxy.endpoint("burst") + "/", data=body, headers=headers) as response:
                    await response.read()
                    return response.status

            start = time.perf_counter()
            statuses = await asyncio.gather(*(one() for _ in range(calls)))
            return time.perf_counter() - start, list(statuses)

    # When they are sent together through the proxy
    with proxy_process(sqs_server.url, slow_ms, tmp_path) as proxy:
        seconds, statuses = asyncio.run(burst(proxy))
        stats = proxy.get("/_proxy/stats")
    direct.delete_queue(QueueUrl=url)

    # Then all succeed, all were in flight at once, and together they took a few delays, not 64 in a row
    assert statuses == [200] * calls
    assert stats["peak_in_flight"] == calls
    assert slow_ms / 1000 <= seconds < 4 * slow_ms / 1000 + 1, f"{calls} concurrent calls took {seconds:.2f} s"


def test_connections_are_kept_alive_on_both_sides(proxy: RunningProxy) -> None:
    # Given one client making calls one after another
    client = client_for(proxy.endpoint("keepalive"))

    # When it makes 20 of them
    for _ in range(20):
        client.list_queues(QueueNamePrefix="nothing-has-this-prefix")

    # Then the proxy accepted one connection from it and opened one to the server
    stats = proxy.get("/_proxy/stats")
    assert stats["requests"] == 20
    assert stats["client_connections"] == 1
    assert stats["upstream_connections"] == 1


def test_a_long_poll_is_carried_for_its_whole_wait(proxy: RunningProxy) -> None:
    # Given an empty queue
    client = client_for(proxy.endpoint("poll"))
    url = client.create_queue(QueueName=f"proxy-{uuid.uuid4().hex[:8]}")["QueueUrl"]

    # When a receive long-polls it for 2 s through the proxy
    start = time.perf_counter()
    response = client.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    seconds = time.perf_counter() - start
    client.delete_queue(QueueUrl=url)

    # Then it comes back empty after the wait plus the delay, not with an error
    assert response.get("Messages", []) == []
    assert 2 + RTT_MS / 1000 <= seconds < 5


def test_an_unreachable_server_is_a_502_that_clients_can_retry(tmp_path: Path) -> None:
    # Given a proxy whose server is not there
    with proxy_process(f"http://127.0.0.1:{free_port()}", 0, tmp_path) as unreachable:
        request = urllib.request.Request(
            unreachable.endpoint("down") + "/",
            data=b"{}",
            headers={"X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0"},
        )

        # When a call goes through it
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(request, timeout=5)

        # Then the client gets a 502 and the proxy counts the failure
        assert raised.value.code == 502
        raised.value.close()
        assert unreachable.get("/_proxy/stats")["errors"] == {"ConnectionRefusedError": 1}
