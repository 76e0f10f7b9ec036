"""Tracing: one trace from the POST through SQS to the actor and its webhook, received by a real OTLP/HTTP server.

The collector here is a small HTTP server that decodes what it is sent with opentelemetry-proto;
the API and the workers are real processes, configured only by OpenTelemetry's own variables.
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as ProtoStatus

from queue_manager import tracing
from queue_manager.settings import Settings, SettingsError
from queue_manager.sqs import constants
from tests.conftest import ROOT, Proc, Receiver
from tests.support import free_port, samples, wait_for

KIND = {
    ProtoSpan.SPAN_KIND_SERVER: "server",
    ProtoSpan.SPAN_KIND_CLIENT: "client",
    ProtoSpan.SPAN_KIND_PRODUCER: "producer",
    ProtoSpan.SPAN_KIND_CONSUMER: "consumer",
    ProtoSpan.SPAN_KIND_INTERNAL: "internal",
}


@dataclasses.dataclass
class Span:
    """What the collector received of one span."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    links: list[tuple[str, str]]
    attributes: dict[str, Any]
    error: bool


class Collector:
    """An OTLP/HTTP trace receiver: POST /v1/traces, protobuf in, spans kept."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with collector.lock:
                    collector.spans.extend(_spans(request))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def named(self, prefix: str, trace_id: str | None = None) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name.startswith(prefix) and trace_id in (None, s.trace_id)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    service=str(resource.get("service.name")),
                    name=span.name,
                    kind=KIND[span.kind],
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(),
                    links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    error=span.status.code == ProtoStatus.STATUS_CODE_ERROR,
                )


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def traced(collector: Collector, **more: str) -> dict[str, str]:
    """OpenTelemetry's variables that send a process's spans to the collector, exported every 100 ms."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_BSP_SCHEDULE_DELAY": "100", **more}


