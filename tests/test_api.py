"""The API contract: every status a client can cause, with its exact problem body."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from settings import Settings
from tests.conftest import SQSServer, drain, queue_depth

pytestmark = pytest.mark.api

PROBLEM = "application/problem+json"


async def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body: dict[str, Any] = await response.json()
    assert body["status"] == status
    return body


async def test_a_valid_message_is_accepted_and_lands_on_its_queue_with_the_right_attributes(
    api_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given a valid log message
    payload = {"message": "hello", "level": "warning", "fields": {"user": 42}}
    # When it is posted
    response = await api_client.post("/messages", json={"type": "log", "payload": payload})
    # Then the answer is 202 with its id, type and queue
    assert response.status == 202
    answer = await response.json()
    assert answer["type"] == "log"
    assert answer["queue"] == f"{settings.queue_prefix}_log"
    # And SQS holds one Dramatiq message for the log actor, carrying the payload and its id
    (message,) = drain(sqs, settings.queue_name("log"))
    decoded = json.loads(base64.b64decode(message["Body"]))
    assert decoded["actor_name"] == "log"
    assert decoded["queue_name"] == "log"
    assert decoded["args"] == [payload]
    assert decoded["kwargs"] == {}
    assert decoded["message_id"] == answer["id"]
    assert message["MessageAttributes"]["qm-type"]["StringValue"] == "log"
    assert message["MessageAttributes"]["qm-message-id"]["StringValue"] == answer["id"]


async def test_delay_seconds_delays_the_message(api_client: Any, settings: Settings, sqs: Any) -> None:
    response = await api_client.post(
        "/messages", json={"type": "log", "payload": {"message": "x"}, "delay_seconds": 60}
    )
    assert response.status == 202
    assert queue_depth(sqs, settings.queue_name("log")) == {"visible": 0, "in_flight": 0, "delayed": 1}


async def test_a_body_that_is_not_json_is_400_with_its_position(api_client: Any) -> None:
    response = await api_client.post("/messages", data=b'{"type": ', headers={"Content-Type": "application/json"})
    assert await problem(response, 400) == {
        "type": "urn:queue-manager:problem:malformed-json",
        "title": "Malformed JSON",
        "status": 400,
        "detail": "The body is not valid JSON: Expecting value at line 1, column 10.",
    }


async def test_a_body_that_is_not_utf8_is_400(api_client: Any) -> None:
    response = await api_client.post("/messages", data=b'{"x": "\xff"}', headers={"Content-Type": "application/json"})
    body = await problem(response, 400)
    assert body["detail"].startswith("The body is not UTF-8")


async def test_another_content_type_is_415(api_client: Any) -> None:
    response = await api_client.post("/messages", data="type=log", headers={"Content-Type": "text/plain"})
    assert await problem(response, 415) == {
        "type": "urn:queue-manager:problem:unsupported-media-type",
        "title": "Unsupported Media Type",
        "status": 415,
        "detail": "The body must be application/json, not text/plain.",
    }


async def test_a_body_over_the_limit_is_413_naming_the_limit(api_client: Any) -> None:
    body = json.dumps({"type": "log", "payload": {"message": "a" * 800_000}}).encode()
    response = await api_client.post("/messages", data=body, headers={"Content-Type": "application/json"})
    assert await problem(response, 413) == {
        "type": "urn:queue-manager:problem:payload-too-large",
        "title": "Payload Too Large",
        "status": 413,
        "detail": "The request body is larger than 790528 bytes, the most /messages accepts "
        "(a message must fit in SQS's 1 MiB once base64-encoded).",
    }


async def test_a_message_too_large_once_encoded_for_sqs_is_413_naming_both_sizes(api_client: Any) -> None:
    # Given a body under the HTTP limit whose base64 encoding passes SQS's 1 MiB
    document = {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": "a" * 786_300}}
    response = await api_client.post("/messages", json=document)
    body = await problem(response, 413)
    assert body["detail"].startswith("The message is ")
    assert "bytes once encoded for SQS (base64 of its JSON); the limit is 1048576 bytes" in body["detail"]


async def test_an_unknown_type_is_422_naming_the_known_types(api_client: Any) -> None:
    response = await api_client.post("/messages", json={"type": "sms", "payload": {}})
    assert await problem(response, 422) == {
        "type": "urn:queue-manager:problem:invalid-message",
        "title": "Invalid Message",
        "status": 422,
        "detail": "Unknown message type 'sms'.",
        "errors": [{"path": "/type", "keyword": "enum", "message": "'sms' is not one of ['log', 'webhook']"}],
    }


async def test_an_envelope_error_is_422_naming_every_violation(api_client: Any) -> None:
    response = await api_client.post("/messages", json={"payload": 1, "delay_seconds": 901, "extra": True})
    body = await problem(response, 422)
    assert body["detail"] == "The envelope is not valid."
    assert sorted((e["path"], e["keyword"]) for e in body["errors"]) == [
        ("", "additionalProperties"),
        ("", "required"),
        ("/delay_seconds", "maximum"),
    ]


async def test_a_payload_breaking_its_schema_is_422_with_every_violation_best_first(api_client: Any) -> None:
    response = await api_client.post(
        "/messages", json={"type": "log", "payload": {"level": "loud", "fields": [], "colour": "red"}}
    )
    body = await problem(response, 422)
    assert body["detail"] == "The payload is not a valid 'log' message."
    assert sorted((e["path"], e["keyword"]) for e in body["errors"]) == [
        ("/payload", "additionalProperties"),
        ("/payload", "required"),
        ("/payload/fields", "type"),
        ("/payload/level", "enum"),
    ]
    assert body["errors"][0]["message"]


async def test_a_webhook_to_a_host_outside_the_allow_list_is_422(api_client: Any) -> None:
    response = await api_client.post(
        "/messages", json={"type": "webhook", "payload": {"url": "https://example.com/hook", "body": {}}}
    )
    assert await problem(response, 422) == {
        "type": "urn:queue-manager:problem:invalid-message",
        "title": "Invalid Message",
        "status": 422,
        "detail": "The payload is not a valid 'webhook' message.",
        "errors": [
            {
                "path": "/payload/url",
                "keyword": "allowedHosts",
                "message": "host example.com:443 is not in QM_WEBHOOK_ALLOWED_HOSTS (127.0.0.1, localhost)",
            }
        ],
    }


@pytest.mark.parametrize("document", [[], 42, "log", None, {"type": 7, "payload": {}}, {"type": "log", "payload": []}])
async def test_odd_json_documents_are_422_never_500(api_client: Any, document: Any) -> None:
    response = await api_client.post(
        "/messages", data=json.dumps(document), headers={"Content-Type": "application/json"}
    )
    await problem(response, 422)


async def test_deeply_nested_json_is_a_client_error_not_500(api_client: Any) -> None:
    body = b'{"type": "log", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await api_client.post("/messages", data=body, headers={"Content-Type": "application/json"})
    assert response.status in (400, 422)
    assert response.content_type == PROBLEM


async def test_unknown_routes_are_404_and_wrong_methods_405(api_client: Any) -> None:
    assert await problem(await api_client.get("/nope"), 404) == {
        "type": "urn:queue-manager:problem:not-found",
        "title": "Not Found",
        "status": 404,
        "detail": "No resource at /nope.",
    }
    response = await api_client.delete("/messages")
    body = await problem(response, 405)
    assert body["detail"] == "DELETE is not allowed on /messages; allowed: POST."
    assert response.headers["Allow"] == "POST"


async def test_schemas_are_listed_and_served_as_schema_json(api_client: Any) -> None:
    listing = await (await api_client.get("/schemas")).json()
    assert [t["type"] for t in listing["types"]] == ["log", "webhook"]
    assert listing["types"][0]["schema"] == "/schemas/log"
    response = await api_client.get("/schemas/webhook")
    assert response.status == 200
    assert response.content_type == "application/schema+json"
    schema = await response.json()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == ["url", "body"]
    body = await problem(await api_client.get("/schemas/sms"), 404)
    assert body["detail"] == "No message type 'sms'; known: log, webhook."


async def test_health_ready_and_queue_depths(api_client: Any, settings: Settings) -> None:
    assert await (await api_client.get("/healthz")).json() == {"status": "ok"}
    ready = await api_client.get("/readyz")
    assert ready.status == 200
    assert (await ready.json())["queues"] == [settings.queue_name("log"), settings.queue_name("webhook")]
    await api_client.post("/messages", json={"type": "log", "payload": {"message": "x"}})
    queues = (await (await api_client.get("/queues")).json())["queues"]
    log = next(q for q in queues if q["type"] == "log")
    assert (log["name"], log["visible"], log["in_flight"], log["delayed"]) == (settings.queue_name("log"), 1, 0, 0)
    assert log["dead_letter"]["name"] == settings.queue_name("log") + "_dlq"
    assert log["dead_letter"]["visible"] == 0


async def test_sqs_unreachable_is_503_with_retry_after_and_not_ready(api_client: Any, sqs_server: SQSServer) -> None:
    # Given SQS stops answering
    sqs_server.pause()
    try:
        # When a message is posted and readiness is asked
        response = await api_client.post("/messages", json={"type": "log", "payload": {"message": "x"}})
        ready = await api_client.get("/readyz")
    finally:
        sqs_server.resume()
    # Then both say 503 with Retry-After, and the message answer says SQS did not take it
    body = await problem(response, 503)
    assert body["title"] == "Service Unavailable"
    assert body["detail"].startswith("SQS did not accept the message:")
    assert response.headers["Retry-After"] == "1"
    await problem(ready, 503)
    assert ready.headers["Retry-After"] == "5"
    # And once SQS is back, the API is too, without a restart
    assert (await api_client.post("/messages", json={"type": "log", "payload": {"message": "y"}})).status == 202
