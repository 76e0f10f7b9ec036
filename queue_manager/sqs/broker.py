"""The SQS broker: dramatiq-sqs's SQSBroker with our consumers, queue setup, sends and worker lifecycle.

It owns the process's SQS clients and the parts its consumers share (acks, capacity), builds each
consumer through `consumer_class` (`fifo_consumer_class` for a FIFO queue) from a ConsumerContext,
and reacts to the worker's boot and shutdown itself: no middleware needs to know this class.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import dramatiq
import dramatiq.middleware
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from dramatiq.middleware import MiddlewareError, Retries
from dramatiq_sqs import SQSBroker

from queue_manager import tracing
from queue_manager.payloads.offload import Offloader
from queue_manager.sqs import constants, queues, quickstop
from queue_manager.sqs.acks import Acks
from queue_manager.sqs.capacity import Capacity
from queue_manager.sqs.consumer import BodyDecoder, ConsumerContext, QMConsumer
from queue_manager.sqs.deadletters import DeadLetters
from queue_manager.sqs.direct import DirectSQS
from queue_manager.sqs.errors import raise_unavailable
from queue_manager.sqs.fifo_consumer import FifoConsumer
from queue_manager.sqs.middleware.retries import RetriesInPlace
from queue_manager.sqs.pending import NOT_YET, PendingConsumer
from queue_manager.sqs.sending import Sender, SendResult
from queue_manager.sqs.workload import Workload

logger = logging.getLogger(__name__)

#: Seconds a receive may take beyond its long-poll wait before botocore gives up.
RECEIVE_READ_MARGIN_SECONDS = 10

#: The shortest MessageRetentionPeriod SQS accepts.
MIN_RETENTION_SECONDS = 60

#: The visibility timeout when none is given: short, because the heartbeat extends it.
DEFAULT_VISIBILITY_TIMEOUT_SECONDS = 30

#: How often `join` reads a queue's counts.
JOIN_INTERVAL_SECONDS = 0.1


#: Messages held beyond the worker's threads, ready for the next thread to free, while no queue is busy.
DEFAULT_RECEIVE_LOOKAHEAD = 1

#: The same while a queue is busy (its receives come back full): one receive's worth.
DEFAULT_BUSY_LOOKAHEAD = constants.MAX_RECEIVE_MESSAGES

#: Receives the redrive policy allows beyond a message's attempts: room for hand-backs, which SQS
#: counts as receives (a worker that stops while a long poll brings a message, a FIFO group's
#: held messages at a stop), so that a message handed back is never dead-lettered before it ran.
DEFAULT_SPARE_RECEIVES = 3

#: The longest a stopping worker waits for the messages it received to start, before its threads stop.
DEFAULT_STOP_DRAIN_SECONDS = 10.0

#: How often that wait looks.
DRAIN_POLL_SECONDS = 0.05


class QMBroker(SQSBroker):  # type: ignore[misc]
    """An SQSBroker whose consumer acks in batches, retries in place and holds nothing idle.

    A drop-in for dramatiq-sqs's SQSBroker: it takes the same options with the same meaning
    (`namespace`, `middleware`, `retention`, `dead_letter`, `dead_letter_retention`,
    `visibility_timeout`, `max_message_size`, `tags`, and boto3's own as `**options`), and
    dramatiq-sqs 0.3's `max_receives`. Where a default differs, it is the safer one: a
    dead-letter queue, a 30 s visibility timeout kept up by a heartbeat.

    Parameters:
      namespace: Prefix of every queue name (`<namespace>_<queue>`); None names queues as declared.
      middleware: The middleware, in order. None means Dramatiq's defaults with RetriesInPlace
        for Retries.
      retention: How long the queue keeps a message, 60 s to 14 days.
      dead_letter: Whether queues get a dead-letter queue and a redrive policy; without one, a
        message that fails for good is deleted (and logged).
      dead_letter_retention: How long the dead-letter queue keeps a message, 60 s to 14 days.
      visibility_timeout: How long a received message is hidden before the heartbeat extends
        it, 5 s to 12 h; `visibility_timeout_seconds` is the same option. 30 s by default.
      max_message_size: The largest body, base64-encoded, an enqueue accepts.
      tags: Tags of every queue: set when it is created, added when it exists already.
      max_receives: The redrive policy's maxReceiveCount (1-1000); by default the most retries
        of the queue's actors, plus one, plus `spare_receives`.
      spare_receives: Receives SQS allows beyond the attempts before it dead-letters, for messages
        handed back at a stop (each one is a receive SQS counts). A crash loop still ends in the
        dead-letter queue, after retries + 1 + spare_receives crashes.
      endpoint_url: The SQS endpoint; None means AWS.
      region_name: The AWS region.
      receive_wait_seconds: The long-poll wait of an idle queue's receive (1-20 s); None takes
        it from the consumer's timeout, as dramatiq-sqs does (the worker's, 1 s by default).
      ack_flush_interval_ms: The longest an ack waits to join a DeleteMessageBatch.
      max_retries: The default retries, which sets each queue's maxReceiveCount.
      time_limit_ms: The default time limit, which caps the heartbeat.
      create_queues: Whether missing queues are created.
      sqs_timeout_seconds: Connect and read timeout of calls other than receives.
      receive_linger_ms: How long a receive waits for more threads to free once one has.
      receive_gather_ms: How long a receive that came back part-full waits before the next one.
      max_pool_connections: The size of each SQS client's connection pool.
      fifo_queues: The Dramatiq queues that are SQS FIFO queues (as the schemas declare them);
        a queue whose actor has the option `fifo=True` is one too.
      receive_lookahead: Messages held beyond the worker's threads while no queue is busy, so a
        freed thread need not wait for a receive.
      busy_lookahead: The same while a queue is busy (receives come back full): the next receive
        then overlaps the work of the last. At least `receive_lookahead`.
      stats_dir: If set, each worker process writes its SQS request counts there on exit.
      stop_drain_seconds: The longest a stopping worker waits for what it received (and what busy
        receives in flight bring) to start running, so that nothing it holds is handed back: a
        hand-back is a receive SQS counts against the redrive policy.
      direct_calls: Make the hot calls (send, receive, delete, hide) directly, with botocore's
        signer and connection pool but not its generic pipeline (`queue_manager.sqs.direct`); False
        sends every call through boto3, where botocore's event hooks see it.
      **options: Passed to boto3 for every SQS client (credentials, `config`, ...); a given
        botocore `config` is merged over ours.
    """

    #: Hooks by signal, built on first use (see `_hooks`).
    _hook_cache: dict[tuple[Any, ...], list[tuple[dramatiq.Middleware, Callable[..., Any]]]] | None = None

    def __init__(
        self,
        *,
        namespace: str | None = None,
        middleware: list[dramatiq.Middleware] | None = None,
        retention: int = constants.MAX_RETENTION_SECONDS,
        dead_letter: bool = True,
        dead_letter_retention: int = constants.MAX_RETENTION_SECONDS,
        visibility_timeout: int | None = None,
        max_message_size: int = constants.MAX_MESSAGE_SIZE_BYTES,
        tags: dict[str, str] | None = None,
        max_receives: int | None = None,
        spare_receives: int = DEFAULT_SPARE_RECEIVES,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        visibility_timeout_seconds: int | None = None,
        receive_wait_seconds: int | None = None,
        ack_flush_interval_ms: int = 250,
        max_retries: int = 5,
        time_limit_ms: int = 300_000,
        create_queues: bool = True,
        sqs_timeout_seconds: float = 5.0,
        receive_linger_ms: int = 2,
        max_pool_connections: int = 32,
        receive_gather_ms: int = 0,
        fifo_queues: frozenset[str] | set[str] = frozenset(),
        receive_lookahead: int = DEFAULT_RECEIVE_LOOKAHEAD,
        busy_lookahead: int = DEFAULT_BUSY_LOOKAHEAD,
        stats_dir: Path | None = None,
        stop_drain_seconds: float = DEFAULT_STOP_DRAIN_SECONDS,
        direct_calls: bool = True,
        **options: Any,
    ) -> None:
        visibility = _visibility_seconds(visibility_timeout, visibility_timeout_seconds)
        _check_range("retention", retention, MIN_RETENTION_SECONDS, constants.MAX_RETENTION_SECONDS)
        _check_range(
            "dead_letter_retention", dead_letter_retention, MIN_RETENTION_SECONDS, constants.MAX_RETENTION_SECONDS
        )
        _check_range("max_message_size", max_message_size, 1, None)
        if max_receives is not None:
            _check_range("max_receives", max_receives, 1, constants.MAX_RECEIVE_COUNT)
        if receive_wait_seconds is not None:
            _check_range("receive_wait_seconds", receive_wait_seconds, 1, constants.MAX_WAIT_TIME_SECONDS)
        config = Config(
            connect_timeout=sqs_timeout_seconds,
            read_timeout=sqs_timeout_seconds,
            max_pool_connections=max_pool_connections,
            retries={"mode": "standard", "max_attempts": 3},
            # Every request is built here and checked against SQS's limits first (build_entry);
            # botocore's own check of each parameter costs more CPU than the rest of a send.
            parameter_validation=False,
        )
        given_config = options.pop("config", None)
        if given_config is not None:
            config = config.merge(given_config)
        boto_options = {"endpoint_url": endpoint_url, "region_name": region_name, **options}
        super().__init__(
            namespace=namespace,
            middleware=_default_middleware(max_retries) if middleware is None else middleware,
            retention=retention,
            dead_letter=dead_letter,
            dead_letter_retention=dead_letter_retention,
            visibility_timeout=visibility,
            max_message_size=max_message_size,
            tags=tags,
            config=config,
            **boto_options,
        )
        self.client: Any = self.sqs.meta.client
        receive_read_seconds = (receive_wait_seconds or constants.MAX_WAIT_TIME_SECONDS) + RECEIVE_READ_MARGIN_SECONDS
        self.receive_client: Any = boto3.client(
            "sqs", config=config.merge(Config(read_timeout=receive_read_seconds)), **boto_options
        )
        self.sqs_requests: Counter[str] = Counter()
        #: Called with the action of every SQS request, e.g. to export it as a metric.
        self.request_listeners: list[Callable[[str], None]] = []
        self._count_lock = threading.Lock()
        # Sends are never re-sent by botocore: after a read timeout SQS may have the message, and a
        # blind re-send makes a copy. The Sender retries only what surely did not land.
        self.send_client: Any = boto3.client(
            "sqs", config=config.merge(Config(retries={"mode": "standard", "total_max_attempts": 1})), **boto_options
        )
        for client in (self.client, self.receive_client, self.send_client):
            client.meta.events.register("before-call.sqs", self._count_call)
        if direct_calls:
            # The hot calls skip botocore's generic pipeline; its event hooks see only the other calls.
            self.client = DirectSQS(self.client, retries=True, on_request=self.count_request)
            self.receive_client = DirectSQS(self.receive_client, retries=True, on_request=self.count_request)
            self.send_client = DirectSQS(self.send_client, retries=False, on_request=self.count_request)
        self.visibility_timeout_seconds = visibility
        self.sqs_timeout_seconds = sqs_timeout_seconds
        self.sender = Sender(self.send_client, sqs_timeout_seconds=sqs_timeout_seconds)
        self.dead_letters = DeadLetters(self.client, no_retry_client=self.send_client)
        #: The idle long-poll wait; None takes it from each consumer's timeout.
        self.receive_wait_seconds = receive_wait_seconds
        self.receive_linger_seconds = receive_linger_ms / 1000
        self.receive_gather_seconds = receive_gather_ms / 1000
        self.max_retries = max_retries
        self.max_receives = max_receives
        self.spare_receives = spare_receives
        self.default_time_limit_ms = time_limit_ms
        self.create_queues = create_queues
        self.capacity = Capacity()
        #: What this process holds, per queue: received, running, backing off (for /scaling and the gauges).
        self.workload = Workload()
        self.acks = Acks(
            self.client,
            visibility_timeout_seconds=visibility,
            flush_interval_seconds=ack_flush_interval_ms / 1000,
        )
        #: Called with the size of every DeleteMessageBatch, e.g. to export it as a metric.
        self.delete_batch_listeners: list[Callable[[int], None]] = self.acks.delete_batch_listeners
        #: Set when the worker stops: consumers receive nothing more and hand back what arrives.
        self.stopping = threading.Event()
        self.receive_lookahead = receive_lookahead
        self.busy_lookahead = busy_lookahead
        self.stats_dir = stats_dir
        self.stop_drain_seconds = stop_drain_seconds
        self.urls: dict[str, queues.QueueUrls] = {}
        #: One lock per queue being set up: each worker's consumer sets up its own queue at start,
        #: and one lock for all made them wait for each other's round trips (~0.1 s a queue at 15 ms).
        self._queue_locks: dict[str, threading.Lock] = {}
        self._queue_locks_lock = threading.Lock()
        self._consumers: weakref.WeakSet[QMConsumer] = weakref.WeakSet()
        #: The Dramatiq queues that are SQS FIFO queues, beyond those whose actors say `fifo=True`.
        self.fifo_queues: set[str] = set(fifo_queues)
        #: Large messages (S3): how consumers decode a body (None: `message.decode`), and how `enqueue`
        #: offloads an entry over the threshold (None: it does not). Set by the composition root.
        self.decode_body: BodyDecoder | None = None
        self.offloader: Offloader | None = None

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        # As Dramatiq's: in order, and a MiddlewareError (SkipMessage) stops the message. The worker's
        # boot and shutdown reach the broker first (its consumers need the thread count, and stop).
        if signal == "worker_boot":
            self._worker_boot(args[0])
        elif signal == "worker_shutdown":
            self._worker_stopping(args[0])
        for middleware, hook in self._hooks("before_" + signal, reverse=False):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical("Unexpected failure in before_%s of %r.", signal, middleware, exc_info=True)

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        # As Dramatiq's: in reverse order, and no failure stops the others.
        if signal == "worker_boot":
            self._worker_started(args[0])
        elif signal == "worker_shutdown":
            self._worker_stopped()
        for middleware, hook in self._hooks("after_" + signal, reverse=True):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical("Unexpected failure in after_%s of %r.", signal, middleware, exc_info=True)

    def _hooks(self, name: str, *, reverse: bool) -> list[tuple[dramatiq.Middleware, Callable[..., Any]]]:
        """The middleware that define hook `name`, with it: the no-op hooks inherited from
        `dramatiq.Middleware` are left out (a message goes through four signals past nine
        middleware, and most of those 36 calls did nothing)."""
        if self._hook_cache is None:
            self._hook_cache = {}
        key = (name, reverse, id(self.middleware), len(self.middleware))
        hooks = self._hook_cache.get(key)
        if hooks is None:
            hooks = []
            for middleware in reversed(self.middleware) if reverse else self.middleware:
                hook = getattr(middleware, name)
                if getattr(hook, "__func__", None) is not getattr(dramatiq.Middleware, name, None):
                    hooks.append((middleware, hook))
            self._hook_cache[key] = hooks
        return hooks

    def _count_call(self, model: Any, **_: Any) -> None:
        self.count_request(model.name)

    def count_request(self, action: str) -> None:
        """Count one request by its action (SQS's, or another service's as `s3:PutObject`)."""
        with self._count_lock:
            self.sqs_requests[action] += 1
        for listener in self.request_listeners:
            listener(action)

    def request_counts(self) -> dict[str, int]:
        """SQS requests made so far, by action."""
        with self._count_lock:
            return dict(self.sqs_requests)

    @property
    def consumer_class(self) -> type[QMConsumer]:
        """The consumer of a standard queue, built from a ConsumerContext; override it to extend the consumer."""
        return QMConsumer

    @property
    def fifo_consumer_class(self) -> type[QMConsumer]:
        """The consumer of a FIFO queue, built from a ConsumerContext."""
        return FifoConsumer

    def is_fifo(self, queue_name: str) -> bool:
        """Whether a Dramatiq queue is an SQS FIFO queue: declared so, or its actors say `fifo=True`."""
        if queue_name in self.fifo_queues:
            return True
        return any(
            actor.options.get(constants.FIFO_OPTION) for actor in self.actors.values() if actor.queue_name == queue_name
        )

    def sqs_queue_name(self, queue_name: str) -> str:
        """The SQS name of a Dramatiq queue (`.fifo` at the end of a FIFO queue's)."""
        return queues.sqs_name(self.namespace, queue_name, fifo=self.is_fifo(queue_name))

    def dead_letter_queue_name(self, queue_name: str) -> str:
        """The SQS name of a Dramatiq queue's dead-letter queue."""
        return queues.dead_letter_name(self.sqs_queue_name(queue_name))

    def max_receive_count(self, queue_name: str) -> int:
        """Receives before SQS dead-letters: `max_receives`, else the most retries of the queue's actors, plus one,
        plus the spare receives for hand-backs."""
        if self.max_receives is not None:
            return int(self.max_receives)
        retries = [
            actor.options.get("max_retries", self.max_retries)
            for actor in self.actors.values()
            if actor.queue_name == queue_name
        ]
        most = max([r for r in retries if r is not None] or [self.max_retries])
        return max(1, min(int(most) + 1 + self.spare_receives, constants.MAX_RECEIVE_COUNT))

    def time_limit_ms(self, actor_name: str) -> int:
        """How long one attempt of an actor's message may run: its `time_limit`, else the broker's."""
        actor = self.actors.get(actor_name)
        limit = actor.options.get("time_limit") if actor is not None else None
        return int(limit or self.default_time_limit_ms)

    def ensure_queue(self, queue_name: str, *, reconcile: bool = False) -> queues.QueueUrls:
        """Return the URLs of a declared queue and its dead-letter queue, creating them if allowed."""
        if queue_name not in self.queue_names:
            raise dramatiq.QueueNotFound(queue_name)  # type: ignore[no-untyped-call]
        urls = self.urls.get(queue_name)
        if urls is not None:
            return urls
        with self._queue_locks_lock:
            lock = self._queue_locks.setdefault(queue_name, threading.Lock())
        with lock:
            urls = self.urls.get(queue_name)
            if urls is None:
                urls = queues.ensure_queue(
                    self.client,
                    self.sqs_queue_name(queue_name),
                    max_receive_count=self.max_receive_count(queue_name),
                    visibility_timeout_seconds=self.visibility_timeout_seconds,
                    retention_seconds=self.retention,
                    dead_letter=self.dead_letter,
                    dead_letter_retention_seconds=self.dead_letter_retention,
                    tags=self.tags,
                    create=self.create_queues,
                    reconcile=reconcile,
                    fifo=self.is_fifo(queue_name),
                )
                with self._queue_locks_lock:  # boto3 resources are not made to be built in parallel
                    # dramatiq-sqs's own view of the queues, for code written against SQSBroker.
                    self.queues[queue_name] = self.sqs.Queue(urls.url)
                    if urls.dead_letter_url:
                        self.dead_letter_queues[queue_name] = self.sqs.Queue(urls.dead_letter_url)
                    self.urls[queue_name] = urls
        return urls

    def _ensure_queue(self, queue_name: str) -> None:
        self.ensure_queue(queue_name)

    def consume(
        self, queue_name: str, prefetch: int = 1, timeout: int = constants.MAX_WAIT_TIME_SECONDS * 1000
    ) -> QMConsumer | PendingConsumer:
        """A consumer of the queue holding at most `prefetch` messages, in progress ones included.

        Its `next()` waits up to `timeout` ms for a message. The long poll of an idle queue is the
        broker's `receive_wait_seconds`, or if that is None this timeout (1-20 s), as dramatiq-sqs.
        A queue that cannot be set up yet (no credentials, SQS down) gets a PendingConsumer, which
        says so once and consumes the queue once it can.
        """
        try:
            return self._consumer(queue_name, prefetch, timeout)
        except NOT_YET as exc:
            return PendingConsumer(
                queue_name=queue_name,
                sqs_name=self.sqs_queue_name(queue_name),
                error=exc,
                connect=lambda: self._consumer(queue_name, prefetch, timeout),
                stopping=self.stopping,
                timeout_ms=timeout,
            )

    def _consumer(self, queue_name: str, prefetch: int, timeout: int) -> QMConsumer:
        """Set up the queue and build its consumer through `consumer_class` (raises what setting up raises)."""
        urls = self.ensure_queue(queue_name, reconcile=True)
        if self.receive_wait_seconds is not None:
            idle_wait_seconds = int(self.receive_wait_seconds)
        else:
            idle_wait_seconds = max(1, min(timeout // 1000, constants.MAX_WAIT_TIME_SECONDS))
        context = ConsumerContext(
            queue_name=queue_name,
            urls=urls,
            prefetch=prefetch,
            timeout_ms=timeout,
            receive_client=self.receive_client,
            client=self.client,
            acks=self.acks,
            capacity=self.capacity,
            stopping=self.stopping,
            visibility_timeout_seconds=self.visibility_timeout_seconds,
            idle_wait_seconds=idle_wait_seconds,
            receive_linger_seconds=self.receive_linger_seconds,
            receive_gather_seconds=self.receive_gather_seconds,
            time_limit_ms=self.time_limit_ms,
            workload=self.workload,
            decode_body=self.decode_body,
        )
        consumer_class = self.fifo_consumer_class if self.is_fifo(queue_name) else self.consumer_class
        consumer = consumer_class(context)
        self._consumers.add(consumer)
        return consumer

    def encode(self, message: dramatiq.Message[Any]) -> str:
        """The SQS body of a message: base64 of Dramatiq's encoding, checked against the limit."""
        return self.sender.encode(message, limit_bytes=self.max_message_size)

    def build_entry(self, message: dramatiq.Message[Any], delay_ms: int | None) -> dict[str, Any]:
        """The SendMessage arguments of a message: body, delay and attributes, checked against SQS limits.

        A message for a FIFO queue needs the `group_id` option and may not be delayed.
        """
        entry = self.sender.build_entry(
            message, delay_ms, fifo_queue=self.is_fifo(message.queue_name), limit_bytes=self.max_message_size
        )
        tracing.created(entry, destination=self.sqs_queue_name(message.queue_name), message_id=message.message_id)
        return entry

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Send one message; returns once SQS has accepted it."""
        urls = self.ensure_queue(message.queue_name)
        entry = self.build_entry(message, delay)
        if self.offloader is not None:
            entry = self.offloader.maybe_offload(message.queue_name, entry)
        self.emit_before("enqueue", message, delay)
        with tracing.sending(self.sqs_queue_name(message.queue_name), [entry]):
            self.sender.send_one(urls.url, entry)
        self.emit_after("enqueue", message, delay)
        return message

    def send_entries(self, queue_name: str, entries: list[dict[str, Any]]) -> list[SendResult]:
        """Send up to ten prepared entries (see `build_entry`) in one SendMessageBatch.

        Returns one result per entry, in order. Raises SQSOutcomeUnknown when the request may have
        reached SQS (a read timeout), SQSUnavailable when it surely did not.
        """
        try:
            urls = self.ensure_queue(queue_name)
        except (BotoCoreError, ClientError) as exc:  # nothing was sent yet
            raise_unavailable(exc)
        with tracing.sending(self.sqs_queue_name(queue_name), entries) as span:
            results = self.sender.send_entries(urls.url, entries)
            span.results(sum(r.ok for r in results), sum(not r.ok for r in results))
        return results

    def depths(self, queue_name: str) -> dict[str, dict[str, int]]:
        """Approximate counts of a queue and its dead-letter queue (if it has one)."""
        urls = self.ensure_queue(queue_name)
        try:
            depths = {"queue": queues.queue_depth(self.client, urls.url).as_dict()}
            if urls.dead_letter_url:
                depths["dead_letter"] = queues.queue_depth(self.client, urls.dead_letter_url).as_dict()
        except (BotoCoreError, ClientError) as exc:
            raise_unavailable(exc)
        return depths

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until the queue holds no message: none visible, in flight or delayed (for tests).

        A message counts until its deletion reaches SQS, so a join returns only once everything
        sent has been processed and acknowledged (or dead-lettered). SQS's counts are approximate:
        on AWS they may lag a few seconds behind.

        Parameters:
          queue_name: The Dramatiq queue to wait on.
          timeout: The longest to wait, in milliseconds (as Dramatiq's brokers); None waits on.

        Raises:
          QueueJoinTimeout: When messages remain after `timeout`.
          QueueNotFound: When the queue was never declared.
        """
        urls = self.ensure_queue(queue_name)
        deadline = None if timeout is None else time.monotonic() + timeout / 1000
        while True:
            try:
                depth = queues.queue_depth(self.client, urls.url)
            except (BotoCoreError, ClientError) as exc:
                raise_unavailable(exc)
            if depth.visible + depth.in_flight + depth.delayed == 0:
                return
            pause = JOIN_INTERVAL_SECONDS
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise dramatiq.QueueJoinTimeout(queue_name)  # type: ignore[no-untyped-call]
                pause = min(pause, remaining)
            time.sleep(pause)

    def stop_receiving(self) -> None:
        """Receive no more messages; what receives in flight bring still runs until the consumers close."""
        self.stopping.set()
        for consumer in list(self._consumers):
            consumer.wake()

    def close(self) -> None:
        """Close the consumers still open (releasing what they hold), then flush every ack."""
        for consumer in list(self._consumers):
            consumer.close()
        self.acks.stop()

    def _worker_boot(self, worker: Any) -> None:
        """A worker starts: receives are sized to its threads, whose waits for work end when it stops."""
        self.stopping.clear()
        self.capacity.set_threads(worker.worker_threads, self.receive_lookahead, self.busy_lookahead)
        quickstop.use_stopping_work_queue(worker)

    def _worker_started(self, worker: Any) -> None:
        """A worker has started: in a `dramatiq` worker process, a stop signal stops it at once."""
        quickstop.chain_signal_handlers(worker)

    def _worker_stopping(self, worker: Any) -> None:
        """The worker stops: receive nothing more, and let what was received start before its threads stop.

        Dramatiq stops the threads first and hands back what waits in memory; a hand-back is a
        receive SQS counts, so the messages held ready (and those a busy receive in flight brings)
        are let start first, for up to `stop_drain_seconds`. Idle long polls are not waited for.
        """
        self.stop_receiving()
        work_queue = getattr(worker, "work_queue", None)

        def drained() -> bool:
            return all(c.drained() for c in list(self._consumers)) and (work_queue is None or work_queue.empty())

        deadline = time.monotonic() + self.stop_drain_seconds
        settled = 0
        while time.monotonic() < deadline and settled < 2:
            # Twice in a row, a moment apart: a message between a consumer and the work queue is seen.
            settled = settled + 1 if drained() else 0
            time.sleep(DRAIN_POLL_SECONDS)
        if settled < 2:
            logger.warning(
                "Stopping with messages received but not started after %g s; they are handed back.",
                self.stop_drain_seconds,
            )
        # Dramatiq tells its threads to stop next: they see it within a moment, not a second.
        quickstop.stop_waiting(worker)

    def _worker_stopped(self) -> None:
        """The worker's consumers are closed: flush the acks, and say what SQS was asked."""
        self.acks.stop()
        counts = self.request_counts()
        logger.info("Worker stopped; SQS requests by action: %s.", json.dumps(counts, sort_keys=True))
        if self.stats_dir is not None:
            self.stats_dir.mkdir(parents=True, exist_ok=True)
            path = self.stats_dir / f"worker-{os.getpid()}.json"
            path.write_text(json.dumps({"sqs_requests": counts}, sort_keys=True))


def _check_range(name: str, value: int, low: int, high: int | None) -> None:
    """Refuse an option outside its range, naming it and the range (as SQSBroker refuses its own)."""
    if value < low or (high is not None and value > high):
        limits = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ValueError(f"{name!r} must be {limits}, not {value}.")


def _visibility_seconds(visibility_timeout: int | None, visibility_timeout_seconds: int | None) -> int:
    """The visibility timeout from dramatiq-sqs's option name or ours, which are one option."""
    if (
        None not in (visibility_timeout, visibility_timeout_seconds)
        and visibility_timeout != visibility_timeout_seconds
    ):
        raise ValueError(
            f"'visibility_timeout' ({visibility_timeout}) and 'visibility_timeout_seconds' "
            f"({visibility_timeout_seconds}) name the same option; give one."
        )
    given = visibility_timeout if visibility_timeout is not None else visibility_timeout_seconds
    seconds = DEFAULT_VISIBILITY_TIMEOUT_SECONDS if given is None else given
    _check_range(
        "visibility_timeout",
        seconds,
        constants.MIN_HEARTBEAT_VISIBILITY_SECONDS,
        constants.MAX_VISIBILITY_TIMEOUT_SECONDS,
    )
    return seconds


def _default_middleware(max_retries: int) -> list[dramatiq.Middleware]:
    """Dramatiq's default middleware, its Retries (which re-sends) replaced by retries in place."""
    return [
        RetriesInPlace(max_retries=max_retries) if cls is Retries else cls()
        for cls in dramatiq.middleware.default_middleware
    ]