def _status(api: str, message_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{api}/messages/{message_id}", timeout=10) as response:
        return dict(json.loads(response.read()))


def post(url: str, document: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), json.loads(response.read())


def webhook(url: str) -> dict[str, Any]:
    return {"type": "webhook", "payload": {"url": url, "body": {"n": 1}}}


def log_lines(proc: Proc) -> list[dict[str, Any]]:
    lines = []
    for line in proc.output().splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


@pytest.mark.e2e
def test_one_post_is_one_trace_from_the_caller_through_the_worker_to_the_webhook_receiver(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    collector: Collector,
    settings: Settings,
) -> None:
    # Given a traced API and worker, and a caller with a trace of its own
    api_proc, api = api_process(env=traced(collector, QM_LOG_LEVEL="DEBUG", QM_LOG_FORMAT="json"))
    worker = worker_process(env=traced(collector, QM_LOG_LEVEL="DEBUG", QM_LOG_FORMAT="json"))
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    # When it posts one webhook
    status, headers, answer = post(
        api + "/messages", webhook(receiver.url("/hook")), {"traceparent": f"00-{trace_id}-{caller_span}-01"}
    )
    # Then the 202 names its span in the caller's trace
    assert status == 202
    assert headers["traceparent"].split("-")[1] == trace_id
    wait_for(lambda: receiver.to("/hook"), timeout=30, what="the webhook")
    wait_for(lambda: collector.named("settle", trace_id), timeout=30, what="the settle span")
    # and the spans of both processes form one trace: SERVER → create → process → POST, send and settle joined
    queue = f"{settings.queue_prefix}_webhook"
    (server,) = collector.named("POST /messages", trace_id)
    assert (server.kind, server.parent_id, server.service) == ("server", caller_span, tracing.API_SERVICE)
    assert server.attributes["http.response.status_code"] == 202
    assert headers["traceparent"].split("-")[2] == server.span_id
    (create,) = collector.named(f"create {queue}", trace_id)
    assert (create.kind, create.parent_id) == ("producer", server.span_id)
    assert create.attributes["messaging.message.id"] == answer["id"]
    (send,) = collector.named(f"send {queue}", trace_id)
    assert send.kind == "client"
    assert send.links == [(trace_id, create.span_id)]
    (process,) = collector.named(f"process {queue}", trace_id)
    assert (process.kind, process.parent_id, process.service) == ("consumer", create.span_id, tracing.WORKER_SERVICE)
    assert process.links == [(trace_id, create.span_id)]
    assert process.attributes["messaging.system"] == "aws_sqs"
    assert process.attributes["messaging.destination.name"] == queue
    assert process.attributes["messaging.message.id"] == answer["id"]
    assert process.attributes["aws.sqs.message.id"]
    assert process.attributes["qm.attempt"] == 1
    assert not process.error
    (call,) = [s for s in collector.named("POST", trace_id) if s.kind == "client"]
    assert call.parent_id == process.span_id
    (settle,) = collector.named(f"settle {queue}", trace_id)
    assert settle.links == [(trace_id, create.span_id)]
    # and the receiver got the webhook call's traceparent: it joins the same trace
    (delivered,) = receiver.to("/hook")
    assert delivered.headers["traceparent"].split("-")[1:3] == [trace_id, call.span_id]
    # and the log lines inside the spans carry their ids: the API's "Accepted", the worker's lines
    (accepted,) = [line for line in log_lines(api_proc) if line.get("message_id") == answer["id"]]
    assert (accepted["trace_id"], accepted["span_id"]) == (trace_id, server.span_id)
    processed = [line for line in log_lines(worker) if line.get("message_id") == answer["id"]]
    assert processed, worker.output()
    assert {(line.get("trace_id"), line.get("span_id")) for line in processed} == {(trace_id, process.span_id)}


@pytest.mark.e2e
def test_a_message_that_fails_once_has_two_process_spans_under_its_creation_the_first_an_error(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    collector: Collector,
    settings: Settings,
    tmp_path: Path,
) -> None:
    # Given a receiver that answers 500 once, then 200
    receiver.statuses["/flaky"] = [500, 200]
    state = {"QM_STATE_DIR": str(tmp_path / "state")}  # the API and the worker share the status store
    _, api = api_process(env=traced(collector, **state))
    worker_process(env=traced(collector, **state))
    # When one webhook is posted (no caller trace: the API starts one)
    _, headers, answer = post(api + "/messages", webhook(receiver.url("/flaky")))
    trace_id = headers["traceparent"].split("-")[1]
    wait_for(lambda: len(collector.named("process", trace_id)) >= 2, timeout=30, what="two attempts")
    # Then each attempt is a process span with the creation as parent; the first is an error
    (create,) = collector.named("create", trace_id)
    attempts = sorted(collector.named("process", trace_id), key=lambda s: s.attributes["qm.attempt"])
    assert [s.attributes["qm.attempt"] for s in attempts] == [1, 2]
    assert [s.parent_id for s in attempts] == [create.span_id, create.span_id]
    assert [s.error for s in attempts] == [True, False]
    assert attempts[0].attributes["error.type"] == "Retry"
    assert attempts[0].attributes["messaging.message.id"] == answer["id"]
    # And the message's status names the trace the API started for it
    document = wait_for(
        lambda: (d := _status(api, answer["id"]))["state"] == "succeeded" and d, timeout=30, what="succeeded"
    )
    assert document["trace_id"] == trace_id
    assert document["attempts"] == 2


@pytest.mark.api
def test_ten_concurrent_posts_are_linked_from_the_send_spans_of_their_batches(
    api_process: Callable[..., tuple[Proc, str]], receiver: Receiver, collector: Collector
) -> None:
    # Given a traced API
    _, api = api_process(env=traced(collector))
    # When ten clients post at once (the sender puts them in shared SendMessageBatch calls)
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda i: post(api + "/messages", webhook(receiver.url(f"/{i}"))), range(10)))
    assert [status for status, _, _ in answers] == [202] * 10
    traces = {headers["traceparent"].split("-")[1] for _, headers, _ in answers}
    assert len(traces) == 10  # ten requests, ten traces
    wait_for(lambda: len(collector.named("create")) >= 10, timeout=30, what="ten create spans")
    wait_for(lambda: sum(len(s.links) for s in collector.named("send")) >= 10, timeout=30, what="the send spans' links")
    # Then the send spans link to each message's create span once, and a batch of two traces has none for parent
    creates = {(s.trace_id, s.span_id) for s in collector.named("create")}
    links = [link for s in collector.named("send") for link in s.links]
    assert sorted(links) == sorted(creates)
    for send in collector.named("send"):
        assert send.attributes["messaging.batch.message_count"] == len(send.links)
        if len({trace for trace, _ in send.links}) > 1:
            assert send.parent_id == ""


