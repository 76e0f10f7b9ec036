"""The OpenAPI 3.1 document is valid, complete and built from the message schemas; /docs renders it offline."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from api import keys
from tests.conftest import IN_CI

pytestmark = pytest.mark.api


async def test_the_document_is_valid_openapi_3_1(api_client: Any) -> None:
    response = await api_client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    validate(document)


async def test_every_route_and_every_message_schema_is_in_the_document(api_client: Any) -> None:
    app = api_client.server.app
    document = app[keys.OPENAPI]
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and not r.resource.canonical.startswith("/docs")
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    registry = app[keys.REGISTRY]
    for message_type in registry.types:
        assert document["components"]["schemas"][f"payload.{message_type}"] == registry.schema(message_type)


async def test_every_error_a_send_can_give_is_documented(api_client: Any) -> None:
    operation = api_client.server.app[keys.OPENAPI]["paths"]["/messages"]["post"]
    assert set(operation["responses"]) == {"202", "400", "401", "413", "415", "422", "429", "503"}
    assert "Retry-After" in operation["responses"]["503"]["headers"]


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
    validator = Draft202012Validator({"$ref": "#/components/schemas/Envelope", "components": document["components"]})
    assert validator.is_valid(body) is valid


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
    for path in ("/messages", "/messages/batch", "/schemas/{type}", "/queues/{name}/redrive"):
        assert f'data-path="{path}"' in dom
    subprocess.run(
        [*command, "--window-size=1280,1600", f"--screenshot={tmp_path / 'docs.png'}", url + "/docs"],
        capture_output=True, timeout=90,
    )  # fmt: skip
    assert (tmp_path / "docs.png").stat().st_size > 10_000
