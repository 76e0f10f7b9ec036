"""The bucket that holds offloaded bodies: put, get, delete, their keys, and what their failures mean."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from queue_manager.payloads.wire import Pointer
from queue_manager.sqs.errors import SQSUnavailable, describe

logger = logging.getLogger(__name__)

#: S3 answers that mean the object (or its bucket) is not there to read, or not ours to read: retrying cannot help.
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound", "AccessDenied", "403", "InvalidObjectState"})

#: Keys one DeleteObjects request takes.
MAX_DELETE_KEYS = 1000


class StorageUnavailable(SQSUnavailable):
    """Raised when S3 cannot be reached, times out or fails: nothing was sent to SQS; try again later."""


class PayloadMissing(LookupError):
    """Raised when an offloaded body is gone or cannot be read: the message cannot be processed."""


class PayloadStore:
    """Offloaded bodies in one bucket, under `<key_prefix>/<type>/<message id>`.

    Parameters:
      client: A boto3 S3 client.
      bucket: The bucket offloaded bodies are written to.
      key_prefix: The first part of every key written (the queue prefix: a fleet's queues and objects share it).
      kms_key_id: If set, objects are written with SSE-KMS under this key.
    """

    def __init__(self, client: Any, *, bucket: str, key_prefix: str, kms_key_id: str | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.key_prefix = key_prefix
        self.kms_key_id = kms_key_id

    def key(self, message_type: str, message_id: str) -> str:
        """The key of a message's body: a function of the queue prefix, type and id, so a re-send overwrites it."""
        return f"{self.key_prefix}/{message_type}/{message_id}"

    def put(self, key: str, body: str) -> Pointer:
        """Write a body; its pointer. Raises StorageUnavailable."""
        data = body.encode()
        extra: dict[str, Any] = {}
        if self.kms_key_id:
            extra = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType="text/plain", **extra)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"S3 did not store the payload ({describe(exc)})") from exc
        return Pointer(self.bucket, key, len(data))

    def get(self, pointer: Pointer) -> str:
        """The body a pointer names. Raises PayloadMissing (gone, refused, not UTF-8) or StorageUnavailable."""
        data = self.get_bytes(pointer)
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise PayloadMissing(f"s3://{pointer.bucket}/{pointer.key} is not UTF-8 text: {exc.reason}") from exc

    def get_bytes(self, pointer: Pointer) -> bytes:
        """The bytes of the object a pointer names. Raises PayloadMissing (gone, refused) or StorageUnavailable."""
        try:
            response = self.client.get_object(Bucket=pointer.bucket, Key=pointer.key)
            data: bytes = response["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING_CODES:
                raise PayloadMissing(f"s3://{pointer.bucket}/{pointer.key}: {describe(exc)}") from exc
            raise StorageUnavailable(f"S3 did not answer for the payload ({describe(exc)})") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 did not answer for the payload ({describe(exc)})") from exc
        return data

    def delete(self, pointers: Iterable[Pointer]) -> int:
        """Delete objects, best effort (a failure is logged; the lifecycle rule is the backstop); how many went."""
        by_bucket: dict[str, list[str]] = defaultdict(list)
        for pointer in pointers:
            by_bucket[pointer.bucket].append(pointer.key)
        deleted = 0
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), MAX_DELETE_KEYS):
                chunk = keys[start : start + MAX_DELETE_KEYS]
                try:
                    if len(chunk) == 1:
                        self.client.delete_object(Bucket=bucket, Key=chunk[0])
                        deleted += 1
                        continue
                    response = self.client.delete_objects(
                        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                    )
                except (BotoCoreError, ClientError) as exc:
                    logger.warning(
                        "Could not delete %d payload object(s) in %r (%s); the bucket's lifecycle rule removes them.",
                        len(chunk),
                        bucket,
                        describe(exc),
                    )
                    continue
                errors = response.get("Errors", [])
                if errors:
                    logger.warning("S3 did not delete %d payload object(s) in %r.", len(errors), bucket)
                deleted += len(chunk) - len(errors)
        return deleted

    def ensure_bucket(self) -> bool:
        """Create the bucket if it is missing (the embedded default); whether it was created."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
        self.client.create_bucket(Bucket=self.bucket)
        logger.info("Created the payload bucket %r.", self.bucket)
        return True


def s3_client(*, endpoint_url: str | None, region: str, timeout_seconds: float, max_pool_connections: int = 10) -> Any:
    """An S3 client with bounded connect and read timeouts; path-style addressing on a local endpoint."""
    config = Config(
        connect_timeout=timeout_seconds,
        read_timeout=timeout_seconds,
        retries={"max_attempts": 2, "mode": "standard"},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