@pytest.mark.e2e
def test_the_trace_survives_dead_lettering_and_redrive_within_the_attribute_limit(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    collector: Collector,
    settings: Settings,
    sqs: Any,
) -> None:
    # Given a receiver that refuses the first call for good (400: dead-lettered at once), then takes it
    receiver.statuses["/once"] = [400, 200]
    _, api = api_process(env=traced(collector))
    worker_process(env=traced(collector))
    _, headers, answer = post(api + "/messages", webhook(receiver.url("/once")))
    trace_id = headers["traceparent"].split("-")[1]
    # When it is dead-lettered
    listing_url = api + "/queues/webhook/dead-letters"

    def listed() -> list[dict[str, Any]]:
        with urllib.request.urlopen(listing_url, timeout=10) as response:
            return list(json.loads(response.read())["messages"])

    (dead,) = wait_for(listed, timeout=30, what="the dead letter")
    # Then the listing shows its trace, and the copy holds at most SQS's ten attributes even with
    # the one S3-offloaded payloads add (ExtendedPayloadSize)
    assert dead["trace_id"] == trace_id
    dead_letter_url = sqs.get_queue_url(QueueName=f"{settings.queue_prefix}_webhook_dlq")["QueueUrl"]
    copy = sqs.receive_message(QueueUrl=dead_letter_url, MessageAttributeNames=["All"], VisibilityTimeout=0)
    attributes = copy["Messages"][0]["MessageAttributes"]
    assert set(constants.TRACE_ATTRIBUTES) & set(attributes) == {constants.ATTR_TRACEPARENT}
    extended_payload_size = 1
    assert len(attributes) + 1 + extended_payload_size <= constants.MAX_MESSAGE_ATTRIBUTES  # +1: a tracestate
    # When it is redriven
    status, _, _ = post(api + "/queues/webhook/redrive", {})
    assert status == 200
    wait_for(lambda: receiver.to("/once")[1:], timeout=30, what="the redriven delivery")
    # Then its new attempt is a process span under the original request's create span
    wait_for(lambda: len(collector.named("process", trace_id)) >= 2, timeout=30, what="the redriven attempt")
    (create,) = collector.named("create", trace_id)
    attempts = collector.named("process", trace_id)
    assert {s.parent_id for s in attempts} == {create.span_id}
    assert len({s.attributes["aws.sqs.message.id"] for s in attempts}) == 2  # a new SQS message
    assert receiver.to("/once")[1].headers["traceparent"].split("-")[1] == trace_id
    assert answer["id"] == dead["id"]


@pytest.mark.api
def test_a_collector_that_is_down_costs_dropped_spans_not_answers(
    api_process: Callable[..., tuple[Proc, str]], receiver: Receiver
) -> None:
    # Given an API whose collector refuses connections
    proc, api = api_process(env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    # When messages are posted
    answers = [post(api + "/messages", webhook(receiver.url("/x"))) for _ in range(5)]
    # Then each is accepted, with its traceparent, and the stop says the spans were dropped
    assert [status for status, _, _ in answers] == [202] * 5
    assert all("traceparent" in headers for _, headers, _ in answers)
    proc.signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert re.search(r"Tracing stopped: 0 span\(s\) exported, (1[1-9]|[2-9]\d) dropped", proc.output()), proc.output()


@pytest.mark.e2e
def test_spans_a_collector_refuses_are_counted_in_both_processes_metrics(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    collector: Collector,
    receiver: Receiver,
) -> None:
    # Given an API and a worker whose collector refuses every export (404: not retried)
    refusing = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector.url + "/nowhere", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    port = free_port()
    worker_process(env={**refusing, "QM_WORKER_METRICS_PORT": str(port)})
    _, api = api_process(env=refusing)
    # When five messages are posted and processed
    for _ in range(5):
        assert post(api + "/messages", webhook(receiver.url("/ok")))[0] == 202
    wait_for(lambda: len(receiver.to("/ok")) == 5, timeout=30, what="five webhooks")

    def dropped(url: str, reason: str) -> float:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                found = samples(response.read().decode())
        except OSError:
            return -1
        return found.get(("qm_trace_spans_dropped_total", (("reason", reason),)), -1)

    # Then each process counts the spans it could not export: the API its server, create and send
    # spans, the worker its process and settle spans (and the webhook's client spans); none over the queue
    wait_for(lambda: dropped(api + "/metrics", "export_failed") >= 11, timeout=20, what="the API's dropped spans")
    worker_metrics = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: dropped(worker_metrics, "export_failed") >= 11, timeout=20, what="the worker's dropped spans")
    assert dropped(api + "/metrics", "queue_full") == 0
    assert dropped(worker_metrics, "queue_full") == 0


