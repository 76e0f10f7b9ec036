"""queue-manager's SQS machinery: the broker and everything below it, one module per concept.

constants (quotas, the 12 h rule, wire names) → errors (what a failure means) → batches (batch calls and
the settle policy) → message (decode, receipt, attempt) → queues (names, provisioning, attribute reads)
→ fifo, groups (FIFO fields and ordering) → sending, acks, capacity → consumer, fifo_consumer →
deadletters → middleware/ (never imports a broker) → broker (the composition of them all).
"""
