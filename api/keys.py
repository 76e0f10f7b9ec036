"""Typed keys of what the application shares between requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from api.backpressure import DepthGuard
from api.idempotency import IdempotencyStore
from api.metrics import ApiMetrics
from api.payloads import LargeBodies
from api.sender import Sender
from queue_manager.reports import ReportStore
from queue_manager.settings import Settings
from queue_manager.sqs.broker import QMBroker
from schemas import SchemaRegistry

SETTINGS = web.AppKey("qm.settings", Settings)
#: The accepted API keys, read once at start-up (QM_API_KEYS, then QM_API_KEYS_FILE).
API_KEYS = web.AppKey("qm.api_keys", list)
OPENAPI = web.AppKey("qm.openapi", dict)
METRICS = web.AppKey("qm.metrics", ApiMetrics)
REGISTRY = web.AppKey("qm.registry", SchemaRegistry)
BROKER = web.AppKey("qm.broker", QMBroker)
EXECUTOR = web.AppKey("qm.executor", ThreadPoolExecutor)
SENDER = web.AppKey("qm.sender", Sender)
IDEMPOTENCY = web.AppKey("qm.idempotency", IdempotencyStore)
DEPTH_GUARD = web.AppKey("qm.depth_guard", DepthGuard)
#: The message types on FIFO queues, as their actors declare.
FIFO_TYPES: web.AppKey[frozenset[str]] = web.AppKey("qm.fifo_types", frozenset)
#: Where the host's worker processes publish their workload (None without QM_STATE_DIR).
WORKER_REPORTS: web.AppKey[ReportStore | None] = web.AppKey("qm.worker_reports")
#: Large messages: the turns of large request bodies (QM_PAYLOAD_CONCURRENCY).
LARGE_BODIES = web.AppKey("qm.large_bodies", LargeBodies)
