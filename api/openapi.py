"""The OpenAPI 3.1 document, built from the message schemas (JSON Schema 2020-12 is native to 3.1)."""

from __future__ import annotations

import copy
from typing import Any

from api import problems
from api.bodies import MAX_JSON_DEPTH
from api.deadletters import (
    DEFAULT_PEEK_LIMIT,
    DELETE_SCHEMA,
    MAX_AGE_FILTER_SECONDS,
    MAX_REDRIVE_BODY_BYTES,
    REDRIVE_SCHEMA,
)
from api.payloads import batch_body_limit, message_body_limit
from api.schemas import (
    BATCH_SCHEMA,
    ENVELOPE_SCHEMA,
    IDEMPOTENCY_KEY_PATTERN,
    MAX_BATCH_BODY_BYTES,
    MAX_BATCH_MESSAGES,
    MAX_MESSAGE_BODY_BYTES,
)
from api.status import MAX_WAIT_SECONDS
from queue_manager.settings import Settings
from queue_manager.sqs import constants
from queue_manager.sqs.deadletters import MAX_PEEK_MESSAGES, MAX_SCAN_MESSAGES
from queue_manager.sqs.queues import dead_letter_name, fifo_name
from queue_manager.state.base import EVENT_KINDS, STALE
from queue_manager.state.status import MAX_EVENTS, STATES
from schemas import SchemaRegistry
from schemas.envelopes import FIFO_ONLY, FIFO_REQUIRED, NOT_FIFO

#: The version of the HTTP API this document describes.
API_VERSION = "1.0.0"

_PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _retry_after(seconds: int) -> dict[str, Any]:
    return {
        "Retry-After": {
            "description": f"Seconds to wait before trying again: {seconds}.",
            "schema": {"type": "integer", "example": seconds},
        }
    }


def _problem(description: str, *, retry_after: int | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }
    if retry_after is not None:
        response["headers"] = _retry_after(retry_after)
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _request_body(schema_name: str, limit_bytes: int, *, required: bool = True) -> dict[str, Any]:
    """A JSON request body and its size limit, in words and as `x-max-body-bytes` for tools."""
    return {
        "required": required,
        "description": f"application/json in UTF-8, at most {limit_bytes:,} bytes and {MAX_JSON_DEPTH} levels deep.",
        "x-max-body-bytes": limit_bytes,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }


def _body_errors(limit_bytes: int, *, encoded: bool) -> dict[str, Any]:
    """The problems reading a JSON body of at most `limit_bytes` can give."""
    too_large = f"The body is over {limit_bytes:,} bytes"
    if encoded:
        too_large += (
            f", or a message once base64-encoded for SQS is over {constants.MAX_MESSAGE_SIZE_BYTES:,} bytes "
            "(the detail names both sizes)"
        )
    return {
        "400": _problem(
            "The body is not JSON (the detail gives line and column), not UTF-8, holds a lone surrogate, or nests "
            f"more than {MAX_JSON_DEPTH} levels deep; or the request is not valid HTTP/1.1."
        ),
        "408": _problem(
            "The request line and headers did not arrive within QM_HEADER_TIMEOUT_SECONDS, or the body within "
            "QM_BODY_TIMEOUT_SECONDS; the connection is closed."
        ),
        "413": _problem(too_large + "."),
        "415": _problem("The body is not application/json, or declares a charset other than UTF-8."),
    }


#: The component holding the envelope's fields and their limits, whatever the type.
ENVELOPE_FIELDS = "EnvelopeFields"


