"""queue-manager's SQS machinery: broker, consumer, retries in place, queue admin."""
