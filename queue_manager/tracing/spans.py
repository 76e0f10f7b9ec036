"""The spans themselves, on the OpenTelemetry API and SDK (imported only when tracing is on).

Messaging spans follow OpenTelemetry's messaging conventions (docs/messaging/ of
open-telemetry/semantic-conventions): `create`, `send`, `process` and `settle` spans, named
`<operation> <queue>`, with `messaging.system=aws_sqs`. A message carries its creation context in
W3C Trace Context attributes, whatever OTEL_PROPAGATORS says: the format on the queue is fixed (it is
counted against SQS's ten attributes), while HTTP in and out uses the configured propagators.

A batch (a SendMessageBatch, a DeleteMessageBatch) mixes messages of many requests, so it links to
each; when every message in it belongs to one trace, the span joins that trace too, so that one
request's trace holds its send and settle.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from random import getrandbits
from time import time_ns
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.propagation import _SPAN_KEY

from queue_manager.sqs import constants
from queue_manager.tracing.config import TraceConfig

#: A W3C traceparent of version 00: trace id, parent id, flags.
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

logger = logging.getLogger(__name__)

#: messaging.system of Amazon SQS.
SYSTEM = "aws_sqs"

#: The instrumentation scope of every span made here.
SCOPE = "queue_manager.tracing"

#: Receipt handles remembered for settle links at most (a message acked here and never deleted,
#: say on a crash of the delete, must not grow the table without end).
MAX_SETTLING = 50_000

#: Create spans remembered for their send span's links at most (the rest are read back from the
#: entry's attributes).
MAX_CREATED = 10_000

#: How often the log says spans were dropped, at most.
DROP_LOG_INTERVAL_SECONDS = 60.0


class _Counts:
    """Spans lost on the way to the collector, counted, told to `listeners` (the metrics), and said in
    the log at most once a minute."""

    def __init__(self, listeners: Sequence[Callable[[str, int], None]] = ()) -> None:
        self.listeners = listeners
        self.lock = threading.Lock()
        self.queue_full = 0
        self.export_failed = 0
        self.exported = 0
        self._logged_at = 0.0

    def dropped(self) -> int:
        with self.lock:
            return self.queue_full + self.export_failed

    def lost(self, *, queue_full: int = 0, export_failed: int = 0) -> None:
        now = time.monotonic()
        with self.lock:
            self.queue_full += queue_full
            self.export_failed += export_failed
            due = now - self._logged_at >= DROP_LOG_INTERVAL_SECONDS
            if due:
                self._logged_at = now
            total = self.queue_full + self.export_failed
        for reason, count in (("queue_full", queue_full), ("export_failed", export_failed)):
            if count:
                for listener in self.listeners:
                    try:
                        listener(reason, count)
                    except Exception:  # a metric's failure must not end the export thread
                        logger.debug("A dropped-span listener failed.", exc_info=True)
        if due:
            logger.warning(
                "Dropped %d span(s) so far: %d not accepted by the trace collector, %d over the export queue.",
                total,
                self.export_failed,
                self.queue_full,
            )


class _CountingExporter(SpanExporter):
    """An exporter that counts what it could not deliver (the collector down, slow or refusing)."""

    def __init__(self, inner: SpanExporter, counts: _Counts) -> None:
        self.inner = inner
        self.counts = counts

    def export(self, spans: Any) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter's bug must not end the export thread
            logger.exception("Exporting %d span(s) failed unexpectedly.", len(spans))
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            with self.counts.lock:
                self.counts.exported += len(spans)
        else:
            self.counts.lost(export_failed=len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class _CountingBatchProcessor(BatchSpanProcessor):
    """OpenTelemetry's batch span processor, counting the spans its full queue turns away.

    The queue is a bounded buffer (OTEL_BSP_MAX_QUEUE_SIZE, 2048): a span ending while it is full
    is dropped, never waited for, so a collector that is down costs spans, not latency.
    """

    def __init__(self, exporter: SpanExporter, counts: _Counts) -> None:
        super().__init__(exporter)
        self.counts = counts
        batch = getattr(self, "_batch_processor", None)
        self._queue = getattr(batch, "_queue", None)
        self._max = getattr(batch, "_max_queue_size", None)
        self._emit = getattr(batch, "emit", None)

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._queue is not None and self._max is not None and len(self._queue) >= self._max:
            # Dropped here, counted, and said once a minute (the SDK would log a warning per span).
            self.counts.lost(queue_full=1)
            return
        if self._emit is not None:
            self._emit(span)  # what BatchSpanProcessor.on_end does after the same test
        else:
            super().on_end(span)


def _resource(service: str) -> Resource:
    """OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME (read by the SDK), else our service name."""
    resource = Resource.create()
    name = resource.attributes.get(SERVICE_NAME)
    if not name or str(name).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    return resource


def _queue_name(queue_url: str) -> str:
    return queue_url.rstrip("/").rpartition("/")[2]


def _creation(attributes: dict[str, Any]) -> SpanContext | None:
    """The creation context a message carries in its attributes (received or as sent), if valid."""
    value = attributes.get(constants.ATTR_TRACEPARENT)
    if isinstance(value, dict):
        value = value.get("StringValue")
    if not isinstance(value, str):
        return None
    match = TRACEPARENT.match(value)
    if match is None:
        return None
    trace_id, span_id, flags = int(match.group(1), 16), int(match.group(2), 16), int(match.group(3), 16)
    if not trace_id or not span_id:
        return None
    state = attributes.get(constants.ATTR_TRACESTATE)
    if state is None:
        return SpanContext(trace_id, span_id, True, _FLAGS.get(flags) or TraceFlags(flags))
    if isinstance(state, dict):
        state = state.get("StringValue")
    return SpanContext(
        trace_id,
        span_id,
        is_remote=True,
        trace_flags=_FLAGS.get(flags) or TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if isinstance(state, str) and state else None,
    )


#: The trace flags made here, made once.
_FLAGS = {flags: TraceFlags(flags) for flags in range(4)}


def _batch_parent(contexts: list[SpanContext]) -> SpanContext | None:
    """A batch's parent: the first message's context when all belong to one trace, else none (a root)."""
    if contexts:
        first = contexts[0].trace_id
        if all(c.trace_id == first for c in contexts):
            return contexts[0]
    return None


def _current_span() -> Span:
    """The span current in this thread or task: `trace.get_current_span()` without its checks (the
    context holds what `set_span_in_context` put there: a Span)."""
    span = otel_context.get_current().get(_SPAN_KEY)
    return cast(Span, span) if span is not None else trace.INVALID_SPAN


def _error(span: Span, exc: BaseException) -> None:
    span.record_exception(exc)
    span.set_attribute("error.type", type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500]))


class _BatchSpan:
    """A send or settle span around one SQS batch call."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> _BatchSpan:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            _error(self.span, exc)
        self.span.end()

    def results(self, ok: int, failed: int) -> None:
        """The outcome per entry: a batch with failed entries is an error."""
        if failed:
            self.span.set_attribute("qm.failed_entries", failed)
            self.span.set_status(Status(StatusCode.ERROR, f"{failed} of {ok + failed} entries failed"))