def build_openapi(
    registry: SchemaRegistry, settings: Settings, *, fifo_types: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The whole API: every endpoint, every message type's payload, every error.

    A type in `fifo_types` is on a FIFO queue: its envelope requires `group_id` and has no `delay_seconds`.
    """
    # Large messages (S3): the body limits are QM_MAX_MESSAGE_BYTES while QM_PAYLOAD_BUCKET is set.
    message_limit = message_body_limit(settings, MAX_MESSAGE_BODY_BYTES)
    batch_limit = batch_body_limit(settings, MAX_BATCH_BODY_BYTES)
    payloads = {f"payload.{t}": copy.deepcopy(registry.schema(t)) for t in registry.types}
    envelope_props = {k: v for k, v in ENVELOPE_SCHEMA["properties"].items() if k not in ("type", "payload")}

    def envelope(t: str) -> dict[str, Any]:
        fifo = t in fifo_types
        left_out = NOT_FIFO if fifo else FIFO_ONLY
        schema: dict[str, Any] = {
            "title": f"{t} message",
            "type": "object",
            "properties": {
                "type": {"const": t},
                "payload": {"$ref": f"#/components/schemas/payload.{t}"},
                **{k: copy.deepcopy(v) for k, v in envelope_props.items() if k not in left_out},
            },
            "required": ["type", "payload", *(FIFO_REQUIRED if fifo else ())],
            "additionalProperties": False,
        }
        if fifo:
            schema["description"] = (
                f"{t!r} messages go to an SQS FIFO queue: those of one group_id are processed one at a time, in "
                "the order the API accepted them; a deduplication_id (by default the message id) seen again within "
                "5 minutes is accepted and dropped."
            )
        return schema

    envelopes = [envelope(t) for t in registry.types]
    secured: list[dict[str, list[str]]] = [{"bearerAuth": []}] if settings.accepted_api_keys() else []
    # Every operation may also answer 404 (no such path) or 405 (another method; with `Allow`), or a bare 500.
    default = {
        "default": _problem(
            "Any other error, always problem+json: 400 for a request that is not valid HTTP/1.1 (a request line or "
            "header over 8,190 bytes, too many headers), 404 for an unknown path, 405 for a method the path does not "
            "allow (the `Allow` header lists those it does), 500 for a bug (logged, never detailed)."
        )
    }
    common = {
        "401": _problem(
            "No valid API key (when API keys are configured), or an Authorization header that is not printable ASCII."
        ),
        "403": _problem(
            "A viewer's API key asked for a change (sends, redrives and deletes need an operator's), or a browser's "
            "cross-site request (`Sec-Fetch-Site: cross-site`)."
        ),
        **default,
    }
    send_errors = {
        **common,
        "422": _problem("The envelope or payload breaks its schema, or an idempotency key was reused."),
        "429": _problem("The queue is over QM_MAX_QUEUE_DEPTH.", retry_after=problems.RETRY_AFTER_BACKLOG_SECONDS),
        "503": _problem(
            "SQS cannot be reached, is too slow or throttles; or the state store cannot check an Idempotency-Key "
            "(state-unavailable: nothing was sent).",
            retry_after=problems.RETRY_AFTER_SEND_SECONDS,
        ),
    }
    idempotency_header = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "A retry with the same key and message returns the first answer.",
        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
    }
    type_parameter = {
        "name": "type",
        "in": "path",
        "required": True,
        "schema": {"enum": list(registry.types)},
        "description": "A message type.",
    }
    queues = [fifo_name(settings.queue_name(t)) if t in fifo_types else settings.queue_name(t) for t in registry.types]
    queue_names = [*queues, *(dead_letter_name(q) for q in queues)]
    name_parameter = {
        **type_parameter,
        "name": "name",
        "schema": {"enum": [*registry.types, *queue_names]},
        "description": "A message type, or the name of its queue or dead-letter queue as GET /queues lists them.",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "queue-manager",
            "version": API_VERSION,
            "description": "Accepts messages over HTTP, validates them against their JSON Schemas, and answers 202 "
            "only once Amazon SQS has them. Errors are RFC 9457 problem details.",
        },
        "servers": [{"url": "/"}],
        "security": secured,
        "paths": {
            "/messages": {
                "post": {
                    "operationId": "postMessage",
                    "summary": "Send one message",
                    "parameters": [idempotency_header],
                    "requestBody": _request_body("Envelope", message_limit),
                    "responses": {
                        "202": {
                            **_json("SQS has the message.", {"$ref": "#/components/schemas/Accepted"}),
                            "headers": {
                                "Location": {
                                    "description": "Where the message's status is read: `/messages/{id}`.",
                                    "schema": {"type": "string"},
                                },
                                "Idempotent-Replayed": {
                                    "description": "`true` when this is the first answer to a retried key.",
                                    "schema": {"type": "string"},
                                },
                                "traceparent": {
                                    "description": "With tracing on: the W3C traceparent of this request's span, in "
                                    "the caller's trace when the request carried one.",
                                    "schema": {"type": "string"},
                                },
                            },
                        },
                        **send_errors,
                        **_body_errors(message_limit, encoded=not settings.payload_bucket),
                    },
                }
            },
            "/messages/batch": {
                "post": {
                    "operationId": "postBatch",
                    "summary": f"Send up to {MAX_BATCH_MESSAGES} messages, each validated on its own",
                    "requestBody": _request_body("Batch", batch_limit),
                    "responses": {
                        "202": _json("Every entry was sent.", {"$ref": "#/components/schemas/BatchResults"}),
                        "207": _json(
                            "Some entries were not sent: each result has the status a POST /messages of that entry "
                            "would have had (422 for an entry that is not an Envelope, 413, 429, 503), and why; a "
                            "valid entry of a FIFO group behind one of that group that was refused is 424, not sent, "
                            "with `waits_on` naming that entry, so that no entry of a group overtakes another.",
                            {"$ref": "#/components/schemas/BatchResults"},
                        ),
                        **send_errors,
                        "422": _problem(
                            f'The body is not {{"messages": [...]}} with 1 to {MAX_BATCH_MESSAGES} entries '
                            "(an entry that breaks its schema is answered in its result instead)."
                        ),
                        **_body_errors(batch_limit, encoded=not settings.payload_bucket),
                    },
                }
            },
            "/messages/{id}": {
                "get": {
                    "operationId": "getMessageStatus",
                    "summary": "A message's status: its state, attempts, errors and history",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "The id a send answered (a lower-case UUID).",
                        },
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS, "default": 0},
                            "description": "Seconds to wait for the state to change (answered at once on a final "
                            "state: succeeded, dead_lettered, deduplicated, failed).",
                        },
                    ],
                    "responses": {
                        "200": _json("The status.", {"$ref": "#/components/schemas/MessageStatus"}),
                        "404": _problem("No such message, an id that is not a message id, or status is off."),
                        "410": _problem("The message was accepted longer ago than QM_STATUS_RETENTION_SECONDS."),
                        "422": _problem("A bad wait."),
                        "503": _problem(
                            "The status store cannot be read.", retry_after=problems.RETRY_AFTER_READ_SECONDS
                        ),
                        **common,
                    },
                }
            },
            "/schemas": {
                "get": {
                    "operationId": "listSchemas",
                    "summary": "The message types and where their schemas are",
                    "responses": {"200": _json("The types.", {"$ref": "#/components/schemas/SchemaList"}), **common},
                }
            },
            "/schemas/{type}": {
                "get": {
                    "operationId": "getSchema",
                    "summary": "The JSON Schema of one message type",
                    "parameters": [type_parameter],
                    "responses": {
                        "200": {
                            "description": "The schema; validate payloads with it before sending.",
                            "content": {"application/schema+json": {"schema": {"type": "object"}}},
                        },
                        "404": _problem("No such message type."),
                        **common,
                    },
                }
            },
            "/queues": {
                "get": {
                    "operationId": "listQueues",
                    "summary": "Approximate depths of every queue and its dead-letter queue",
                    "responses": {
                        "200": _json("The depths.", {"$ref": "#/components/schemas/Queues"}),
                        "503": _problem("SQS cannot be reached.", retry_after=problems.RETRY_AFTER_READ_SECONDS),
                        **common,
                    },
                }
            },
            "/scaling": {
                "get": {
                    "operationId": "scaling",
                    "summary": "Autoscaling signals: per type, what waits, runs and backs off, and the workers needed",
                    "description": (
                        "SQS's visible, in-flight and delayed counts, with what the worker processes report "
                        "(those sharing this API's QM_STATE_DIR, reports under 5 s old): held (received, not "
                        "started), running, backing_off (hidden for a retry's backoff, never counted as work), "
                        "blocked (FIFO messages held behind the running one of their group: not work for another "
                        "thread). "
                        "backlog = visible + held; threads_needed = running + backlog * min(1, p50 ÷ "
                        "target_latency_seconds); workers_needed = ⌈threads_needed ÷ threads_per_process⌉. "
                        "A figure the reports cannot give is null, and `reasons` says why. For KEDA's "
                        "metrics-api scaler: valueLocation `total.workers_needed`."
                    ),
                    "responses": {
                        "200": _json("The figures.", {"$ref": "#/components/schemas/Scaling"}),
                        "503": _problem("SQS cannot be reached.", retry_after=problems.RETRY_AFTER_READ_SECONDS),
                        **common,
                    },
                }
            },
            "/queues/{name}/dead-letters": {
                "get": {
                    "operationId": "peekDeadLetters",
                    "summary": "Peek at dead letters without removing them",
                    "parameters": [
                        name_parameter,
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": f"The most shown: up to {MAX_PEEK_MESSAGES}, or {MAX_SCAN_MESSAGES} with "
                            "a filter or `scan`.",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_SCAN_MESSAGES,
                                "default": DEFAULT_PEEK_LIMIT,
                            },
                        },
                        *_dead_letter_filters(),
                    ],
                    "responses": {
                        "200": _json(
                            "The dead letters, left on the queue; with a filter or `scan`, also `scanned`, `matched` "
                            "and `matched_ids` (every match's id, newest first: what a redrive or delete of the "
                            "filtered set takes).",
                            {"type": "object"},
                        ),
                        "404": _problem("No such message type or queue."),
                        "422": _problem("A bad limit or filter."),
                        "503": _problem("SQS cannot be reached.", retry_after=problems.RETRY_AFTER_READ_SECONDS),
                        **common,
                    },
                }
            },
            "/queues/{name}/dead-letters/{id}/payload": {
                "get": {
                    "operationId": "downloadDeadLetterPayload",
                    "summary": "Download the Dramatiq message a dead letter keeps in S3 (large messages)",
                    "parameters": [
                        name_parameter,
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _json("The message, as Dramatiq encoded it.", {"type": "object"}),
                        "404": _problem("No such type, dead letter, payload, or large messages are off."),
                        "503": _problem("SQS or S3 cannot be reached.", retry_after=problems.RETRY_AFTER_READ_SECONDS),
                        **common,
                    },
                }
            },
            "/queues/{name}/redrive": {
                "post": {
                    "operationId": "redrive",
                    "summary": "Move dead letters (all, or selected ids) back to their queue",
                    "parameters": [name_parameter],
                    "requestBody": _request_body("RedriveRequest", MAX_REDRIVE_BODY_BYTES, required=False),
                    "responses": {
                        "200": _json("What was moved.", {"type": "object"}),
                        "404": _problem("No such message type or queue."),
                        "422": _problem("A bad body."),
                        "503": _problem("SQS cannot be reached.", retry_after=problems.RETRY_AFTER_READ_SECONDS),
                        **common,
                        **_body_errors(MAX_REDRIVE_BODY_BYTES, encoded=False),
                    },
                }
            },
            "/queues/{name}/dead-letters/delete": {
                "post": {
                    "operationId": "deleteDeadLetters",
                    "summary": "Delete dead letters for good, by id",
                    "description": (
                        "Each message is received, its id checked, and deleted with the receipt handle of that very "
                        "receive, so nothing but a listed message is deleted; the rest are made visible again at "
                        "once. Audited with the API key's name."
                    ),
                    "parameters": [name_parameter],
                    "requestBody": _request_body("DeleteRequest", MAX_REDRIVE_BODY_BYTES),
                    "responses": {
                        "200": _json("What was deleted: `deleted`, `ids`, `not_found`, `failed`.", {"type": "object"}),
                        "404": _problem("No such message type or queue."),
                        "422": _problem("A bad body."),
                        "503": _problem("SQS cannot be reached.", retry_after=problems.RETRY_AFTER_READ_SECONDS),
                        **common,
                        **_body_errors(MAX_REDRIVE_BODY_BYTES, encoded=False),
                    },
                }
            },
            "/console/overview": {
                "get": {
                    "operationId": "consoleOverview",
                    "summary": "Every type's queue counts, rates and last 15 minutes, from one shared poller",
                    "description": (
                        "Read from the console's sampler: one GetQueueAttributes per queue per "
                        "QM_CONSOLE_SAMPLE_SECONDS while anyone watches, whatever the number of viewers; source "
                        "queues are never received from. `in_per_second` counts messages this API process sent, "
                        "`out_per_second` is that less the queue's growth (processed or dead-lettered)."
                    ),
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "required": False,
                            "description": "A `sampled_at` already seen: the answer waits (a few intervals at most) "
                            "for a newer sample.",
                            "schema": {"type": "number"},
                        }
                    ],
                    "responses": {
                        "200": _json("The overview.", {"$ref": "#/components/schemas/ConsoleOverview"}),
                        "422": _problem("`after` is not a number."),
                        **common,
                    },
                }
            },
            "/console/session": {
                "get": {
                    "operationId": "consoleSession",
                    "summary": "The API key's name and role, and whether keys are required",
                    "responses": {"200": _json("Who is asking.", {"type": "object"}), **common},
                }
            },
            "/console/validate": {
                "post": {
                    "operationId": "validateMessage",
                    "summary": "Check an envelope as POST /messages does, without sending it",
                    "requestBody": _request_body("Envelope", MAX_MESSAGE_BODY_BYTES),
                    "responses": {
                        "200": _json(
                            '`{"valid": true}`, or `valid` false with the `status` a send would get, its `detail` '
                            "and `errors`.",
                            {"type": "object"},
                        ),
                        **common,
                        **_body_errors(MAX_MESSAGE_BODY_BYTES, encoded=False),
                    },
                }
            },
            "/ui": {
                "get": {
                    "operationId": "console",
                    "summary": "The operations console (its assets are served from /ui/static/)",
                    "security": [],
                    "responses": {
                        "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
                        **default,
                    },
                }
            },
            "/": {
                "get": {
                    "operationId": "index",
                    "summary": "Links to the console, the docs and the rest (HTML for a browser)",
                    "security": [],
                    "responses": {"200": _json("The links.", {"type": "object"}), **default},
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "health",
                    "summary": "The process is up",
                    "security": [],
                    "responses": {"200": _json("Up.", {"type": "object"}), **default},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "ready",
                    "summary": "SQS answers and every queue exists",
                    "security": [],
                    "responses": {
                        "200": _json("Ready.", {"type": "object"}),
                        "503": _problem("Not ready.", retry_after=problems.RETRY_AFTER_READ_SECONDS),
                        **default,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics: requests, latency, send batch sizes, SQS errors and requests",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        **default,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {"200": _json("The OpenAPI document.", {"type": "object"}), **default},
                }
            },
            "/docs": {
                "get": {
                    "operationId": "docs",
                    "summary": "Swagger UI on this document (its assets are served from /docs/static/)",
                    "security": [],
                    "responses": {
                        "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
                        **default,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": "An API key."}},
            "schemas": {
                **payloads,
                **{f"message.{t}": envelope for t, envelope in zip(registry.types, envelopes, strict=True)},
                # The fields every envelope may have and their limits, whatever its type: the API checks
                # these first, then its type's queue rules (message.<type>), then the payload, and the
                # `qm` client does the same from this document.
                ENVELOPE_FIELDS: {
                    k: copy.deepcopy(v) for k, v in ENVELOPE_SCHEMA.items() if k not in ("$schema", "$id")
                },
                "Envelope": {
                    "description": "A message of one type: `type` selects which (each branch has a const on it).",
                    "oneOf": [{"$ref": f"#/components/schemas/message.{t}"} for t in registry.types],
                    "discriminator": {
                        "propertyName": "type",
                        "mapping": {t: f"#/components/schemas/message.{t}" for t in registry.types},
                    },
                },
                "Batch": {
                    "type": "object",
                    "properties": {
                        "messages": {
                            **copy.deepcopy(BATCH_SCHEMA["properties"]["messages"]),
                            "items": {"$ref": "#/components/schemas/Envelope"},
                        }
                    },
                    "required": ["messages"],
                    "additionalProperties": False,
                },
                "DeleteRequest": {k: v for k, v in copy.deepcopy(DELETE_SCHEMA).items() if k not in ("$schema", "$id")},
                "ConsoleOverview": {
                    "type": "object",
                    "properties": {
                        "sampled_at": {"type": ["number", "null"], "description": "Unix time of the newest sample."},
                        "interval_seconds": {"type": "number"},
                        "window_seconds": {"type": "integer"},
                        "error": {"type": ["string", "null"]},
                        "history_columns": {"type": "array", "items": {"type": "string"}},
                        "types": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "RedriveRequest": {
                    k: v for k, v in copy.deepcopy(REDRIVE_SCHEMA).items() if k not in ("$schema", "$id")
                },
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "The message id (also the webhook's Idempotency-Key)."},
                        "type": {"type": "string"},
                        "queue": {"type": "string", "description": "The SQS queue it is on."},
                    },
                    "required": ["id", "type", "queue"],
                },
                "MessageStatus": _status_schema(),
                "BatchResults": {
                    "type": "object",
                    "properties": {
                        "results": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "index": {"type": "integer"},
                                    "status": {"type": "integer"},
                                    "id": {"type": "string"},
                                    "type": {"type": "string"},
                                    "queue": {"type": "string"},
                                    "status_url": {
                                        "type": "string",
                                        "description": "On a 202: where the message's status is read.",
                                    },
                                    "detail": {"type": "string"},
                                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Violation"}},
                                    "retry_after": {"type": "integer"},
                                    "waits_on": {
                                        "type": "integer",
                                        "description": "On a 424: the index of the refused entry of the same FIFO "
                                        "group this one waits on; send the group again from there, in order.",
                                    },
                                },
                                "required": ["index", "status"],
                            },
                        }
                    },
                    "required": ["results"],
                },
                "SchemaList": {
                    "type": "object",
                    "properties": {
                        "types": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "type": {"type": "string"},
                                    "schema": {"type": "string"},
                                    "title": {"type": "string"},
                                },
                            },
                        }
                    },
                },
                "Queues": {"type": "object", "properties": {"queues": {"type": "array", "items": {"type": "object"}}}},
                **_scaling_schemas(),
                "Violation": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": "A JSON pointer into the request body."},
                        "keyword": {"type": "string", "description": "The JSON Schema keyword that failed."},
                        "message": {"type": "string"},
                    },
                    "required": ["path", "keyword", "message"],
                },
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details.",
                    "properties": {
                        "type": {"type": "string", "format": "uri"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "errors": {"type": "array", "items": {"$ref": "#/components/schemas/Violation"}},
                    },
                    "required": ["type", "title", "status", "detail"],
                },
            },
        },
    }


def _dead_letter_filters() -> list[dict[str, Any]]:
    """The query parameters that filter a dead-letter listing; every given one must hold."""
    age = {"type": "integer", "minimum": 0, "maximum": MAX_AGE_FILTER_SECONDS}
    return [
        {"name": "error", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "Text the last error contains (case-insensitive)."},
        {"name": "id", "in": "query", "required": False, "schema": {"type": "string"},
         "description": "Text the message id or SQS message id contains."},
        {"name": "older_than_seconds", "in": "query", "required": False, "schema": age,
         "description": "Only those sent at least this long ago."},
        {"name": "newer_than_seconds", "in": "query", "required": False, "schema": age,
         "description": "Only those sent at most this long ago."},
        {"name": "scan", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SCAN_MESSAGES, "default": MAX_SCAN_MESSAGES},
         "description": "How many dead letters a filtered listing looks at."},
        {"name": "payload", "in": "query", "required": False, "schema": {"type": "boolean", "default": False},
         "description": "Whether each dead letter carries its payload."},
    ]  # fmt: skip


def _scaling_schemas() -> dict[str, Any]:
    """The components of GET /scaling's answer."""
    count = {"type": ["integer", "null"], "minimum": 0}
    number = {"type": ["number", "null"], "minimum": 0}
    reasons = {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Why each null figure is null.",
    }
    return {
        "ScalingType": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "queue": {"type": "string"},
                "visible": {"type": "integer", "description": "SQS: ApproximateNumberOfMessages."},
                "delayed": {"type": "integer", "description": "SQS: ApproximateNumberOfMessagesDelayed."},
                "in_flight": {"type": "integer", "description": "SQS: ApproximateNumberOfMessagesNotVisible."},
                "held": {**count, "description": "Received by a worker and not started."},
                "running": {**count, "description": "Held by a worker thread."},
                "backing_off": {**count, "description": "Hidden for a retry's backoff: not work until it ends."},
                "blocked": {
                    **count,
                    "description": "FIFO messages a worker holds behind the running one of their group: not backlog.",
                },
                "unreported_in_flight": {**count, "description": "In flight and in no fresh worker report."},
                "backlog": {**count, "description": "visible + held: messages waiting for a thread."},
                "oldest_wait_seconds": {**number, "description": "The longest a first attempt waited for a thread."},
                "p50_seconds": {**number, "description": "The median of the workers' recent processing times."},
                "threads_needed": number,
                "workers_needed": count,
                "reasons": reasons,
            },
            "required": ["type", "queue", "visible", "delayed", "in_flight", "workers_needed", "reasons"],
        },
        "Scaling": {
            "type": "object",
            "properties": {
                "target_latency_seconds": {"type": "number"},
                "workers": {
                    "type": "object",
                    "properties": {
                        "processes": {"type": "integer"},
                        "threads": {"type": "integer"},
                        "busy_threads": {"type": "integer"},
                        "threads_per_process": {"type": ["number", "null"]},
                    },
                },
                "types": {"type": "array", "items": {"$ref": "#/components/schemas/ScalingType"}},
                "total": {
                    "type": "object",
                    "properties": {"threads_needed": number, "workers_needed": count, "reasons": reasons},
                },
            },
            "required": ["target_latency_seconds", "workers", "types", "total"],
        },
    }


