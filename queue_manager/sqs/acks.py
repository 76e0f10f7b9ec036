"""Batched acknowledgements, retry visibility changes and the visibility heartbeat."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from typing import Any

from queue_manager import tracing
from queue_manager.sqs import constants
from queue_manager.sqs.batches import MAX_SETTLE_ATTEMPTS, chunks, settle_batch

logger = logging.getLogger(__name__)

#: The heartbeat extends a lease once less than this share of the visibility timeout is left.
HEARTBEAT_THRESHOLD = 0.5

#: Batches (DeleteMessageBatch, ChangeMessageVisibilityBatch) one process keeps in flight at once.
#: One at a time caps a process at ten acks per round trip: 500 a second at 20 ms, fewer than ten
#: threads of quick messages finish. Full batches wait their turn beyond this many.
MAX_BATCHES_IN_FLIGHT = 4

#: The shortest sleep of the housekeeping thread when an entry is already due (it is sent at once).
MIN_WAIT_SECONDS = 0.001

_Work = tuple[str, str, list["_Entry"]]


@dataclasses.dataclass
class Lease:
    """A received message still held by this process, hidden until `visible_until`."""

    queue_url: str
    receipt_handle: str
    received_at: float
    visible_until: float
    hold_until: float


@dataclasses.dataclass
class _Entry:
    receipt_handle: str
    queued_at: float
    visibility_seconds: int = 0
    attempts: int = 0
    #: For a deferral: the lease's visible_until before it, restored if the change fails.
    restore_until: float | None = None


class Acks:
    """One thread per process that gathers acks and visibility changes into batches.

    Deletes wait at most `flush_interval_seconds` (or until ten are pending) and are always
    flushed by `flush()`. Up to `max_in_flight` batches are sent at once, by a pool of their
    own. Leases of running messages are extended before they lapse.
    """

    def __init__(
        self,
        client: Any,
        *,
        visibility_timeout_seconds: int,
        flush_interval_seconds: float,
        max_in_flight: int = MAX_BATCHES_IN_FLIGHT,
    ) -> None:
        self.client = client
        self.max_in_flight = max(1, max_in_flight)
        self.visibility_timeout_seconds = visibility_timeout_seconds
        self.flush_interval_seconds = flush_interval_seconds
        self._cond = threading.Condition()
        self._deletes: dict[str, list[_Entry]] = defaultdict(list)
        self._visibility: dict[str, list[_Entry]] = defaultdict(list)
        self._leases: dict[str, Lease] = {}
        self._due: set[str] = set()
        self._thread: threading.Thread | None = None
        self._running = False
        self._senders: ThreadPoolExecutor | None = None
        self._stopped = False
        #: Batches handed to the senders and not yet answered.
        self._in_flight = 0
        #: Delete batches in flight per queue: a queue's `soon` deletes wait for them, then go together.
        self._deleting: dict[str, int] = defaultdict(int)
        #: Called with the size of every DeleteMessageBatch, e.g. to export it as a metric.
        self.delete_batch_listeners: list[Callable[[int], None]] = []
        #: Called with a queue URL and the receipt handles SQS confirmed deleted (large messages delete
        #: their S3 objects then); called on a sender thread, so a listener must not block.
        self.deleted_listeners: list[Callable[[str, list[str]], None]] = []

    # -- API used by the consumer ------------------------------------------------------------

    def track(self, lease: Lease) -> None:
        """Keep a received message hidden while this process holds it."""
        with self._cond:
            self._leases[lease.receipt_handle] = lease
        self._ensure_started()

    def untrack(self, receipt_handle: str) -> None:
        with self._cond:
            self._leases.pop(receipt_handle, None)

    def delete(self, queue_url: str, receipt_handle: str, *, soon: bool = False) -> None:
        """Acknowledge a message: it joins the next DeleteMessageBatch.

        `soon` sends the queue's pending deletes at once instead of after the flush interval: a
        FIFO group whose last message here is done stays blocked on SQS until its delete arrives.
        While a delete batch of the queue is in flight, they wait for its answer and go together
        (at most a round trip later): under load, groups finishing together share a batch.
        """
        with self._cond:
            self._leases.pop(receipt_handle, None)
            hiding = self._visibility.get(queue_url)
            if hiding and any(e.receipt_handle == receipt_handle for e in hiding):
                # A deferred retry that ran and succeeded before its visibility change went out:
                # the delete makes that change moot (and SQS would refuse it once the message is gone).
                hiding[:] = [e for e in hiding if e.receipt_handle != receipt_handle]
            pending = self._deletes[queue_url]
            pending.append(_Entry(receipt_handle, time.monotonic()))
            if soon:
                self._due.add(queue_url)
            if soon or len(pending) >= constants.MAX_BATCH_ENTRIES:
                self._cond.notify_all()
        self._ensure_started()

    def hold(self, receipt_handle: str, until: float) -> None:
        """Let the heartbeat keep a tracked message hidden until `until` (monotonic), not only its first time limit."""
        with self._cond:
            lease = self._leases.get(receipt_handle)
            if lease is not None:
                lease.hold_until = until

    def defer(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        """Hide a message this process keeps holding for `seconds` (a FIFO retry waiting here).

        Unlike `change_visibility`, the lease stays tracked: the heartbeat extends it again when
        that time runs low, and at once if the change fails. A crash meanwhile leaves the message
        hidden for its backoff, blocking its group, so it is retried no sooner than planned.
        """
        now = time.monotonic()
        with self._cond:
            lease = self._leases.get(receipt_handle)
            restore = None
            if lease is not None:
                restore = lease.visible_until
                lease.visible_until = max(lease.visible_until, now + seconds)
            pending = self._visibility[queue_url]
            pending.append(_Entry(receipt_handle, now, visibility_seconds=seconds, restore_until=restore))
            if len(pending) >= constants.MAX_BATCH_ENTRIES:
                self._cond.notify_all()
        self._ensure_started()

    def change_visibility(self, queue_url: str, receipt_handle: str, seconds: int) -> None:
        """Hide a message for `seconds` more (a retry in place); joins the next batch."""
        with self._cond:
            self._leases.pop(receipt_handle, None)
            pending = self._visibility[queue_url]
            pending.append(_Entry(receipt_handle, time.monotonic(), visibility_seconds=seconds))
            if len(pending) >= constants.MAX_BATCH_ENTRIES:
                self._cond.notify_all()
        self._ensure_started()

    def release_now(self, queue_url: str, receipt_handles: Iterable[str]) -> None:
        """Make messages visible again at once (visibility 0), synchronously."""
        handles = list(receipt_handles)
        with self._cond:
            for handle in handles:
                self._leases.pop(handle, None)
        entries = [_Entry(handle, time.monotonic()) for handle in handles]
        for chunk in chunks([0] * len(entries)):
            batch = [entries[i] for i in chunk]
            failed = self._send_visibility(queue_url, batch)
            if failed:
                logger.warning(
                    "Could not release %d message(s) on %r; they return after their timeout.", len(failed), queue_url
                )

    def pending_deletes(self) -> int:
        """Messages processed but not yet deleted: the duplicates a crash now would cause."""
        with self._cond:
            return sum(len(entries) for entries in self._deletes.values())

    def flush(self, timeout_seconds: float = 10.0) -> None:
        """Send every pending delete and visibility change now, and wait for the batches in flight."""
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            work = self._take(force=True)
            if work:
                wait_for_futures([self._submit(item) for item in work], timeout=max(deadline - time.monotonic(), 0))
                continue
            with self._cond:
                if not self._in_flight:
                    break
                self._cond.wait(max(deadline - time.monotonic(), 0))
        remaining = self.pending_deletes()
        if remaining:
            logger.warning(
                "%d acknowledgement(s) could not be flushed; those messages will be delivered again.", remaining
            )

    def stop(self) -> None:
        """Flush everything and stop the thread."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
        with self._cond:
            self._stopped = True
            senders, self._senders = self._senders, None
        if senders is not None:
            senders.shutdown(wait=True)

    # -- the thread -----------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._cond:
            if self._thread is not None:
                return
            self._running = True
            self._thread = threading.Thread(target=self._run, name="qm-acks", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        tick = min(self.flush_interval_seconds, 1.0)
        next_heartbeat = time.monotonic()
        while True:
            with self._cond:
                if not self._running:
                    return
                if self._in_flight >= self.max_in_flight:
                    self._cond.wait(timeout=tick)  # a batch answered wakes it
                elif not self._full_batch_waiting():
                    # Until the oldest pending entry is due, not a whole tick: waking on the tick
                    # alone, a partial batch waited up to twice the flush interval.
                    self._cond.wait(timeout=self._wait_seconds(tick))
                room = self.max_in_flight - self._in_flight
            try:
                if room > 0:
                    for item in self._take(force=False, most=room):
                        self._submit(item)
                if time.monotonic() >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = time.monotonic() + tick
            except Exception:  # the thread must outlive any one failure
                logger.exception("Housekeeping round failed; it is tried again.")
                time.sleep(tick)

    def _wait_seconds(self, tick: float) -> float:
        """How long the thread may sleep: a tick, or less when a pending entry falls due sooner (under the lock)."""
        oldest = min(
            (
                entries[0].queued_at
                for pending in (self._deletes, self._visibility)
                for entries in pending.values()
                if entries
            ),
            default=None,
        )
        if oldest is None:
            return tick
        return min(tick, max(oldest + self.flush_interval_seconds - time.monotonic(), MIN_WAIT_SECONDS))

    def _full_batch_waiting(self) -> bool:
        """Whether a batch may go now without waiting for the flush interval (call holding the condition)."""
        return any(not self._deleting[queue_url] for queue_url in self._due) or any(
            len(entries) >= constants.MAX_BATCH_ENTRIES
            for pending in (self._deletes, self._visibility)
            for entries in pending.values()
        )

    def _submit(self, item: _Work) -> Future[None]:
        """Send one batch on a sender thread (in this thread once stopped)."""
        with self._cond:
            self._in_flight += 1
            if item[0] == "delete":
                self._deleting[item[1]] += 1
            if not self._stopped and self._senders is None:
                self._senders = ThreadPoolExecutor(max_workers=self.max_in_flight, thread_name_prefix="qm-acks-send")
            senders = None if self._stopped else self._senders
        if senders is not None:
            return senders.submit(self._send_one, item)
        done: Future[None] = Future()
        self._send_one(item)
        done.set_result(None)
        return done

    def _send_one(self, item: _Work) -> None:
        try:
            self._send([item])
        except Exception:  # a sender must outlive any one failure; the entries come back next round
            logger.exception("Sending a %s batch failed unexpectedly; it is tried again.", item[0])
            with self._cond:
                (self._deletes if item[0] == "delete" else self._visibility)[item[1]][:0] = item[2]
        finally:
            with self._cond:
                self._in_flight -= 1
                if item[0] == "delete":
                    self._deleting[item[1]] -= 1
                self._cond.notify_all()

    def _take(self, *, force: bool, most: int | None = None) -> list[_Work]:
        """The batches due now (all that is pending if `force`), at most `most` of them."""
        now = time.monotonic()
        work: list[_Work] = []
        with self._cond:
            for kind, pending_by_queue in (("delete", self._deletes), ("visibility", self._visibility)):
                for queue_url, entries in pending_by_queue.items():
                    # A queue's `soon` deletes go at once, unless one of its delete batches is in flight.
                    due = kind == "delete" and queue_url in self._due and not self._deleting[queue_url]
                    while (
                        entries
                        and (most is None or len(work) < most)
                        and (
                            force
                            or due
                            or len(entries) >= constants.MAX_BATCH_ENTRIES
                            or now - entries[0].queued_at >= self.flush_interval_seconds
                        )
                    ):
                        batch = entries[: constants.MAX_BATCH_ENTRIES]
                        del entries[: constants.MAX_BATCH_ENTRIES]
                        work.append((kind, queue_url, batch))
                    if kind == "delete" and not entries:
                        self._due.discard(queue_url)
        return work

    def _send(self, work: list[_Work]) -> None:
        for kind, queue_url, batch in work:
            if kind == "delete":
                failed = self._send_deletes(queue_url, batch)
                target = self._deletes
            else:
                failed = self._send_visibility(queue_url, batch)
                target = self._visibility
            retry = []
            if kind == "visibility":
                self._restore(failed)
            for entry in failed:
                entry.attempts += 1
                if entry.attempts >= MAX_SETTLE_ATTEMPTS:
                    logger.error("Gave up on %s of a message on %r after %d attempts.", kind, queue_url, entry.attempts)
                else:
                    retry.append(entry)
            if retry:
                with self._cond:
                    target[queue_url][:0] = retry

    def _restore(self, failed: list[_Entry]) -> None:
        """Give failed deferrals their lease's old deadline back, so the heartbeat keeps the message hidden."""
        with self._cond:
            for entry in failed:
                lease = self._leases.get(entry.receipt_handle)
                if entry.restore_until is not None and lease is not None:
                    lease.visible_until = min(lease.visible_until, entry.restore_until)

    def _send_deletes(self, queue_url: str, batch: list[_Entry]) -> list[_Entry]:
        for listener in self.delete_batch_listeners:
            listener(len(batch))
        entries = [{"ReceiptHandle": e.receipt_handle} for e in batch]
        with tracing.settling(queue_url, [e.receipt_handle for e in batch]) as span:
            if not self.deleted_listeners:
                failed = self._call("delete", self.client.delete_message_batch, queue_url, batch, entries)
            else:
                succeeded: list[int] = []
                retry = settle_batch(
                    "delete", self.client.delete_message_batch, queue_url, entries, succeeded=succeeded
                )
                for deleted in self.deleted_listeners:
                    deleted(queue_url, [batch[i].receipt_handle for i in succeeded])
                failed = [batch[i] for i in retry]
            span.results(len(batch) - len(failed), len(failed))
        return failed

    def _send_visibility(self, queue_url: str, batch: list[_Entry]) -> list[_Entry]:
        entries = [{"ReceiptHandle": e.receipt_handle, "VisibilityTimeout": e.visibility_seconds} for e in batch]
        return self._call("visibility change", self.client.change_message_visibility_batch, queue_url, batch, entries)

    def _call(
        self,
        kind: str,
        method: Callable[..., dict[str, Any]],
        queue_url: str,
        batch: list[_Entry],
        entries: list[dict[str, Any]],
    ) -> list[_Entry]:
        """Send one batch; the entries worth another try (the policy of `batches.settle_batch`)."""
        return [batch[i] for i in settle_batch(kind, method, queue_url, entries)]

    def _heartbeat(self) -> None:
        now = time.monotonic()
        vt = self.visibility_timeout_seconds
        due: dict[str, list[tuple[Lease, int]]] = defaultdict(list)
        with self._cond:
            for lease in self._leases.values():
                if lease.visible_until - now > vt * HEARTBEAT_THRESHOLD:
                    continue
                cap = min(
                    lease.hold_until,
                    lease.received_at + constants.MAX_HIDE_SECONDS,
                )
                new_until = min(now + vt, cap)
                if new_until <= lease.visible_until:
                    continue
                due[lease.queue_url].append((lease, math.ceil(new_until - now)))
        for queue_url, items in due.items():
            for indexes in chunks([0] * len(items)):
                chunk = [items[i] for i in indexes]
                entries = [_Entry(lease.receipt_handle, now, visibility_seconds=seconds) for lease, seconds in chunk]
                failed = {e.receipt_handle for e in self._send_visibility(queue_url, entries)}
                with self._cond:
                    for lease, seconds in chunk:
                        if lease.receipt_handle not in failed and lease.receipt_handle in self._leases:
                            lease.visible_until = now + seconds
                logger.debug("Extended the visibility of %d message(s) on %r.", len(chunk) - len(failed), queue_url)
