"""The OpenAPI 3.1 document is valid, complete and built from the message schemas; /docs renders it offline."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from api import keys
from schemas import Validator, same_dialect
from tests.conftest import IN_CI, ROOT

pytestmark = pytest.mark.api

#: Routes the document leaves out: the UI's assets, /docs with a trailing slash, and the copy of the
#: document swagger-ui-py serves to the UI (the same object as /openapi.json).
UNDOCUMENTED = {"/docs/", "/docs/swagger.json", "/docs/static", "/ui/", "/ui/static/{name}"}

#: The statuses README's API and error tables promise (405 and 404 on any path are the `default`).
PROMISED = {"200", "202", "207", "400", "401", "403", "404", "408", "410", "413", "415", "422", "429", "503", "default"}


def _readme_examples() -> tuple[list[Any], list[Any]]:
    """The request bodies of README's curl examples, and its problem+json examples."""
    readme = (ROOT / "README.md").read_text()
    bodies = [json.loads(b) for b in re.findall(r"-d '(\{.*?\})'", readme, flags=re.DOTALL)]
    blocks = re.findall(r"```json\n(\{.*?\})\n```", readme, flags=re.DOTALL)
    problems = [b for b in blocks if b.startswith('{"type": "urn:queue-manager:problem:')]  # not JSON lines of logs
    return bodies, [json.loads(b) for b in problems]


def _validator(document: dict[str, Any], name: str) -> Draft202012Validator:
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": document["components"]})


def _ecma_validator(document: dict[str, Any], name: str) -> Any:
    """A validator of one component that reads `pattern` as ECMA-262 does, as JSON Schema specifies.

    The components' `$schema` (all Draft 2020-12) is dropped: it would switch jsonschema back to its
    own class, whose `pattern` is Python's (`$` also matching before a final newline).
    """
    components = {k: same_dialect(v) for k, v in document["components"]["schemas"].items()}
    return Validator({"$ref": f"#/components/schemas/{name}", "components": {"schemas": components}})


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_the_document_is_valid_openapi_3_1(api_client: Any) -> None:
    response = await api_client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    validate(document)


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_every_route_and_every_message_schema_is_in_the_document(api_client: Any) -> None:
    app = api_client.server.app
    document = app[keys.OPENAPI]
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource.canonical not in UNDOCUMENTED
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    registry = app[keys.REGISTRY]
    for message_type in registry.types:
        assert document["components"]["schemas"][f"payload.{message_type}"] == registry.schema(message_type)


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_every_error_a_send_can_give_is_documented(api_client: Any) -> None:
    document = api_client.server.app[keys.OPENAPI]
    operation = document["paths"]["/messages"]["post"]
    assert set(operation["responses"]) == {
        "202", "400", "401", "403", "408", "413", "415", "422", "429", "503", "default"
    }  # fmt: skip
    assert operation["parameters"][0]["name"] == "Idempotency-Key"
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert {status for op in operations for status in op["responses"]} == PROMISED
    for op in operations:
        assert "default" in op["responses"], op["operationId"]
        for status in ("429", "503"):
            if status in op["responses"]:
                assert "Retry-After" in op["responses"][status]["headers"], (op["operationId"], status)
    open_operations = {op["operationId"] for op in operations if op.get("security") == []}
    assert open_operations == {"health", "ready", "openapi", "docs", "metrics", "console", "index"}
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key.",
    }


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_the_status_endpoint_and_where_sends_point_to_it_are_documented(api_client: Any) -> None:
    document = api_client.server.app[keys.OPENAPI]
    send = document["paths"]["/messages"]["post"]["responses"]["202"]
    assert "Location" in send["headers"]
    result = document["components"]["schemas"]["BatchResults"]["properties"]["results"]["items"]
    assert "status_url" in result["properties"]
    operation = document["paths"]["/messages/{id}"]["get"]
    assert set(operation["responses"]) == {"200", "401", "403", "404", "410", "422", "503", "default"}
    assert [p["name"] for p in operation["parameters"]] == ["id", "wait"]
    status = document["components"]["schemas"]["MessageStatus"]
    assert status["properties"]["state"]["enum"] == [
        "accepted",
        "delayed",
        "running",
        "retrying",
        "succeeded",
        "dead_lettered",
        "deduplicated",
        "failed",
    ]


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_readme_examples_validate_against_the_document(api_client: Any) -> None:
    document = api_client.server.app[keys.OPENAPI]
    bodies, problems = _readme_examples()
    assert len(bodies) >= 2 and problems
    envelope = _validator(document, "Envelope")
    for body in bodies:
        assert envelope.is_valid(body), list(envelope.iter_errors(body))
    for problem in problems:
        _validator(document, "Problem").validate(problem)


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"type": "log", "payload": {"message": "hello", "level": "info", "fields": {"user": 42}}}, True),
        ({"type": "webhook", "payload": {"url": "http://127.0.0.1:9999/hook", "body": {"order": 7}}}, True),
        ({"type": "log", "payload": {"message": "x"}, "delay_seconds": 901}, False),
        ({"type": "webhook", "payload": {"message": "x"}}, False),
    ],
)
async def test_clients_can_validate_envelopes_with_the_document(api_client: Any, body: Any, valid: bool) -> None:
    document = api_client.server.app[keys.OPENAPI]
    assert _validator(document, "Envelope").is_valid(body) is valid


