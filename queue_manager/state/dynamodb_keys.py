"""Idempotency keys in DynamoDB: one Idempotency-Key is one message across every API host of a fleet.

A key is one item (`pk = key#<queue prefix>#<key>`, `sk = key`, see `queue_manager.state.dynamodb`)
moved through the same states as in SQLite (`pending`, `done`, `unknown`) by conditional writes,
so two hosts racing for a key never both send:

- claim: PutItem conditioned on `attribute_not_exists(pk) OR expires <= now` (a new key, or one
  whose window is over). One request in the common case. When the condition fails, DynamoDB hands
  back the item as it stood (or a strongly consistent GetItem reads it): `done` replays,
  `pending` within its lease waits, and `unknown` or `pending` past its lease is taken over by an
  UpdateItem conditioned on exactly that state (of two hosts taking over, one wins).
- done: UpdateItem conditioned on the fingerprint (whichever attempt landed, SQS has a copy of the
  key's message with its one id: done, whoever owns the key now, as in SQLite); failed: UpdateItem
  to `unknown`, or DeleteItem, conditioned on the owner token and `pending`.
- wait: local requests wake when their process records the outcome; a key another host sends is
  claimed again every POLL_INTERVAL_SECONDS until the request's timeout.

A keyed message therefore costs two requests (claim and done), an unkeyed one none. Outcomes are
recorded in the background, off the request's path, on the store's own threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final

from botocore.exceptions import ClientError

from queue_manager.state import dynamodb
from queue_manager.state.base import StoreUnavailable
from queue_manager.state.idempotency import Claim, KeyReused, wait_settled

logger = logging.getLogger(__name__)

#: How often a request waiting for a key another host is sending claims it again.
POLL_INTERVAL_SECONDS: Final = 0.05

#: Threads per process making the store's calls (claims wait on them; outcomes are recorded on them).
STORE_THREADS: Final = 8

#: Conditional writes a claim tries before it calls the key contended (each lost race re-reads the key).
CLAIM_ROUNDS: Final = 4

_SORT_KEY: Final = {"S": "key"}
#: Attribute names DynamoDB reserves (state, owner, expires) are written through placeholders.
_NAMES: Final = {"#state": "state", "#owner": "owner", "#expires": dynamodb.TTL_ATTRIBUTE}


class DynamoIdempotencyKeys:
    """Per key, the message it came with and the answer it got, shared by every API process of a fleet.

    Parameters:
      settings: The table (QM_STATE_TABLE), whether to create it, the queue prefix, the window.
      lease_seconds: How long a `pending` key is trusted to its owner's send.
      client: A DynamoDB client (made from the settings when None).
    """

    def __init__(self, settings: dynamodb.StoreSettings, *, lease_seconds: float, client: Any = None) -> None:
        if not settings.state_table:
            raise ValueError("QM_STATE_TABLE must name a DynamoDB table for the DynamoDB state store.")
        self.table = settings.state_table
        self.create_table = settings.create_tables
        self.queue_prefix = settings.queue_prefix
        self.window_seconds = settings.idempotency_window_seconds
        self.lease_seconds = lease_seconds
        self._settings = settings
        #: The DynamoDB client; made in open(), off the event loop (loading DynamoDB's model takes a while).
        self.client: Any = client
        self._executor = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="qm-state")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._recording: set[asyncio.Future[None]] = set()
        #: Keys this process is sending now, set once their attempt is recorded: local waiters wake at once.
        self._settled: dict[str, asyncio.Event] = {}
        #: Requests made, by operation: the store's cost.
        self.requests: dict[str, int] = {}

    async def open(self) -> None:
        """Check the table (creating it unless QM_CREATE_TABLES=false); raises TableMissing if it is missing.

        DynamoDB out of reach is no reason not to start: keyed requests are answered 503 until it answers.
        """
        self._loop = asyncio.get_running_loop()
        if self.client is None:
            self.client = await self._loop.run_in_executor(self._executor, dynamodb.client, self._settings)
            admin = await self._loop.run_in_executor(
                self._executor,
                lambda: dynamodb.client(self._settings, timeout_seconds=dynamodb.TABLE_CALL_TIMEOUT_SECONDS),
            )
        else:
            admin = self.client
        try:
            await self._loop.run_in_executor(
                self._executor, lambda: dynamodb.ensure_table(admin, self.table, create=self.create_table)
            )
        finally:
            if admin is not self.client:
                admin.close()

    async def claim(self, key: str, fingerprint: str) -> Claim:
        """Claim a key for this request. Raises KeyReused, or StoreUnavailable if DynamoDB fails or throttles."""
        assert self._loop is not None, "open() the store first"
        if self._closing:
            raise StoreUnavailable("The idempotency store is closed.")
        token = uuid.uuid4().hex
        claim = await self._loop.run_in_executor(self._executor, self._claim, key, fingerprint, token)
        if claim.reused:
            raise KeyReused(key)
        if claim.owner is not None:
            self._settled[key] = asyncio.Event()
        return claim

    def _claim(self, key: str, fingerprint: str, token: str) -> Claim:
        try:
            return self._claim_rounds(key, fingerprint, token)
        except ClientError as exc:
            if dynamodb.error_code(exc) == "ResourceNotFoundException" and self.create_table:
                # The table was out of reach at start-up, or was deleted since: make it, then claim.
                dynamodb.ensure_table(self.client, self.table, create=True)
                try:
                    return self._claim_rounds(key, fingerprint, token)
                except dynamodb.STORE_ERRORS as again:
                    raise dynamodb.unavailable(again) from again
            raise dynamodb.unavailable(exc) from exc
        except dynamodb.STORE_ERRORS as exc:
            raise dynamodb.unavailable(exc) from exc

    def _claim_rounds(self, key: str, fingerprint: str, token: str) -> Claim:
        item_key = {"pk": {"S": dynamodb.key_pk(self.queue_prefix, key)}, "sk": _SORT_KEY}
        old: dict[str, Any] | None = None
        resend = False  # whether this request's write took an earlier attempt's key over
        for _ in range(CLAIM_ROUNDS):
            now = time.time()
            lease_until = _number(now + self.lease_seconds)
            if old is None:
                item = {
                    **item_key,
                    "fingerprint": {"S": fingerprint},
                    "state": {"S": "pending"},
                    "owner": {"S": token},
                    "lease_until": lease_until,
                    dynamodb.TTL_ATTRIBUTE: {"N": str(math.ceil(now + self.window_seconds))},
                }
                old = self._conditional(
                    "PutItem",
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk) OR #expires <= :now",
                    ExpressionAttributeNames={"#expires": dynamodb.TTL_ATTRIBUTE},
                    ExpressionAttributeValues={":now": _number(now)},
                )
                if old is None:
                    return Claim(owner=token)
                if not old:  # freed between the write and the read: claim it afresh
                    old = None
                    continue
            if _text(old, "owner") == token:  # botocore's retry of our own write met it
                return Claim(owner=token, resend=resend)
            if float(old.get(dynamodb.TTL_ATTRIBUTE, {}).get("N", "0")) <= now:
                old = None  # its window ended since it was read: a new key now
                continue
            if _text(old, "fingerprint") != fingerprint:
                return Claim(reused=True)
            state = _text(old, "state")
            if state == "done":
                return Claim(answer=json.loads(_text(old, "answer") or "null"))
            if state == "pending" and float(old.get("lease_until", {}).get("N", "0")) > now:
                return Claim()
            # Unknown, or pending past its lease (its owner is gone): this request sends it again,
            # unless another host took it over first.
            resend = True
            old = self._conditional(
                "UpdateItem",
                Key=item_key,
                UpdateExpression="SET #state = :pending, #owner = :token, lease_until = :lease",
                ConditionExpression=(
                    "fingerprint = :fp AND #expires > :now AND "
                    "(#state = :unknown OR (#state = :pending AND lease_until <= :now))"
                ),
                ExpressionAttributeNames=_NAMES,
                ExpressionAttributeValues={
                    ":pending": {"S": "pending"},
                    ":unknown": {"S": "unknown"},
                    ":token": {"S": token},
                    ":lease": lease_until,
                    ":fp": {"S": fingerprint},
                    ":now": _number(now),
                },
            )
            if old is None:
                return Claim(owner=token, resend=True)
            if not old:
                old = None
        raise StoreUnavailable(f"The idempotency key {key!r} is contended: {CLAIM_ROUNDS} conditional writes lost.")

    def _conditional(self, operation: str, **request: Any) -> dict[str, Any] | None:
        """Make a conditional write: None when it was made, else the item as it stood ({} when there is none)."""
        self._count(operation)
        call = self.client.put_item if operation == "PutItem" else self.client.update_item
        try:
            call(TableName=self.table, ReturnValuesOnConditionCheckFailure="ALL_OLD", **request)
        except ClientError as exc:
            if dynamodb.error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            if old is not None:
                return dict(old)
            # A server that does not return the item: read it, strongly consistent.
            self._count("GetItem")
            read = self.client.get_item(
                TableName=self.table, Key=request.get("Key") or _key_of(request["Item"]), ConsistentRead=True
            )
            return dict(read.get("Item") or {})
        return None

    def done(self, key: str, fingerprint: str, answer: dict[str, Any]) -> None:
        """SQS has the key's message: later requests replay `answer` (recorded in the background)."""
        encoded = json.dumps(answer, separators=(",", ":"))
        self._record(
            key,
            "UpdateItem",
            Key=self._key(key),
            UpdateExpression="SET #state = :done, answer = :answer REMOVE #owner, lease_until",
            ConditionExpression="fingerprint = :fp",
            ExpressionAttributeNames={"#state": "state", "#owner": "owner"},
            ExpressionAttributeValues={":done": {"S": "done"}, ":answer": {"S": encoded}, ":fp": {"S": fingerprint}},
        )

    def failed(self, key: str, owner: str, *, unknown: bool) -> None:
        """The attempt `owner` made ended without SQS's acceptance: `unknown` keeps the key, else it is freed."""
        condition = {
            "ConditionExpression": "#owner = :owner AND #state = :pending",
            "ExpressionAttributeNames": {"#state": "state", "#owner": "owner"},
        }
        values = {":owner": {"S": owner}, ":pending": {"S": "pending"}}
        if unknown:
            self._record(
                key,
                "UpdateItem",
                Key=self._key(key),
                UpdateExpression="SET #state = :unknown REMOVE #owner, lease_until",
                ExpressionAttributeValues={**values, ":unknown": {"S": "unknown"}},
                **condition,
            )
        else:
            self._record(key, "DeleteItem", Key=self._key(key), ExpressionAttributeValues=values, **condition)

    async def wait(self, key: str, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the key's attempt to be recorded before claiming it again."""
        await wait_settled(self._settled.get(key), timeout, POLL_INTERVAL_SECONDS)

    async def flush(self) -> None:
        """Wait until every outcome recorded so far is written (or failed)."""
        if self._recording:
            await asyncio.wait(list(self._recording))

    async def close(self) -> None:
        """Wait for the outcomes being recorded, then release the threads and connections."""
        self._closing = True
        await self.flush()
        self._executor.shutdown(wait=True)
        if self.client is not None:
            self.client.close()

    def _key(self, key: str) -> dict[str, Any]:
        return {"pk": {"S": dynamodb.key_pk(self.queue_prefix, key)}, "sk": _SORT_KEY}

    def _record(self, key: str, operation: str, **request: Any) -> None:
        """Make a write in the background; once it is made (or failed), local waiters for the key wake."""
        assert self._loop is not None, "open() the store first"
        if self._closing:
            raise StoreUnavailable("The idempotency store is closed.")
        future: Future[None] = self._executor.submit(self._write, key, operation, request)
        wrapped = asyncio.wrap_future(future, loop=self._loop)
        self._recording.add(wrapped)
        wrapped.add_done_callback(lambda f: self._recorded(key, f))

    def _write(self, key: str, operation: str, request: dict[str, Any]) -> None:
        self._count(operation)
        call = self.client.update_item if operation == "UpdateItem" else self.client.delete_item
        try:
            call(TableName=self.table, **request)
        except ClientError as exc:
            if dynamodb.error_code(exc) == "ConditionalCheckFailedException":
                # The key changed hands (its lease ran out and another request took it) or its window
                # ended: the attempt that holds it now records its own outcome.
                logger.info("The outcome for idempotency key %r was not recorded: the key moved on.", key)
                return
            logger.error("Could not record the outcome for idempotency key %r: %s.", key, dynamodb.unavailable(exc))
        except dynamodb.STORE_ERRORS as exc:  # the lease runs out instead; a retry then sends the same id
            logger.error("Could not record the outcome for idempotency key %r: %s.", key, dynamodb.unavailable(exc))

    def _recorded(self, key: str, future: asyncio.Future[None]) -> None:
        self._recording.discard(future)
        event = self._settled.pop(key, None)
        if event is not None:
            event.set()

    def _count(self, operation: str) -> None:
        self.requests[operation] = self.requests.get(operation, 0) + 1


def _number(value: float) -> dict[str, str]:
    return {"N": repr(round(value, 6))}


def _text(item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value.get("S"))


def _key_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"pk": item["pk"], "sk": item["sk"]}
