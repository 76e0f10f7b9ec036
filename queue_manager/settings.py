"""Typed settings for queue-manager, parsed once from the environment.

Each setting is declared once, as a field of `Settings` made by `setting()`: its default, what it
means, its range and how its variable is parsed all sit beside it.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from queue_manager.sqs import constants

#: The prefix every queue-manager variable shares.
ENV_PREFIX = "QM_"

#: Where the shipped message schemas live (the top-level `schemas` package).
DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"

#: A bound of a range: a number, or a function of the other settings (e.g. max ≥ min).
Bound = float | Callable[["Settings"], float] | None


#: The processes that report an invalid setting: a program's own, and the first worker process a
#: `dramatiq` master starts (multiprocessing names its children Process-1, Process-2, ... in order).
_SPEAKING_PROCESSES = frozenset({"MainProcess", "Process-1"})


class SettingsError(ValueError):
    """Raised when an environment variable holds a value out of its range."""


def _int(raw: str) -> int:
    return int(raw)


def _float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _bool(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _words(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _hosts(raw: str) -> tuple[str, ...]:
    return tuple(host.lower() for host in _words(raw))


def _path(raw: str) -> Path:
    if not raw:
        raise ValueError(raw)
    return Path(raw)


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None


def _str(raw: str) -> str:
    return raw


#: The trace exporters queue-manager knows (OTEL_TRACES_EXPORTER).
TRACE_EXPORTERS = ("otlp", "console", "none")


def _exporters(raw: str) -> tuple[str, ...]:
    names = tuple(name.lower() for name in _words(raw))
    if not names or any(name not in TRACE_EXPORTERS for name in names):
        raise ValueError(raw)
    return names


def _optional_str(raw: str) -> str | None:
    return raw or None


#: What each parser's value is called in an error message.
_KINDS: dict[Callable[[str], Any], str] = {
    _int: "an integer",
    _float: "a finite number",
    _bool: "a boolean (true/false, yes/no, on/off, 1/0)",
    _path: "a path",
    _exporters: "otlp, console or none (comma-separated)",
}


def setting(
    default: Any,
    doc: str,
    *,
    parse: Callable[[str], Any],
    low: Bound = None,
    high: Bound = None,
    choices: tuple[str, ...] = (),
    env: str | None = None,
) -> Any:
    """Declare one setting: its default, its meaning, its parser and its range, in one place."""
    metadata = {"doc": doc, "parse": parse, "low": low, "high": high, "choices": choices, "env": env}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything the API and the workers are configured by; `QM_<FIELD>` sets each field."""

    endpoint_url: str | None = setting(
        None, "The SQS endpoint; None means AWS itself.", parse=_str, env="AWS_ENDPOINT_URL_SQS"
    )
    region: str = setting("us-east-1", "The AWS region.", parse=_str, env="AWS_REGION")
    host: str = setting("127.0.0.1", "The address the API binds to.", parse=_str)
    port: int = setting(8000, "The port the API listens on.", parse=_int, low=0, high=65535)
    queue_prefix: str = setting(
        "qm", "Prepended to every queue name (`<prefix>_<type>`, `<prefix>_<type>_dlq`).", parse=_str
    )
    create_queues: bool = setting(True, "Whether API and workers create missing queues at start.", parse=_bool)
    max_retries: int = setting(
        5,
        "Retries after the first attempt before a message is dead-lettered.",
        parse=_int,
        low=0,
        high=constants.MAX_RECEIVE_COUNT - 1,
    )
    min_backoff_ms: int = setting(
        1_000,
        "The first retry's backoff; it doubles with each attempt.",
        parse=_int,
        low=1,
        high=constants.MAX_VISIBILITY_TIMEOUT_MS,
    )
    max_backoff_ms: int = setting(
        3_600_000,
        "The longest backoff, capped at the 12 h visibility limit.",
        parse=_int,
        low=lambda s: s.min_backoff_ms,
        high=constants.MAX_VISIBILITY_TIMEOUT_MS,
    )
    visibility_timeout_seconds: int = setting(
        30,
        "How long a received message stays hidden before the heartbeat extends it.",
        parse=_int,
        low=constants.MIN_HEARTBEAT_VISIBILITY_SECONDS,
        high=constants.MAX_VISIBILITY_TIMEOUT_SECONDS,
    )
    time_limit_ms: int = setting(
        300_000, "How long one attempt may run.", parse=_int, low=1, high=constants.MAX_VISIBILITY_TIMEOUT_MS
    )
    max_age_ms: int = setting(
        0,
        "Messages older than this are dead-lettered unprocessed; 0 disables it.",
        parse=_int,
        low=0,
        high=constants.MAX_RETENTION_SECONDS * 1000,
    )
    ack_flush_interval_ms: int = setting(
        250, "The longest an acknowledgement waits to join a batch.", parse=_int, low=1, high=1000
    )
    receive_wait_seconds: int = setting(
        constants.MAX_WAIT_TIME_SECONDS,
        "The long-poll wait of each receive.",
        parse=_int,
        low=1,
        high=constants.MAX_WAIT_TIME_SECONDS,
    )
    webhook_allowed_hosts: tuple[str, ...] = setting(
        ("127.0.0.1", "localhost"), "The hosts (or host:port) webhooks may be sent to.", parse=_hosts
    )
    webhook_timeout_seconds: float = setting(
        10.0, "Connect and read timeout of one webhook call.", parse=_float, low=0.001, high=3600
    )
    sqs_timeout_seconds: float = setting(
        5.0, "Connect and read timeout of an API call to SQS.", parse=_float, low=0.001, high=300
    )
    sqs_direct_calls: bool = setting(
        True,
        "Whether the hot SQS calls (send, receive, delete, hide) skip botocore's generic request pipeline "
        "(botocore's own signer and connection pool, about a third less CPU a call); off, every call goes "
        "through boto3 as written.",
        parse=_bool,
    )
    schemas_dir: Path = setting(
        DEFAULT_SCHEMAS_DIR, "The folder holding one JSON Schema per message type.", parse=_path
    )
    shutdown_timeout_seconds: float = setting(
        30.0, "How long the API waits for requests in flight on stop.", parse=_float, low=0, high=3600
    )
    api_processes: int = setting(
        1,
        "API processes sharing the port (SO_REUSEPORT), to use every core; metrics are summed over them.",
        parse=_int,
        low=1,
        high=256,
    )
    send_concurrency: int = setting(
        16, "How many SQS sends the API runs at once (its thread pool).", parse=_int, low=1, high=1024
    )
    receive_linger_ms: int = setting(
        2, "How long a receive waits for more threads to free once one has.", parse=_int, low=0, high=1000
    )
    receive_gather_ms: int = setting(
        50,
        "The longest a receive that came back part-full lets messages gather before the next (fewer, fuller "
        "receives); only while the queue's rate would fill a receive within it, else the next goes at once.",
        parse=_int,
        low=0,
        high=1000,
    )
    receive_lookahead: int = setting(
        1,
        "Messages a process may hold beyond its threads while no queue is busy (0 holds none).",
        parse=_int,
        low=0,
        high=constants.MAX_RECEIVE_MESSAGES,
    )
    busy_lookahead: int = setting(
        constants.MAX_RECEIVE_MESSAGES,
        "Messages a process may hold beyond its threads while a queue is busy (its receives come back full): "
        "one receive's worth lets the next receive overlap the work of the last. Never below QM_RECEIVE_LOOKAHEAD.",
        parse=_int,
        low=0,
        high=constants.MAX_RECEIVE_MESSAGES,
    )
    spare_receives: int = setting(
        3,
        "Receives the redrive policy allows beyond the attempts (maxReceiveCount = retries + 1 + this): room "
        "for messages handed back at a stop, which SQS counts as receives. A crash loop ends in the dead-letter "
        "queue after that many crashes.",
        parse=_int,
        low=0,
        high=100,
    )
    stop_drain_seconds: float = setting(
        10.0,
        "How long a stopping worker lets the messages it already received start, before its threads stop "
        "(what has not started by then is handed back to SQS, which counts it as a receive).",
        parse=_float,
        low=0.0,
        high=600.0,
    )
    stats_dir: Path | None = setting(
        None, "If set, each process writes its SQS request counts there on exit.", parse=_optional_path
    )
    state_dir: Path | None = setting(
        None,
        "Where the API keeps its idempotency keys (SQLite), shared by its processes and kept across restarts, and "
        "where the host's worker processes publish their workload for GET /scaling; unset, each API run gets a "
        "temporary one and workers publish nothing.",
        parse=_optional_path,
    )
    target_latency_seconds: float = setting(
        30.0,
        "How long a message may wait for a worker thread: GET /scaling's workers needed clear the backlog within it.",
        parse=_float,
        low=0.1,
        high=43_200,
    )
    api_keys: tuple[str, ...] = setting(
        (),
        "Keys accepted as `Authorization: Bearer <key>`: `name:key:role` (role `viewer` or `operator`) or a bare "
        "key (an operator); several allow rotation.",
        parse=_words,
    )
    api_keys_file: Path | None = setting(
        None, "A file of more keys, one per line in either form (`#` starts a comment).", parse=_optional_path
    )
    allow_unauthenticated: bool = setting(False, "Serve without keys on a non-loopback address anyway.", parse=_bool)
    idempotency_window_seconds: int = setting(
        600, "How long an Idempotency-Key replays its first result.", parse=_int, low=0, high=7 * 86400
    )
    send_linger_ms: int = setting(
        13,
        "The longest a send waits for others to join its SendMessageBatch while one of its queue's is in flight; "
        "it waits only when another message is expected within it, by the last gap or the queue's recent rate "
        "(it goes at once when none is in flight, when ten are waiting, or when every batch in flight is answered).",
        parse=_int,
        low=0,
        high=1000,
    )
    max_waiting_sends: int = setting(
        1000, "Sends that may wait for SQS at once; more are answered 503.", parse=_int, low=1, high=1_000_000
    )
    max_queue_depth: int = setting(
        0, "Answer 429 while a queue holds this many messages; 0 disables it.", parse=_int, low=0, high=1_000_000_000
    )
    request_timeout_seconds: float = setting(
        20.0, "The longest a POST waits for SQS before answering 503.", parse=_float, low=0.001, high=3600
    )
    body_timeout_seconds: float = setting(
        10.0, "The longest a request body may take to arrive before the answer is 408.", parse=_float, low=0.1, high=300
    )
    header_timeout_seconds: float = setting(
        10.0,
        "The longest a request line and headers may take to arrive, from their first byte, before the answer is 408.",
        parse=_float,
        low=0.1,
        high=300,
    )
    keepalive_seconds: float = setting(
        75.0,
        "How long a connection with no request under way stays open; above a load balancer's idle timeout (AWS "
        "ALB: 60 s), so the balancer, not the API, closes an idle connection and never sends on a closing one.",
        parse=_float,
        low=0.1,
        high=7200,
    )
    log_format: str = setting(
        "auto",
        "`json`, `text`, or `auto` (text on a terminal, else one JSON object per line).",
        parse=_str,
        choices=("auto", "json", "text"),
    )
    worker_metrics_port: int = setting(
        9191,
        "Where a worker master serves Prometheus /metrics for all its processes; 0 disables.",
        parse=_int,
        low=0,
        high=65535,
    )
    access_log: bool = setting(
        False, "Log one line per HTTP request (off by default: costly at high request rates).", parse=_bool
    )
    log_level: str = setting(
        "INFO",
        "The lowest level logged; DEBUG adds a line per message accepted, processed and delivered.",
        parse=lambda raw: raw.upper(),
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    worker_metrics_host: str = setting("127.0.0.1", "The address the worker metrics endpoint binds.", parse=_str)
    # --- Fleet state: the store behind idempotency keys and message status (DynamoDB for a fleet) ---
    state_table: str | None = setting(
        None,
        "The DynamoDB table that holds idempotency keys and message status for a fleet (API and workers on many "
        "machines share it); unset, they live in SQLite in QM_STATE_DIR, shared by the processes of one host.",
        parse=_optional_str,
    )
    create_tables: bool = setting(
        True,
        "Whether API and workers create the QM_STATE_TABLE table (with its TTL) at start; false where infrastructure "
        "code owns it, and then a missing table stops start-up.",
        parse=_bool,
    )
    state_endpoint_url: str | None = setting(
        None, "The DynamoDB endpoint; None means AWS itself.", parse=_str, env="AWS_ENDPOINT_URL_DYNAMODB"
    )
    state_timeout_seconds: float = setting(
        1.0,
        "Connect and read timeout of one call to the state store's DynamoDB table (one retry follows): an outage "
        "answers keyed requests 503 within about twice this.",
        parse=_float,
        low=0.05,
        high=60,
    )

    # -- Message status (GET /messages/{id}) -------------------------------------------------------
    status: bool = setting(
        True,
        "Record each message's status (accepted, attempts, outcome) for GET /messages/{id}; `off` records nothing. "
        "Needs QM_STATE_DIR (the SQLite store the API and the host's workers share).",
        parse=_bool,
    )
    status_retention_seconds: int = setting(
        14 * 86400,
        "How long a message's status is answered after it was accepted (as SQS keeps a message at most); "
        "then 410 for a while, then it is purged.",
        parse=_int,
        low=60,
        high=366 * 86400,
    )
    status_buffer_events: int = setting(
        10_000,
        "Status events a process buffers while its store is slow or down; beyond, they are dropped "
        "(counted, and their messages marked stale). Never delays a 202 or an ack.",
        parse=_int,
        low=10,
        high=1_000_000,
    )

    # --- Operations console (/ui) ---
    console_sample_seconds: float = setting(
        2.0,
        "How often the console's shared poller reads every queue's depths while a console is open "
        "(one GetQueueAttributes per queue, whatever the number of viewers; none while nobody watches).",
        parse=_float,
        low=0.5,
        high=60,
    )
    # --- end of the operations console's settings ---

    # -- Large messages through S3 (claim-check, wire-compatible with the AWS extended clients) --
    payload_bucket: str | None = setting(
        None,
        "The S3 bucket of messages over QM_PAYLOAD_THRESHOLD_BYTES (their body goes there, SQS carries a pointer); "
        "unset, large messages are refused with 413.",
        parse=_str,
    )
    payload_threshold_bytes: int = setting(
        constants.MAX_MESSAGE_SIZE_BYTES,
        "The largest SQS message (body and attributes, as SQS counts them) sent as it is; larger ones go through S3.",
        parse=_int,
        low=1024,
        high=constants.MAX_MESSAGE_SIZE_BYTES,
    )
    max_message_bytes: int = setting(
        32 * 1024 * 1024,
        "The largest request body of POST /messages (and of a batch) while QM_PAYLOAD_BUCKET is set.",
        parse=_int,
        low=1024,
        high=2**31,
    )
    payload_kms_key_id: str | None = setting(
        None, "If set, offloaded bodies are written with SSE-KMS under this key (id, ARN or alias).", parse=_str
    )
    payload_delete: str = setting(
        "after-ack",
        "`after-ack` deletes an offloaded body once SQS deleted its acknowledged message; `never` leaves it to "
        "the bucket's lifecycle rule.",
        parse=_str,
        choices=("after-ack", "never"),
    )
    payload_create_bucket: bool = setting(
        False,
        "Whether the API creates QM_PAYLOAD_BUCKET at start when it is missing (the embedded default).",
        parse=_bool,
    )
    payload_concurrency: int = setting(
        8,
        "Large request bodies (over 1 MiB) one API process reads, encodes and uploads at once; more wait their turn, "
        "which bounds the memory they take.",
        parse=_int,
        low=1,
        high=1024,
    )
    payload_endpoint_url: str | None = setting(
        None, "The S3 endpoint; None means AWS itself.", parse=_str, env="AWS_ENDPOINT_URL_S3"
    )

    # -- Tracing (OpenTelemetry; queue_manager/tracing). OpenTelemetry's own variables: the SDK reads
    # the others itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER(_ARG),
    # OTEL_PROPAGATORS, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_TIMEOUT, OTEL_BSP_*).
    otlp_endpoint: str | None = setting(
        None,
        "The OTLP/HTTP base URL (traces go to <it>/v1/traces); setting it turns tracing on.",
        parse=_str,
        env="OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    otlp_traces_endpoint: str | None = setting(
        None,
        "The OTLP/HTTP URL of traces, used as is; setting it turns tracing on.",
        parse=_str,
        env="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    )
    otel_traces_exporter: tuple[str, ...] = setting(
        ("otlp",),
        "Where spans go: otlp, console or none (comma-separated); none turns tracing off.",
        parse=_exporters,
        env="OTEL_TRACES_EXPORTER",
    )
    otel_sdk_disabled: bool = setting(
        False,
        "true turns tracing off whatever else is set (as the OpenTelemetry spec says: only 'true' is true).",
        parse=lambda raw: raw.lower() == "true",
        env="OTEL_SDK_DISABLED",
    )
    trace_consumer: str = setting(
        "parent",
        "How a worker's process span relates to the message's creation: parent (one trace, and a link) or link.",
        parse=lambda raw: raw.lower(),
        choices=("parent", "link"),
    )

    def __post_init__(self) -> None:
        # Host names compare case-insensitively; keys and everything else keep their case.
        object.__setattr__(self, "webhook_allowed_hosts", tuple(h.lower() for h in self.webhook_allowed_hosts))
        for field in dataclasses.fields(self):
            _check(self, field)
        if not constants.QUEUE_NAME_PATTERN.fullmatch(self.queue_prefix):
            raise SettingsError(f"QM_QUEUE_PREFIX must be 1-40 letters, digits, '-' or '_', got {self.queue_prefix!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build the settings from an environment mapping (os.environ by default)."""
        env = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            for name in variable_names(field):
                raw = env.get(name)
                if raw is None or (field.metadata["env"] and not raw):
                    continue
                kwargs[field.name] = _parse(name, field, raw)
                break
        return cls(**kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_env_or_exit(cls, program: str) -> Settings:
        """The settings from the environment; if one is invalid, say so in one line and exit with status 2.

        The line is `<program>: cannot start: <why>`, as `qm-api` says it. A `dramatiq` master's
        worker processes all read the same environment, so only the first of them says it.
        """
        try:
            return cls.from_env()
        except SettingsError as exc:
            if multiprocessing.current_process().name in _SPEAKING_PROCESSES:
                print(f"{program}: cannot start: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

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


#: AWS's own variables are read too, the specific one first.
_FALLBACKS = {
    "AWS_ENDPOINT_URL_SQS": ("AWS_ENDPOINT_URL",),
    "AWS_ENDPOINT_URL_DYNAMODB": ("AWS_ENDPOINT_URL",),
    "AWS_ENDPOINT_URL_S3": ("AWS_ENDPOINT_URL",),
    "AWS_REGION": ("AWS_DEFAULT_REGION",),
}


def variable_names(field: dataclasses.Field[Any]) -> tuple[str, ...]:
    """The environment variables that set a field, the first that is set winning."""
    own = field.metadata["env"]
    if own:
        return (own, *_FALLBACKS.get(own, ()))
    return (ENV_PREFIX + field.name.upper(),)


def _parse(name: str, field: dataclasses.Field[Any], raw: str) -> object:
    parse = field.metadata["parse"]
    try:
        return parse(raw.strip())
    except ValueError:
        kind = _KINDS.get(parse, "a value of its kind")
        raise SettingsError(f"{name} must be {kind}, got {raw!r}.") from None


def _bound(settings: Settings, bound: Bound) -> float | None:
    return bound(settings) if callable(bound) else bound


def _check(settings: Settings, field: dataclasses.Field[Any]) -> None:
    value = getattr(settings, field.name)
    name = variable_names(field)[0]
    choices = field.metadata["choices"]
    if choices and value not in choices:
        listed = ", ".join(choices[:-1]) + " or " + choices[-1]
        raise SettingsError(f"{name} must be {listed}, got {value!r}.")
    low, high = _bound(settings, field.metadata["low"]), _bound(settings, field.metadata["high"])
    if low is None and high is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {value}.")
    if (low is not None and value < low) or (high is not None and value > high):
        raise SettingsError(f"{name} must be between {_show(low)} and {_show(high)}, got {value}.")


def _show(bound: float | None) -> str:
    return "any" if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)
