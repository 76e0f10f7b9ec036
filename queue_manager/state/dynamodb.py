"""The fleet's state store: one DynamoDB table (`QM_STATE_TABLE`) for idempotency keys and message status.

One table, keys `pk` (string, hash) and `sk` (string, range), on-demand capacity, with DynamoDB's
TTL on the `expires` attribute (epoch seconds): DynamoDB deletes an item some time (typically
within a few days) after it expires, for free; readers treat an expired item as gone.

- status events of one message, one item per `write` call: `pk = msg#<message id>`,
  `sk = ev#<its first event's key>`, `events` (a list of JSON events), `expires`;
- an idempotency key: `pk = key#<queue prefix>#<key>`, `sk = key`, `fingerprint`, `state`,
  `answer`, `owner`, `lease_until`, `expires`.

Status events are append-only: a `write` groups its events by message into one item per message
and sends the items in BatchWriteItem calls of up to 25, so a message costs a share of one request
per write. Writing the same events again writes the same item (same keys, same content): retries
are harmless. Idempotency keys use conditional writes (`queue_manager.state.dynamodb_keys`).

Every call has short connect and read timeouts and one retry, so an outage answers within about
two timeouts; callers turn StoreUnavailable into their own answer (a 503 for a keyed request,
a dropped status write for everything else).
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Final, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from queue_manager.state.base import StatusEvent, StoreUnavailable

logger = logging.getLogger(__name__)

#: The TTL attribute: epoch seconds after which DynamoDB may delete the item.
TTL_ATTRIBUTE: Final = "expires"

#: BatchWriteItem's limit of items per request.
BATCH_WRITE_ITEMS: Final = 25

#: BatchWriteItem calls a `write` makes for the items DynamoDB left unprocessed (throttling) before giving up.
UNPROCESSED_ATTEMPTS: Final = 5

#: The first pause before writing unprocessed items again; it doubles with each attempt (0.05 + ... + 0.4 s).
UNPROCESSED_BACKOFF_SECONDS: Final = 0.05

#: How long start-up waits for a table it created to become ACTIVE.
TABLE_ACTIVE_TIMEOUT_SECONDS: Final = 60.0

#: How long status events are kept when the caller does not say (seven days).
DEFAULT_STATUS_RETENTION_SECONDS: Final = 7 * 86400

#: Attempts per call, the first included (botocore's "standard" mode also retries throttling).
CALL_ATTEMPTS: Final = 2


class StoreSettings(Protocol):
    """The settings the DynamoDB store reads (queue_manager.settings.Settings has them all).

    A protocol rather than an import: the state store sits below the settings module, which knows
    the SQS package's constants.
    """

    @property
    def state_table(self) -> str | None: ...
    @property
    def create_tables(self) -> bool: ...
    @property
    def state_endpoint_url(self) -> str | None: ...
    @property
    def state_timeout_seconds(self) -> float: ...
    @property
    def region(self) -> str: ...
    @property
    def queue_prefix(self) -> str: ...
    @property
    def idempotency_window_seconds(self) -> int: ...


class TableMissing(Exception):
    """Raised at start-up when the table does not exist and QM_CREATE_TABLES=false forbids creating it."""


#: Connect and read timeout of the start-up calls that check and create the table: a local server's
#: first DynamoDB call, or a CreateTable, may take longer than a request's call may.
TABLE_CALL_TIMEOUT_SECONDS: Final = 5.0


def client(settings: StoreSettings, *, timeout_seconds: float | None = None) -> Any:
    """A DynamoDB client for the state store: short timeouts (QM_STATE_TIMEOUT_SECONDS unless given) and one
    retry, so an outage answers fast."""
    timeout = settings.state_timeout_seconds if timeout_seconds is None else timeout_seconds
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"mode": "standard", "total_max_attempts": CALL_ATTEMPTS},
        max_pool_connections=32,
    )
    return boto3.client(
        "dynamodb", endpoint_url=settings.state_endpoint_url, region_name=settings.region, config=config
    )


def unavailable(exc: BaseException) -> StoreUnavailable:
    """The StoreUnavailable a failed DynamoDB call stands for, naming the error code when there is one."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        found = StoreUnavailable(f"DynamoDB: {error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": "))
    else:
        found = StoreUnavailable(f"DynamoDB cannot be reached: {exc}")
    found.__cause__ = exc
    return found


#: What a failed botocore call raises.
STORE_ERRORS: Final = (BotoCoreError, ClientError)


def error_code(exc: BaseException) -> str | None:
    """The DynamoDB error code of a refused call, None for anything else."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def ensure_table(dynamodb: Any, table: str, *, create: bool) -> bool:
    """Make sure the table exists and is ACTIVE, creating it (with its TTL) when `create`; idempotent.

    Returns False when DynamoDB cannot be reached (the caller goes on: keyed requests are 503 until
    it can). Raises TableMissing when the table is missing and must not be created.
    """
    try:
        status = _table_status(dynamodb, table)
        if status is None:
            if not create:
                raise TableMissing(
                    f"The DynamoDB table {table!r} (QM_STATE_TABLE) does not exist and QM_CREATE_TABLES=false: "
                    "create it (keys pk and sk, strings; TTL on 'expires'), or set QM_CREATE_TABLES=true."
                )
            _create_table(dynamodb, table)
            status = _table_status(dynamodb, table)
        deadline = time.monotonic() + TABLE_ACTIVE_TIMEOUT_SECONDS
        while status != "ACTIVE":
            if time.monotonic() > deadline:
                logger.warning("The DynamoDB table %r is still %s; going on.", table, status)
                return True
            time.sleep(0.5)
            status = _table_status(dynamodb, table)
        if create:
            _enable_ttl(dynamodb, table)
    except STORE_ERRORS as exc:
        logger.warning("Could not check the DynamoDB table %r yet: %s.", table, unavailable(exc))
        return False
    return True


def _table_status(dynamodb: Any, table: str) -> str | None:
    try:
        described = dynamodb.describe_table(TableName=table)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    return str(described["Table"].get("TableStatus", "ACTIVE"))


def _create_table(dynamodb: Any, table: str) -> None:
    try:
        dynamodb.create_table(
            TableName=table,
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
        logger.info("Created the DynamoDB table %r.", table)
    except ClientError as exc:
        if error_code(exc) != "ResourceInUseException":  # another process created it first
            raise


def _enable_ttl(dynamodb: Any, table: str) -> None:
    described = dynamodb.describe_time_to_live(TableName=table).get("TimeToLiveDescription", {})
    if described.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return
    try:
        dynamodb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
        )
    except ClientError as exc:
        # Another process enabled it between the two calls: DynamoDB refuses to enable it twice.
        if error_code(exc) != "ValidationException":
            raise


def message_pk(message_id: str) -> str:
    """The partition key of a message's status events."""
    return f"msg#{message_id}"