def _status_schema() -> dict[str, Any]:
    """The component of GET /messages/{id}'s answer."""
    time_or_null = {"type": ["string", "null"], "format": "date-time"}
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "type": {"type": ["string", "null"]},
            "queue": {"type": ["string", "null"]},
            "state": {"enum": list(STATES)},
            "attempts": {"type": "integer", "description": "Attempts started, over the whole history."},
            "accepted_at": time_or_null,
            "started_at": {**time_or_null, "description": "When the latest (or the succeeding) attempt started."},
            "finished_at": time_or_null,
            "next_attempt_at": {**time_or_null, "description": "When a retry or a delayed message is due."},
            "last_error": {"type": ["string", "null"]},
            "trace_id": {"type": ["string", "null"], "description": "From the POST's W3C traceparent header."},
            "stale": {"type": "boolean", "description": "Some of its events were not recorded (store down)."},
            "stands": {
                "type": ["string", "null"],
                "description": "When deduplicated: the message SQS kept (null when it cannot be known).",
            },
            "dead_letter_reason": {"type": "string"},
            "events_omitted": {"type": "integer", "description": f"Events left out of the {MAX_EVENTS} listed."},
            "events": {
                "type": "array",
                "maxItems": MAX_EVENTS,
                "items": {
                    "type": "object",
                    "properties": {
                        "event": {"enum": [k for k in EVENT_KINDS if k != STALE]},
                        "at": {"type": "string", "format": "date-time"},
                        "attempt": {"type": "integer"},
                        "error": {"type": "string"},
                        "delay_ms": {"type": "integer"},
                        "reason": {"type": "string"},
                        "stands": {"type": "string"},
                        "until": {"type": "string", "format": "date-time"},
                        "sqs_message_id": {"type": "string"},
                        "message_id": {"type": "string"},
                    },
                    "required": ["event", "at"],
                },
            },
        },
        "required": [
            "id",
            "type",
            "queue",
            "state",
            "attempts",
            "accepted_at",
            "started_at",
            "finished_at",
            "next_attempt_at",
            "last_error",
            "trace_id",
            "stale",
            "events",
        ],
    }