#: Batch entries around every edge the envelope and payload schemas draw (all to allowed hosts:
#: the allow list is configuration, which the document describes but cannot state).
BATCH_ENTRIES: list[Any] = [
    {"type": "log", "payload": {"message": "a"}},
    {"type": "log", "payload": {"message": "a", "level": "error", "fields": {"n": [1, {"m": None}]}}},
    {"type": "log", "payload": {"message": "a"}, "delay_seconds": 900},
    {"type": "log", "payload": {"message": "a"}, "delay_seconds": 901},
    {"type": "log", "payload": {"message": "a"}, "delay_seconds": 1.0},
    {"type": "log", "payload": {"message": "a"}, "delay_seconds": "1"},
    {"type": "log", "payload": {"message": "a"}, "idempotency_key": "entry-1"},
    {"type": "log", "payload": {"message": "a"}, "idempotency_key": "entry-2\n"},
    {"type": "log", "payload": {"message": "a"}, "idempotency_key": "has space"},
    {"type": "log", "payload": {"message": ""}},
    {"type": "log", "payload": {"message": "a", "colour": "red"}},
    {"type": "log", "payload": {"message": "a"}, "extra": 1},
    {"type": "log\n", "payload": {"message": "a"}},
    {"type": "Log", "payload": {"message": "a"}},
    {"type": "sms", "payload": {}},
    {"type": "log"},
    {"payload": {"message": "a"}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": None}},
    {"type": "webhook", "payload": {"url": "https://localhost:8443/x?y=1#z", "body": [1]}},
    {"type": "webhook", "payload": {"url": "http://", "body": None}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x\r\n", "body": None}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/a b", "body": None}},
    {"type": "webhook", "payload": {"url": "ftp://127.0.0.1/x", "body": None}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x"}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": 1, "headers": {"X-A": "ok\tok"}}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": 1, "headers": {"X-A": "1\r\n2"}}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": 1, "headers": {"X-A": "\u0000"}}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": 1, "headers": {"X-A\n": "1"}}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": 1, "headers": {"X A": "1"}}},
    {"type": "webhook", "payload": {"url": "http://127.0.0.1/x", "body": 1, "headers": {"X-A": 1}}},
    5,
    None,
    [],
    "log",
]


