"""The state store behind idempotency keys and message status: SQLite (one host) or DynamoDB (a fleet)."""
