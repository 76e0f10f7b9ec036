"""SQS quotas and the names derived from them, with units in every name.

Quotas: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
and https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-queues.html
"""

from __future__ import annotations

import re

#: The largest message body SQS accepts (raised from 256 KiB in 2025).
MAX_MESSAGE_SIZE_BYTES = 1_048_576

#: The largest JSON a message can carry once base64 (4 bytes per 3) is applied.
MAX_ENCODED_JSON_BYTES = MAX_MESSAGE_SIZE_BYTES // 4 * 3

#: Entries per SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch.
MAX_BATCH_ENTRIES = 10

#: The largest total payload of one batch request.
MAX_BATCH_SIZE_BYTES = 1_048_576

#: MaxNumberOfMessages of one ReceiveMessage.
MAX_RECEIVE_MESSAGES = 10

#: The longest WaitTimeSeconds of one ReceiveMessage.
MAX_WAIT_TIME_SECONDS = 20

#: The longest a received message may stay hidden, counted from its receipt.
MAX_VISIBILITY_TIMEOUT_SECONDS = 12 * 3600
MAX_VISIBILITY_TIMEOUT_MS = MAX_VISIBILITY_TIMEOUT_SECONDS * 1000

#: The shortest visibility timeout the heartbeat can keep ahead of.
MIN_HEARTBEAT_VISIBILITY_SECONDS = 5

#: The longest DelaySeconds of one message.
MAX_DELAY_SECONDS = 900

#: The longest a queue keeps a message.
MAX_RETENTION_SECONDS = 14 * 86400

#: maxReceiveCount of a redrive policy lies between 1 and this.
MAX_RECEIVE_COUNT = 1000

#: A queue name: 1-80 characters of letters, digits, '-' and '_' (we keep room for "_dlq").
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,40}")

#: Appended to a queue's name to name its dead-letter queue.
DEAD_LETTER_SUFFIX = "_dlq"

#: The message attributes queue-manager sets on what it sends.
ATTR_TYPE = "qm-type"
ATTR_MESSAGE_ID = "qm-message-id"
ATTR_ERROR = "qm-error"
ATTR_RECEIVE_COUNT = "qm-receive-count"
ATTR_SOURCE_QUEUE = "qm-source-queue"
