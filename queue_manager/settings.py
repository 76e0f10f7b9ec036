"""Typed settings for queue-manager, parsed once from the environment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from queue_manager.sqs import constants

#: The prefix every queue-manager variable shares.
ENV_PREFIX = "QM_"

#: Where the shipped message schemas live.
DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


class SettingsError(ValueError):
    """Raised when an environment variable holds a value out of its range."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the API and the workers are configured by.

    Parameters:
      endpoint_url: The SQS endpoint (`AWS_ENDPOINT_URL_SQS`); None means AWS itself.
      region: The AWS region (`AWS_REGION`, then `AWS_DEFAULT_REGION`).
      host: The address the API binds to.
      port: The port the API listens on.
      queue_prefix: Prepended to every queue name (`<prefix>_<type>`, `<prefix>_<type>_dlq`).
      create_queues: Whether API and workers create missing queues at start.
      max_retries: Retries after the first attempt before a message is dead-lettered.
      min_backoff_ms: The first retry's backoff; it doubles with each attempt.
      max_backoff_ms: The longest backoff, capped at the 12 h visibility limit.
      visibility_timeout_seconds: How long a received message stays hidden before the
        heartbeat extends it.
      time_limit_ms: How long one attempt may run.
      max_age_ms: Messages older than this are dead-lettered unprocessed; 0 disables it.
      ack_flush_interval_ms: The longest an acknowledgement waits to join a batch.
      receive_wait_seconds: The long-poll wait of each receive.
      webhook_allowed_hosts: The hosts (or host:port) webhooks may be sent to.
      webhook_timeout_seconds: Connect and read timeout of one webhook call.
      sqs_timeout_seconds: Connect and read timeout of an API call to SQS.
      schemas_dir: The folder holding one JSON Schema per message type.
      shutdown_timeout_seconds: How long the API waits for requests in flight on stop.
      send_concurrency: How many SQS sends the API runs at once (its thread pool).
      receive_linger_ms: How long a receive waits for more threads to free once one has.
      receive_lookahead: Messages a process may hold beyond its threads, ready for the next thread
        to free (0 holds none; each is hidden by the heartbeat and released on stop).
      stats_dir: If set, each worker process writes its SQS request counts there on exit.
      api_keys: Keys accepted as `Authorization: Bearer <key>`; several allow rotation.
      api_keys_file: A file of more keys, one per line (`#` starts a comment).
      allow_unauthenticated: Serve without keys on a non-loopback address anyway.
      idempotency_window_seconds: How long an Idempotency-Key replays its first result.
      send_linger_ms: How long a send waits for others to join its SendMessageBatch.
      max_waiting_sends: Sends that may wait for SQS at once; more are answered 503.
      max_queue_depth: Answer 429 while a queue holds this many messages; 0 disables it.
      request_timeout_seconds: The longest a POST waits for SQS before answering 503.
      log_format: `json`, `text`, or `auto` (text on a terminal, else one JSON object per line).
      worker_metrics_port: Where a worker master serves Prometheus /metrics for all its processes; 0 disables.
      worker_metrics_host: The address that endpoint binds.
    """

    endpoint_url: str | None = None
    region: str = "us-east-1"
    host: str = "127.0.0.1"
    port: int = 8000
    queue_prefix: str = "qm"
    create_queues: bool = True
    max_retries: int = 5
    min_backoff_ms: int = 1_000
    max_backoff_ms: int = 3_600_000
    visibility_timeout_seconds: int = 30
    time_limit_ms: int = 300_000
    max_age_ms: int = 0
    ack_flush_interval_ms: int = 250
    receive_wait_seconds: int = constants.MAX_WAIT_TIME_SECONDS
    webhook_allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost")
    webhook_timeout_seconds: float = 10.0
    sqs_timeout_seconds: float = 5.0
    schemas_dir: Path = DEFAULT_SCHEMAS_DIR
    shutdown_timeout_seconds: float = 30.0
    send_concurrency: int = 16
    receive_linger_ms: int = 2
    receive_lookahead: int = 1
    stats_dir: Path | None = None
    api_keys: tuple[str, ...] = ()
    api_keys_file: Path | None = None
    allow_unauthenticated: bool = False
    idempotency_window_seconds: int = 600
    send_linger_ms: int = 2
    max_waiting_sends: int = 1000
    max_queue_depth: int = 0
    request_timeout_seconds: float = 20.0
    log_format: str = "auto"
    worker_metrics_port: int = 9191
    worker_metrics_host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        # Host names compare case-insensitively; keys and everything else keep their case.
        object.__setattr__(self, "webhook_allowed_hosts", tuple(h.lower() for h in self.webhook_allowed_hosts))
        _check_range("QM_PORT", self.port, 0, 65535)
        _check_range("QM_MAX_RETRIES", self.max_retries, 0, constants.MAX_RECEIVE_COUNT - 1)
        _check_range("QM_MIN_BACKOFF_MS", self.min_backoff_ms, 1, constants.MAX_VISIBILITY_TIMEOUT_MS)
        _check_range("QM_MAX_BACKOFF_MS", self.max_backoff_ms, self.min_backoff_ms, constants.MAX_VISIBILITY_TIMEOUT_MS)
        _check_range(
            "QM_VISIBILITY_TIMEOUT_SECONDS",
            self.visibility_timeout_seconds,
            constants.MIN_HEARTBEAT_VISIBILITY_SECONDS,
            constants.MAX_VISIBILITY_TIMEOUT_SECONDS,
        )
        _check_range("QM_TIME_LIMIT_MS", self.time_limit_ms, 1, constants.MAX_VISIBILITY_TIMEOUT_MS)
        _check_range("QM_MAX_AGE_MS", self.max_age_ms, 0, constants.MAX_RETENTION_SECONDS * 1000)
        _check_range("QM_ACK_FLUSH_INTERVAL_MS", self.ack_flush_interval_ms, 1, 1000)
        _check_range("QM_RECEIVE_WAIT_SECONDS", self.receive_wait_seconds, 1, constants.MAX_WAIT_TIME_SECONDS)
        _check_range("QM_SEND_CONCURRENCY", self.send_concurrency, 1, 1024)
        _check_range("QM_RECEIVE_LINGER_MS", self.receive_linger_ms, 0, 1000)
        _check_range("QM_RECEIVE_LOOKAHEAD", self.receive_lookahead, 0, constants.MAX_RECEIVE_MESSAGES)
        _check_range("QM_IDEMPOTENCY_WINDOW_SECONDS", self.idempotency_window_seconds, 0, 7 * 86400)
        _check_range("QM_SEND_LINGER_MS", self.send_linger_ms, 0, 1000)
        _check_range("QM_WORKER_METRICS_PORT", self.worker_metrics_port, 0, 65535)
        _check_range("QM_MAX_WAITING_SENDS", self.max_waiting_sends, 1, 1_000_000)
        _check_range("QM_MAX_QUEUE_DEPTH", self.max_queue_depth, 0, 1_000_000_000)
        if self.log_format not in ("auto", "json", "text"):
            raise SettingsError(f"QM_LOG_FORMAT must be auto, json or text, got {self.log_format!r}.")
        if not constants.QUEUE_NAME_PATTERN.fullmatch(self.queue_prefix):
            raise SettingsError(f"QM_QUEUE_PREFIX must be 1-40 letters, digits, '-' or '_', got {self.queue_prefix!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from an environment mapping (os.environ by default)."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        endpoint = env.get("AWS_ENDPOINT_URL_SQS") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            kwargs["endpoint_url"] = endpoint
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        for field in dataclasses.fields(cls):
            name = ENV_PREFIX + field.name.upper()
            raw = env.get(name)
            if raw is None or field.name in ("endpoint_url", "region"):
                continue
            kwargs[field.name] = _parse(name, field.type, raw)
        return cls(**kwargs)  # type: ignore[arg-type]

    def accepted_api_keys(self) -> list[str]:
        """Every API key: QM_API_KEYS, then the lines of QM_API_KEYS_FILE."""
        keys = [k for k in self.api_keys if k]
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise SettingsError(f"QM_API_KEYS_FILE {self.api_keys_file} cannot be read: {exc}.") from None
            keys += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        return keys

    def queue_name(self, message_type: str) -> str:
        """The SQS name of the queue a message type is sent to."""
        return f"{self.queue_prefix}_{message_type}"


def _parse(name: str, type_name: object, raw: str) -> object:
    value = raw.strip()
    try:
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
        if type_name == "bool":
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if type_name == "tuple[str, ...]":
            return tuple(item.strip() for item in value.split(",") if item.strip())
        if type_name in ("Path", "Path | None"):
            return Path(value)
    except ValueError:
        raise SettingsError(f"{name} must be a {type_name}, got {raw!r}.") from None
    return value


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}.")