def test_the_settings_name_opentelemetrys_variables() -> None:
    assert not tracing.wanted(Settings.from_env({}))
    assert tracing.wanted(Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}))
    config = tracing.TraceConfig.from_settings(Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}))
    assert config.traces_url == "http://c:4318/v1/traces"
    both = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"}
    assert tracing.TraceConfig.from_settings(Settings.from_env(both)).traces_url == "http://t/x"
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    assert not tracing.wanted(Settings.from_env({**on, "OTEL_SDK_DISABLED": "true"}))
    assert tracing.wanted(Settings.from_env({**on, "OTEL_SDK_DISABLED": "false"}))
    assert not tracing.wanted(Settings.from_env({**on, "OTEL_TRACES_EXPORTER": "none"}))
    assert tracing.wanted(Settings.from_env({"OTEL_TRACES_EXPORTER": "console"}))
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER"):
        Settings.from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(SettingsError, match="QM_TRACE_CONSUMER"):
        Settings.from_env({"QM_TRACE_CONSUMER": "child"})


def test_trace_ids_are_read_from_message_attributes_without_tracing_on() -> None:
    value = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert tracing.trace_id_of({"traceparent": {"DataType": "String", "StringValue": value}}) == (
        "0af7651916cd43dd8448eb211c80319c"
    )
    assert tracing.trace_id_of(value) == "0af7651916cd43dd8448eb211c80319c"
    assert tracing.trace_id_of({}) is None
    assert tracing.trace_id_of("00-" + "0" * 32 + "-b7ad6b7169203331-01") is None
    assert tracing.trace_id_of("garbage") is None
    assert tracing.current_trace_id() is None


