"""The workers' actors, one module per message type: `dramatiq actors` imports this package.

The broker is imported first, so the actors below register with it.
"""

from broker import broker, settings  # isort: skip  (the broker must exist before any actor)
from actors import log, ordered, webhook

__all__ = ["broker", "log", "ordered", "settings", "webhook"]
