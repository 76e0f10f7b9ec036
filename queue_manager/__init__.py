"""queue-manager's internals: settings, logs, the SQS machinery and the client.

The top-level `api`, `actors`, `broker` and `schemas` are the system's public faces; everything
else lives here, so no generic module name (`sqs`, `settings`, `logs`) lands in site-packages.
"""