def test_with_tracing_off_nothing_of_opentelemetry_is_imported() -> None:
    # The API and the worker's modules, a message built and its hooks called: no SDK, no API.
    code = """
import sys
import api.app, actors, broker
from queue_manager import tracing
from queue_manager.settings import Settings
entry = {"MessageAttributes": {}}
tracing.created(entry, destination="q", message_id="m")
with tracing.sending("q", [entry]) as span:
    span.results(1, 0)
assert entry == {"MessageAttributes": {}}, entry
assert not tracing.wanted(Settings.from_env()), "tracing configured in the test environment"
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert loaded == [], loaded
"""
    env = {"PATH": "/usr/bin:/bin", "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:9", "AWS_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("mode", "parented"), [("parent", True), ("link", False)])
def test_a_process_span_is_a_child_of_the_creation_or_only_linked_to_it(mode: str, parented: bool) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from queue_manager.tracing.spans import Spans, _Counts

    # Given spans kept in memory, and QM_TRACE_CONSUMER set to `mode`
    memory = InMemorySpanExporter()
    settings = Settings.from_env({"OTEL_TRACES_EXPORTER": "console", "QM_TRACE_CONSUMER": mode})
    spans = Spans(TracerProvider(), tracing.TraceConfig.from_settings(settings), _Counts())
    spans.add_processor(SimpleSpanProcessor(memory))
    kept = _Keep()
    spans.light_processors.append(kept)
    # When a message is created, and then processed from the attributes SQS hands back
    entry: dict[str, Any] = {"MessageBody": "x", "MessageAttributes": {}}
    spans.created(entry, "qm_webhook", "m-1")
    received = {k: {**v, "StringListValues": []} for k, v in entry["MessageAttributes"].items()}
    spans.process(destination="qm_webhook", message_id="m-1", sqs_message_id="s-1", attempt=1, attributes=received).end(
        RuntimeError("boom")
    )
    # Then the process span links to the create span, and is its child only in `parent` mode
    create, process = memory.get_finished_spans()
    assert [link.context.span_id for link in process.links] == [create.context.span_id]
    assert (process.parent is not None and process.parent.span_id == create.context.span_id) is parented
    assert (process.context.trace_id == create.context.trace_id) is parented
    assert process.status.is_ok is False
    assert process.attributes["error.type"] == "RuntimeError"
    assert [e.name for e in process.events] == ["exception"]
    # and they encode for OTLP as the SDK's own spans do
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from queue_manager.tracing import otlp

    ours = kept.spans
    finished = memory.get_finished_spans()
    assert ExportTraceServiceRequest.FromString(otlp.encode(finished)) == encode_spans(finished)
    # and so do our own spans, as the OTLP processor gets them (not the SDK's records of them)
    assert ExportTraceServiceRequest.FromString(otlp.encode(ours)) == encode_spans(finished)


class _Keep:
    """A processor of our own spans, as they end (what the OTLP batch processor is handed)."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    def on_end(self, span: Any) -> None:
        self.spans.append(span)


def test_a_sampler_other_than_the_default_decides_and_an_unsampled_parent_is_followed() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

    from queue_manager.tracing.spans import Spans, _Counts

    config = tracing.TraceConfig.from_settings(Settings.from_env({"OTEL_TRACES_EXPORTER": "console"}))
    # Given a sampler that samples nothing
    spans = Spans(TracerProvider(sampler=ALWAYS_OFF), config, _Counts())
    kept = _Keep()
    spans.light_processors.append(kept)
    entry: dict[str, Any] = {"MessageAttributes": {}}
    spans.created(entry, "q", "m-1")
    # Then nothing is recorded, and the message carries an unsampled context
    assert kept.spans == []
    flags = int(entry["MessageAttributes"][constants.ATTR_TRACEPARENT]["StringValue"].rpartition("-")[2], 16)
    assert flags & 1 == 0
    # Given the default sampler (parent-based, always on)
    spans = Spans(TracerProvider(), config, _Counts())
    spans.light_processors.append(kept)
    received = {k: {**v, "StringListValues": []} for k, v in entry["MessageAttributes"].items()}
    # When the unsampled message is processed, then its process span follows its parent: not recorded
    spans.process(destination="q", message_id="m-1", sqs_message_id=None, attempt=1, attributes=received).end()
    assert kept.spans == []
    # Given a ratio sampler of 1 under a parent-based one (not the default, so the sampler is asked)
    spans = Spans(TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0))), config, _Counts())
    spans.light_processors.append(kept)
    spans.created({"MessageAttributes": {}}, "q", "m-2")
    assert [s.name for s in kept.spans] == ["create q"]


def test_the_direct_otlp_encoder_writes_what_the_sdks_encoder_writes() -> None:
    from opentelemetry import context, trace
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState

    from queue_manager.tracing import otlp

    # Given spans of every shape: kinds, parents (remote or not), links, events, errors, value types
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "s", "n": 3}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("scope", "1.0")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")]))
    for kind in SpanKind:
        with tracer.start_as_current_span(f"span {kind.name}", kind=kind, links=[Link(remote, {"a": 1})]) as span:
            span.set_attributes(
                {"s": "x", "i": -5, "one": 1, "yes": True, "f": 1.5, "list": ["a", "b"], "ints": [1, 2]}
            )
            with tracer.start_as_current_span("child") as child:
                child.record_exception(ValueError("bad"))
                child.set_status(trace.Status(trace.StatusCode.ERROR, "bad"))
    token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
    tracer.start_span("under a remote parent").end()
    context.detach(token)
    spans = memory.get_finished_spans()
    # When both encode them, then a decoder reads the same request from both
    for _ in range(2):  # the second time from the encoder's cache
        assert ExportTraceServiceRequest.FromString(otlp.encode(spans)) == encode_spans(spans)
