"""Dramatiq middleware for the SQS broker, one class per module; none imports a broker class."""

from queue_manager.sqs.middleware.fifo import FifoQueues
from queue_manager.sqs.middleware.logcontext import StructuredLogs
from queue_manager.sqs.middleware.metrics import WorkerMetrics
from queue_manager.sqs.middleware.retries import RetriesInPlace
from queue_manager.sqs.middleware.tracing import MessageTracing

__all__ = ["FifoQueues", "MessageTracing", "RetriesInPlace", "StructuredLogs", "WorkerMetrics"]
