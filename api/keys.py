"""Typed keys of what the application shares between requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from api.backpressure import DepthGuard
from api.metrics import ApiMetrics
from api.payloads import LargeBodies
from api.sender import Sender
from queue_manager.reports import ReportStore
from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from queue_manager.state.base import StatusEvents
from queue_manager.state.idempotency import IdempotencyKeys
from queue_manager.state.status import SentIds
from queue_manager.state.writer import StatusWriter
from schemas import SchemaRegistry

SETTINGS = web.AppKey("qm.settings", Settings)
#: The accepted API keys (`access.ApiKey`: name, key, role), read once at start-up (QM_API_KEYS, then QM_API_KEYS_FILE).
API_KEYS = web.AppKey("qm.api_keys", list)
OPENAPI = web.AppKey("qm.openapi", dict)
METRICS = web.AppKey("qm.metrics", ApiMetrics)
REGISTRY = web.AppKey("qm.registry", SchemaRegistry)
BROKER = web.AppKey("qm.broker", QMBroker)
EXECUTOR = web.AppKey("qm.executor", ThreadPoolExecutor)
SENDER = web.AppKey("qm.sender", Sender)
IDEMPOTENCY = web.AppKey("qm.idempotency", IdempotencyKeys)
DEPTH_GUARD = web.AppKey("qm.depth_guard", DepthGuard)
#: The message types on FIFO queues, as their actors declare.
FIFO_TYPES: web.AppKey[frozenset[str]] = web.AppKey("qm.fifo_types", frozenset)
#: Where the host's worker processes publish their workload (None without QM_STATE_DIR).
WORKER_REPORTS: web.AppKey[ReportStore | None] = web.AppKey("qm.worker_reports")
#: Message status: the store GET /messages/{id} reads, the writer of this process's events, and the
#: SQS MessageIds of recent FIFO sends (None and None when status is off).
STATUS_STORE: web.AppKey[StatusEvents | None] = web.AppKey("qm.status_store")
STATUS_WRITER: web.AppKey[StatusWriter | None] = web.AppKey("qm.status_writer")
SENT_IDS = web.AppKey("qm.sent_ids", SentIds)
#: Large messages: the turns of large request bodies (QM_PAYLOAD_CONCURRENCY).
LARGE_BODIES = web.AppKey("qm.large_bodies", LargeBodies)
