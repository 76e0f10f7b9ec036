"""SQS quotas, the 12 h rule, and the wire names queue-manager puts on messages: the bottom of the tree.

Units are in every name. Nothing here imports anything of the project.

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

#: Kept below the 12 h limit by everything that hides a message (a retry's backoff, the heartbeat,
#: a FIFO message waiting its turn): the limit counts from receipt, and the call itself takes time.
VISIBILITY_MARGIN_SECONDS = 60

#: The longest a message may be kept hidden, counted from its receipt (the 12 h rule, less the margin).
MAX_HIDE_SECONDS = MAX_VISIBILITY_TIMEOUT_SECONDS - VISIBILITY_MARGIN_SECONDS

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

#: The message attributes that carry a message's trace context (W3C Trace Context, String): set when
#: tracing is on, kept on dead-letter copies and redrives. SQS allows 10 attributes per message.
ATTR_TRACEPARENT = "traceparent"
ATTR_TRACESTATE = "tracestate"
TRACE_ATTRIBUTES = (ATTR_TRACEPARENT, ATTR_TRACESTATE)
#: The most message attributes SQS takes on one message.
MAX_MESSAGE_ATTRIBUTES = 10

#: Message options (Dramatiq's `message.options`) by which middleware and consumer speak.
#: A retry in place, after this many milliseconds (set by the retry middleware, read by the consumer's nack).
RETRY_DELAY_OPTION = "qm_retry_delay_ms"
#: Why a message is dead-lettered (set by the retry middleware, carried onto the dead letter).
DEAD_LETTER_REASON_OPTION = "qm_dead_letter_reason"
#: The MessageGroupId of a message (the envelope's `group_id`).
GROUP_ID_OPTION = "group_id"
#: An explicit MessageDeduplicationId (the envelope's `deduplication_id`).
DEDUPLICATION_ID_OPTION = "deduplication_id"

#: MessageGroupId and MessageDeduplicationId: 1 to 128 visible ASCII characters (a JSON Schema pattern).
GROUP_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"

#: The actor option that puts a queue on SQS FIFO (a broker used without schemas reads it; with
#: schemas, a type's queue kind is declared in its schema file, `"x-qm-queue": "fifo"`).
FIFO_OPTION = "fifo"

#: Large messages through S3 (the claim-check of the AWS extended clients, whose wire format this is).
#: The attribute an offloaded message carries: the size in bytes of the body its S3 object holds.
ATTR_PAYLOAD_SIZE = "ExtendedPayloadSize"
#: The same attribute under the name older Java extended clients write (read, never written).
ATTR_LEGACY_PAYLOAD_SIZE = "SQSLargePayloadSize"
#: The first element of an offloaded body: `[class, {"s3BucketName": bucket, "s3Key": key}]`.
PAYLOAD_POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
#: The same under the name older Java extended clients write (read, never written).
LEGACY_PAYLOAD_POINTER_CLASS = "com.amazon.sqs.javamessaging.MessageS3Pointer"
#: Why a message whose S3 object is gone or unreadable was dead-lettered.
PAYLOAD_MISSING_REASON = "payload-missing"