async def test_batch_entries_are_sent_exactly_when_the_document_says_they_are_envelopes(api_client: Any) -> None:
    # Given the document's Envelope (what a batch's entries are documented to be)
    document = await (await api_client.get("/openapi.json")).json()
    envelope = _ecma_validator(document, "Envelope")
    batch = {"messages": BATCH_ENTRIES}
    assert _ecma_validator(document, "Batch").is_valid({"messages": [e for e in BATCH_ENTRIES if envelope.is_valid(e)]})
    # When every entry is posted in one batch
    response = await api_client.post("/messages/batch", json=batch)
    # Then each entry was sent if and only if the document calls it an Envelope; the others are 422s
    assert response.status == 207
    results = (await response.json())["results"]
    assert [r["index"] for r in results] == list(range(len(BATCH_ENTRIES)))
    disagreements = [
        (entry, result) for entry, result in zip(BATCH_ENTRIES, results, strict=True)
        if (result["status"] == 202) != envelope.is_valid(entry) or result["status"] not in (202, 422)
    ]  # fmt: skip
    assert disagreements == []
    assert sum(r["status"] == 202 for r in results) == 8


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    ("path", "operation"),
    [("/messages", "post"), ("/messages/batch", "post"), ("/queues/log/redrive", "post")],
)
async def test_each_body_limit_in_the_document_is_the_one_enforced_and_the_readme_states_it(
    api_client: Any, path: str, operation: str
) -> None:
    # Given the body limit the document states for an operation
    document = api_client.server.app[keys.OPENAPI]
    documented = "/queues/{name}/redrive" if path.startswith("/queues/") else path
    limit = document["paths"][documented][operation]["requestBody"]["x-max-body-bytes"]
    headers = {"Content-Type": "application/json"}
    # When a body of exactly that size, and one a byte over, are posted
    at_limit = await api_client.post(path, data=io.BytesIO(b" " * limit), headers=headers)
    over = await api_client.post(path, data=io.BytesIO(b" " * (limit + 1)), headers=headers)
    # Then the first is read (and found not to be JSON), the second refused unread, naming the limit
    assert at_limit.status == 400, await at_limit.text()
    assert over.status == 413
    assert f"larger than {limit} bytes" in (await over.json())["detail"]
    assert f"{limit:,}" in document["paths"][documented][operation]["responses"]["413"]["description"]
    # And the README names the same limit
    assert f"{limit:,}" in (ROOT / "README.md").read_text()


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_dead_letter_routes_document_the_queue_names_they_take(api_client: Any, settings: Any) -> None:
    document = api_client.server.app[keys.OPENAPI]
    names = [p for p in document["paths"]["/queues/{name}/redrive"]["post"]["parameters"] if p["name"] == "name"]
    prefix = settings.queue_prefix
    assert names[0]["schema"]["enum"] == [
        "log",
        "ordered",
        "webhook",
        *(f"{prefix}_{q}" for q in ("log", "ordered.fifo", "webhook")),
        *(f"{prefix}_{q}" for q in ("log_dlq", "ordered_dlq.fifo", "webhook_dlq")),
    ]


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_docs_are_served_from_local_assets(api_client: Any) -> None:
    page = await api_client.get("/docs")
    assert page.status == 200
    html = await page.text()
    assert "/docs/static/swagger-ui-bundle.js" in html
    assert "https://" not in html.replace("https://json-schema.org", "")
    script = await api_client.get("/docs/static/swagger-ui-bundle.js")
    assert script.status == 200
    assert len(await script.read()) > 100_000
    assert (
        await (await api_client.get("/docs/swagger.json")).json()
        == await (await api_client.get("/openapi.json")).json()
    )


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
async def test_with_api_keys_the_docs_stay_open_and_the_rest_needs_bearer_auth(
    aiohttp_client: Any, settings: Any
) -> None:
    from api.app import create_app

    client = await aiohttp_client(create_app(dataclasses.replace(settings, api_keys=("k1",))))
    document = await (await client.get("/openapi.json")).json()
    assert document["security"] == [{"bearerAuth": []}]
    for path in ("/docs", "/docs/static/swagger-ui-bundle.js", "/docs/swagger.json", "/healthz"):
        assert (await client.get(path)).status == 200, path
    refused = await client.get("/schemas")
    assert refused.status == 401
    assert refused.content_type == "application/problem+json"
    assert (await client.get("/schemas", headers={"Authorization": "Bearer k1"})).status == 200


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
def test_docs_render_the_operations_in_headless_chromium(api_process: Any, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if IN_CI:
            pytest.fail("chromium is missing: `make test` installs Debian's chromium package")
        pytest.skip("chromium is not installed")
    _, url = api_process()
    command = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
    ]  # fmt: skip
    dom = subprocess.run(
        [*command, "--dump-dom", url + "/docs"], capture_output=True, text=True, timeout=90, env={**os.environ}
    ).stdout
    # Swagger UI rendered one block per operation, from the document it fetched locally, with no warning
    assert "OAS 3.1" in dom
    assert "Warning" not in dom
    assert dom.count('class="opblock ') >= 10, dom[:2000]
    for path in ("/messages", "/messages/batch", "/schemas/{type}", "/queues/{name}/redrive", "/docs"):
        assert f'data-path="{path}"' in dom
    assert "Send up to 100 messages, each validated on its own" in dom
    subprocess.run(
        [*command, "--window-size=1280,2000", f"--screenshot={tmp_path / 'docs.png'}", url + "/docs"],
        capture_output=True, timeout=90,
    )  # fmt: skip
    assert (tmp_path / "docs.png").stat().st_size > 10_000