class _HttpClientSpan:
    """A CLIENT span around an outgoing HTTP request."""

    def __init__(self, span: Span) -> None:
        self.span = span

    def __enter__(self) -> _HttpClientSpan:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            _error(self.span, exc)
        self.span.end()

    def answered(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)
        if status >= 400:  # a client span counts 4xx as errors too (HTTP conventions)
            self.span.set_attribute("error.type", str(status))
            self.span.set_status(Status(StatusCode.ERROR))


class _LightSpan(Span):
    """A recording span that is a few slots until it ends, then handed to the processors as it is.

    The SDK's own span guards every call with a lock and checks every attribute against the
    limits as it is set, which made it cost more than the work a message is traced for. These
    spans are made and ended by one thread each and carry only the attributes set here. The OTLP
    processor takes them as they are (its exporter encodes them directly); any other processor (the
    console's, a test's) gets the SDK's ReadableSpan of one (`readable`).
    """

    __slots__ = ("_attributes", "_context", "_end", "_events", "_ids", "_kind", "_links", "_name", "_owner",
                 "_parent", "_start", "_status")  # fmt: skip

    def __init__(
        self,
        owner: Spans,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        links: Sequence[SpanContext],
    ) -> None:
        self._owner = owner
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        #: The linked contexts (links without attributes: the only ones made here).
        self._links = links
        self._events: list[Event] | None = None
        self._status: Status | None = None  # None: UNSET
        self._ids: tuple[str, str] | None = None  # the hex ids, once asked for
        self._start = time_ns()
        self._end: int | None = None

    # -- what processors and the direct encoder read --------------------------------------------

    @property
    def context(self) -> SpanContext:
        return self._context

    @property
    def name(self) -> str:
        return self._name

    @property
    def kind(self) -> SpanKind:
        return self._kind

    @property
    def parent(self) -> SpanContext | None:
        return self._parent

    @property
    def attributes(self) -> dict[str, Any]:
        return self._attributes

    @property
    def start_time(self) -> int:
        return self._start

    @property
    def end_time(self) -> int | None:
        return self._end

    @property
    def status(self) -> Status:
        return self._status or _UNSET

    @property
    def events(self) -> Sequence[Event]:
        return self._events or ()

    @property
    def links(self) -> Sequence[Link]:
        return [Link(c) for c in self._links]

    @property
    def linked(self) -> Sequence[SpanContext]:
        """The linked contexts (what `links` wraps)."""
        return self._links

    @property
    def resource(self) -> Resource:
        return self._owner.provider.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._owner.scope

    def hex_ids(self) -> tuple[str, str]:
        """The trace and span ids in hex (the log fields, the traceparent), formatted once."""
        ids = self._ids
        if ids is None:
            ids = self._ids = (f"{self._context.trace_id:032x}", f"{self._context.span_id:016x}")
        return ids

    def traceparent(self) -> str:
        trace_id, span_id = self.hex_ids()
        return f"00-{trace_id}-{span_id}-{self._context.trace_flags:02x}"

    def readable(self) -> ReadableSpan:
        """The SDK's record of this span, for processors other than ours."""
        return ReadableSpan(
            self._name,
            context=self._context,
            parent=self._parent,
            resource=self.resource,
            attributes=self._attributes,
            events=self.events,
            links=self.links,
            kind=self._kind,
            status=self.status,
            start_time=self._start,
            end_time=self._end,
            instrumentation_scope=self._owner.scope,
        )

    # -- the Span API -----------------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._attributes[key] = value

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None) -> None:
        if self._events is None:
            self._events = []
        self._events.append(Event(name, attributes, timestamp or time_ns()))

    def update_name(self, name: str) -> None:
        self._name = name

    def is_recording(self) -> bool:
        return self._end is None

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        event = {
            "exception.type": f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end is not None:
            return
        self._end = end_time or time_ns()
        owner = self._owner
        for processor in owner.light_processors:
            processor.on_end(self)
        if owner.processors:
            readable = self.readable()
            for processor in owner.processors:
                processor.on_end(readable)


_UNSET = Status(StatusCode.UNSET)


class Processing:
    """One attempt's process span, current in its thread until `end`."""

    __slots__ = ("creation", "span", "token")

    def __init__(self, span: Span, token: object, creation: SpanContext | None) -> None:
        self.span = span
        self.token: object | None = token
        self.creation = creation

    def end(self, exception: BaseException | None = None, *, skipped: bool = False) -> None:
        if self.token is None:
            return
        if exception is not None:
            _error(self.span, exception)
        if skipped:
            self.span.set_attribute("qm.skipped", True)
        self.span.end()
        token, self.token = self.token, None
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception:  # a detach in another context than the attach: nothing to restore
            logger.debug("Could not detach a process span's context.", exc_info=True)


def _default_sampling(sampler: Any) -> bool:
    """Whether `sampler` is the SDK's default (parentbased_always_on) or always_on: a span is then
    sampled unless its parent is not, which `Spans._start` decides without calling the sampler."""
    if sampler is ALWAYS_ON:
        return True
    return (
        type(sampler) is ParentBased
        and getattr(sampler, "_root", None) is ALWAYS_ON
        and getattr(sampler, "_remote_parent_sampled", None) is ALWAYS_ON
        and getattr(sampler, "_local_parent_sampled", None) is ALWAYS_ON
        and getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
        and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
    )


class Spans:
    """The process's tracer provider and every span queue-manager makes."""

    def __init__(self, provider: TracerProvider, config: TraceConfig, counts: _Counts) -> None:
        self.provider = provider
        self.config = config
        self.counts = counts
        self.scope = InstrumentationScope(SCOPE)
        #: Processors that take our spans as they are (the OTLP export's).
        self.light_processors: list[Any] = []
        #: Processors that take the SDK's ReadableSpan (the console's, tests').
        self.processors: list[Any] = []
        self._settling: OrderedDict[str, SpanContext] = OrderedDict()
        self._settling_lock = threading.Lock()
        #: The contexts of create spans by their traceparent until the send's span links to them
        #: (one dict operation each, atomic: no lock).
        self._created: dict[str, SpanContext] = {}
        #: The headers the configured propagators read (their `fields`, a set built per call), cached.
        self._textmap: Any = None
        self._propagated_fields: tuple[str, ...] | None = None
        ids = provider.id_generator
        #: The SDK's default ids (random bits) and sampling are made here without calling them.
        self._random_ids = type(ids) is RandomIdGenerator
        self._random_flag = TraceFlags.RANDOM_TRACE_ID if ids.is_trace_id_random() else 0
        self._default_sampling = _default_sampling(provider.sampler)

    @classmethod
    def start(
        cls, config: TraceConfig, *, service: str, drop_listeners: Sequence[Callable[[str, int], None]] = ()
    ) -> Spans:
        """Build the provider (sampler from OTEL_TRACES_SAMPLER, resource from OTEL_* as the SDK reads
        them); `drop_listeners` are told of every span dropped (reason, count)."""
        counts = _Counts(drop_listeners)
        provider = TracerProvider(resource=_resource(service))
        spans = cls(provider, config, counts)
        if "otlp" in config.exporters and config.traces_url:
            from queue_manager.tracing.otlp import SpanExporter as OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=config.traces_url)
            processor = _CountingBatchProcessor(_CountingExporter(exporter, counts), counts)
            provider.add_span_processor(processor)
            spans.light_processors.append(processor)
        if "console" in config.exporters:
            spans.add_processor(_CountingBatchProcessor(_CountingExporter(ConsoleSpanExporter(), counts), counts))
        logger.info(
            "Tracing on: spans of %r go to %s.",
            provider.resource.attributes.get(SERVICE_NAME),
            ", ".join((config.traces_url or e) if e == "otlp" else e for e in config.exporters),
        )
        return spans

    def add_processor(self, processor: Any) -> None:
        """Send every span to `processor` too, as the SDK's ReadableSpan (the console, tests)."""
        self.provider.add_span_processor(processor)
        self.processors.append(processor)

    def _start(
        self,
        name: str,
        kind: SpanKind,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        links: list[SpanContext] | None = None,
        context: Context | None = None,
    ) -> Span:
        """Start a span as the SDK's tracer does (its sampler and id generator), as a _LightSpan.

        `parent` is the parent's context (None: a root); `context` the one it was found in, if any
        (for a sampler other than the default, which is given it).
        """
        if parent is not None and not parent.is_valid:
            parent = None
        if self._random_ids:
            trace_id = parent.trace_id if parent is not None else (getrandbits(128) or 1)
            span_id = getrandbits(64) or 1
        else:
            ids = self.provider.id_generator
            trace_id = parent.trace_id if parent is not None else ids.generate_trace_id()
            span_id = ids.generate_span_id()
        random_flag = parent.trace_flags & TraceFlags.RANDOM_TRACE_ID if parent is not None else self._random_flag
        if self._default_sampling:
            if parent is not None and not parent.trace_flags.sampled:
                return NonRecordingSpan(SpanContext(trace_id, span_id, False, _FLAGS[random_flag], parent.trace_state))
            state = parent.trace_state if parent is not None else None
            span_context = SpanContext(trace_id, span_id, False, _FLAGS[TraceFlags.SAMPLED | random_flag], state)
            return _LightSpan(self, name, span_context, parent, kind, attributes, links or ())
        if context is None and parent is not None:
            context = trace.set_span_in_context(NonRecordingSpan(parent), Context())
        elif context is None:
            context = Context()
        link_objects = [Link(c) for c in links or ()]
        result = self.provider.sampler.should_sample(context, trace_id, name, kind, attributes, link_objects)
        flags = (TraceFlags.SAMPLED if result.decision.is_sampled() else 0) | random_flag  # type: ignore[no-untyped-call]
        span_context = SpanContext(trace_id, span_id, False, _FLAGS[flags], result.trace_state)
        if not result.decision.is_recording():  # type: ignore[no-untyped-call]
            return NonRecordingSpan(span_context)
        return _LightSpan(self, name, span_context, parent, kind, dict(result.attributes or {}), links or ())

    def shutdown(self, timeout_seconds: float) -> None:
        # Bounded: a collector that is away must not hold up a stop for its retries.
        self.provider.force_flush(int(timeout_seconds * 1000))
        worker = threading.Thread(target=self.provider.shutdown, name="qm-trace-shutdown", daemon=True)
        worker.start()
        worker.join(timeout_seconds)
        with self.counts.lock:
            exported, dropped = self.counts.exported, self.counts.queue_full + self.counts.export_failed
        logger.log(
            logging.WARNING if dropped else logging.INFO,
            "Tracing stopped: %d span(s) exported, %d dropped.",
            exported,
            dropped,
        )

    def dropped(self) -> int:
        return self.counts.dropped()

    # -- logs and ids -------------------------------------------------------------------------

    def log_fields(self) -> dict[str, str] | None:
        span = _current_span()
        if type(span) is _LightSpan:
            trace_id, span_id = span.hex_ids()
            return {"trace_id": trace_id, "span_id": span_id}
        context = span.get_span_context()
        if not context.is_valid:
            return None
        return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}

    def current_trace_id(self) -> str | None:
        span = _current_span()
        if type(span) is _LightSpan:
            return span.hex_ids()[0]
        context = span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    # -- producing ----------------------------------------------------------------------------

    def created(self, entry: dict[str, Any], destination: str, message_id: str) -> None:
        current = _current_span().get_span_context()
        span = self._start(
            f"create {destination}",
            SpanKind.PRODUCER,
            current if current.is_valid else None,
            # Few attributes: a message makes three spans on each side.
            {
                "messaging.system": SYSTEM,
                "messaging.operation.type": "create",
                "messaging.destination.name": destination,
                "messaging.message.id": message_id,
            },
        )
        context = span.get_span_context()
        attributes = entry.setdefault("MessageAttributes", {})
        value = span.traceparent() if type(span) is _LightSpan else _traceparent(context)
        attributes[constants.ATTR_TRACEPARENT] = {"DataType": "String", "StringValue": value}
        created = self._created
        if len(created) >= MAX_CREATED:  # messages built and never sent (refused): forget them all
            created.clear()
        created[value] = context
        if context.trace_state:
            state = context.trace_state.to_header()
            attributes[constants.ATTR_TRACESTATE] = {"DataType": "String", "StringValue": state}
        span.end()

    def sending(self, destination: str, entries: list[dict[str, Any]]) -> _BatchSpan:
        creations = []
        for entry in entries:
            attributes = entry.get("MessageAttributes", {})
            # The create span's context as made here, else as the entry carries it.
            value = attributes.get(constants.ATTR_TRACEPARENT)
            creation = self._created.pop(value.get("StringValue", ""), None) if isinstance(value, dict) else None
            if creation is None:
                creation = _creation(attributes)
            if creation is not None:
                creations.append(creation)
        span = self._start(
            f"send {destination}",
            SpanKind.CLIENT,
            _batch_parent(creations),
            {
                "messaging.system": SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "SendMessageBatch" if len(entries) > 1 else "SendMessage",
                "messaging.destination.name": destination,
                "messaging.batch.message_count": len(entries),
            },
            creations,
        )
        return _BatchSpan(span)

    # -- consuming ----------------------------------------------------------------------------

    def process(
        self,
        *,
        destination: str,
        message_id: str,
        sqs_message_id: str | None,
        attempt: int,
        attributes: dict[str, Any],
    ) -> Processing:
        """Start an attempt's process span and make it current in this thread."""
        creation = _creation(attributes)
        span_attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.destination.name": destination,
            "messaging.message.id": message_id,
            "qm.attempt": attempt,
        }
        if sqs_message_id:
            span_attributes["aws.sqs.message.id"] = sqs_message_id
        span = self._start(
            f"process {destination}",
            SpanKind.CONSUMER,
            creation if not self.config.consumer_link_only else None,
            span_attributes,
            [creation] if creation is not None else None,
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return Processing(span, token, creation)

    def acked(self, receipt_handle: str, processing: Processing) -> None:
        """A message is about to be deleted: its settle span will link to its creation (or its process span)."""
        link = processing.creation or processing.span.get_span_context()
        with self._settling_lock:
            self._settling[receipt_handle] = link
            if len(self._settling) > MAX_SETTLING:
                self._settling.popitem(last=False)

    def settling(self, queue_url: str, receipt_handles: list[str]) -> _BatchSpan:
        with self._settling_lock:
            links = [c for c in (self._settling.pop(h, None) for h in receipt_handles) if c is not None]
        queue = _queue_name(queue_url)
        span = self._start(
            f"settle {queue}",
            SpanKind.CLIENT,
            _batch_parent(links),
            {
                "messaging.system": SYSTEM,
                "messaging.operation.type": "settle",
                "messaging.operation.name": "DeleteMessageBatch",
                "messaging.destination.name": queue,
                "messaging.batch.message_count": len(receipt_handles),
            },
            links,
        )
        return _BatchSpan(span)

    # -- HTTP -----------------------------------------------------------------------------------

    def http_client(self, method: str, url: str, headers: dict[str, str]) -> _HttpClientSpan:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        # No url.full: a webhook URL's path or query often is its secret (Slack's, for one).
        attributes: dict[str, Any] = {"http.request.method": method, "url.scheme": parts.scheme}
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        if port:
            attributes["server.port"] = port
        current = trace.get_current_span().get_span_context()
        span = self._start(method, SpanKind.CLIENT, current if current.is_valid else None, attributes)
        propagate.inject(headers, context=trace.set_span_in_context(span))
        return _HttpClientSpan(span)

    def server_span(self, name: str, headers: Any, attributes: dict[str, Any]) -> tuple[Span, object]:
        """Start a SERVER span whose parent is the caller's context (OTEL_PROPAGATORS); make it current."""
        fields = self._propagated_fields
        if fields is None or self._textmap is not propagate.get_global_textmap():
            self._textmap = propagate.get_global_textmap()
            fields = self._propagated_fields = tuple(self._textmap.fields)
        # Nothing to extract when the request carries none of the propagators' headers (most don't).
        parent = propagate.extract(headers) if any(f in headers for f in fields) else _EMPTY
        caller = trace.get_current_span(parent).get_span_context()
        span = self._start(name, SpanKind.SERVER, caller if caller.is_valid else None, attributes, context=parent)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end_server_span(self, span: Span, token: object, status: int | None, exc: BaseException | None) -> None:
        if status is not None:
            span.set_attribute("http.response.status_code", status)
            if status >= 500:  # a server span counts only 5xx as its own errors (HTTP conventions)
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        if exc is not None:
            _error(span, exc)
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def traceparent(span: Span) -> str | None:
        """The W3C traceparent of a span (for an answer's header)."""
        if type(span) is _LightSpan:
            return span.traceparent()
        context = span.get_span_context()
        return _traceparent(context) if context.is_valid else None


#: A context with nothing in it: a root's.
_EMPTY = Context()


def _traceparent(context: SpanContext) -> str:
    """W3C Trace Context's traceparent of a span context (what TraceContextTextMapPropagator writes)."""
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