def key_pk(queue_prefix: str, key: str) -> str:
    """The partition key of an idempotency key: keys are per deployment (queue prefix), like message ids."""
    return f"key#{queue_prefix}#{key}"


class DynamoStatusEvents:
    """The status half of the state store on DynamoDB (the StatusEvents protocol). Its methods block.

    Parameters:
      source: The settings (a client is made from them), or a DynamoDB client.
      table: The table; defaults to the settings' QM_STATE_TABLE.
      retention_seconds: How long an item is kept after its newest event (its TTL).
      page_size: Items per Query page on read (None: DynamoDB's 1 MB pages).
    """

    def __init__(
        self,
        source: StoreSettings | Any,
        table: str | None = None,
        *,
        retention_seconds: float = DEFAULT_STATUS_RETENTION_SECONDS,
        page_size: int | None = None,
    ) -> None:
        if hasattr(source, "state_table"):  # settings
            self.client = client(source)
            table = table or source.state_table
        else:
            self.client = source
        if not table:
            raise ValueError("QM_STATE_TABLE must name a DynamoDB table for the DynamoDB state store.")
        self.table = table
        self.retention_seconds = retention_seconds
        self.page_size = page_size
        #: Requests made, by operation (BatchWriteItem, Query): the store's cost.
        self.requests: dict[str, int] = defaultdict(int)

    def write(self, events: Sequence[StatusEvent]) -> None:
        """Store the events, one item per message, in BatchWriteItem calls of 25; raises StoreUnavailable."""
        items = [self._item(group) for group in _by_message(events).values()]
        for start in range(0, len(items), BATCH_WRITE_ITEMS):
            self._write_batch(items[start : start + BATCH_WRITE_ITEMS])

    def _item(self, events: list[StatusEvent]) -> dict[str, Any]:
        events = sorted(events, key=lambda e: (e.at, e.key))
        return {
            "pk": {"S": message_pk(events[0].message_id)},
            "sk": {"S": "ev#" + events[0].key},
            "events": {"L": [{"S": _encode(e)} for e in events]},
            TTL_ATTRIBUTE: {"N": str(int(max(e.at for e in events) + self.retention_seconds))},
        }

    def _write_batch(self, items: list[dict[str, Any]]) -> None:
        requests = [{"PutRequest": {"Item": item}} for item in items]
        pause = UNPROCESSED_BACKOFF_SECONDS
        for attempt in range(UNPROCESSED_ATTEMPTS):
            self.requests["BatchWriteItem"] += 1
            try:
                answer = self.client.batch_write_item(RequestItems={self.table: requests})
            except STORE_ERRORS as exc:
                raise unavailable(exc) from exc
            requests = answer.get("UnprocessedItems", {}).get(self.table, [])
            if not requests:
                return
            if attempt + 1 < UNPROCESSED_ATTEMPTS:
                time.sleep(pause)
                pause *= 2
        raise StoreUnavailable(
            f"DynamoDB left {len(requests)} status item(s) unprocessed after {UNPROCESSED_ATTEMPTS} attempts "
            "(throttling)."
        )

    def read(self, message_id: str) -> list[StatusEvent]:
        """Every stored event of one message, oldest first, each once; raises StoreUnavailable."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": message_pk(message_id)}},
            "ConsistentRead": True,
        }
        if self.page_size is not None:
            query["Limit"] = self.page_size
        found: dict[str, StatusEvent] = {}
        while True:
            self.requests["Query"] += 1
            try:
                page = self.client.query(**query)
            except STORE_ERRORS as exc:
                raise unavailable(exc) from exc
            for item in page.get("Items", []):
                for value in item.get("events", {}).get("L", []):
                    event = _decode(value["S"])
                    found[event.key] = event
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return sorted(found.values(), key=lambda e: (e.at, e.key))

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()


def _by_message(events: Sequence[StatusEvent]) -> dict[str, list[StatusEvent]]:
    grouped: dict[str, list[StatusEvent]] = defaultdict(list)
    for event in events:
        grouped[event.message_id].append(event)
    return grouped


def _encode(event: StatusEvent) -> str:
    fields = {
        "message_id": event.message_id,
        "kind": event.kind,
        "at": event.at,
        "attempt": event.attempt,
        "type": event.type,
        "queue": event.queue,
        "detail": dict(event.detail),
        "key": event.key,
    }
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def _decode(raw: str) -> StatusEvent:
    fields = json.loads(raw)
    return StatusEvent(**fields)
