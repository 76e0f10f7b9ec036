"""A small client for queue-manager's API: validates payloads locally, sends, retries, and the `qm` CLI."""

from queue_manager.client.api import ApiError, QMClient, Unavailable, ValidationFailed

__all__ = ["ApiError", "QMClient", "Unavailable", "ValidationFailed"]
