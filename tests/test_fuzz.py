"""Property: whatever a client sends, the API answers a precise status, never a 500 or a traceback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from queue_manager.settings import Settings

pytestmark = pytest.mark.api

#: Every status a client can cause (401: an Authorization header that is not printable ASCII).
CLIENT_STATUSES = {200, 202, 207, 400, 401, 404, 405, 413, 415, 422}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["log", "webhook", "ordered", "nope", ""]) | json_values,
        "payload": json_values
        | st.fixed_dictionaries({"message": st.text(max_size=30)}, optional={"level": st.text(max_size=8)})
        | st.fixed_dictionaries({"url": st.sampled_from(["http://127.0.0.1:9/x", "ftp://x", "http://evil.test/"])}),
        "delay_seconds": st.integers(-5, 1000) | json_values,
        "idempotency_key": st.text(max_size=10) | json_values,
        "group_id": st.text(max_size=10) | json_values,
        "deduplication_id": st.text(max_size=10) | json_values,
        "extra": json_values,
    },
)
documents = envelopes.map(lambda d: json.dumps(d)) | st.builds(
    lambda d, depth: '{"messages": [' + "[" * depth + json.dumps(d) + "]" * depth + "]}",
    envelopes,
    st.integers(0, 1100),
)
#: Documents as a careless or hostile client encodes them: UTF-8, UTF-16, with lone surrogate escapes.
bodies = (
    documents.map(str.encode)
    | documents.map(lambda text: text.encode("utf-16"))
    | documents.map(lambda text: text.replace('"', '"\\udc80', 1).encode())
    | st.binary(max_size=64)
)
content_types = st.sampled_from(
    ["application/json", "text/plain", "", "application/merge-patch+json", "a/b; x", "application/json; charset=koi8-r"]
)
paths = st.sampled_from(
    ["/messages", "/messages/batch", "/schemas/log", "/nope", "/queues/log/dead-letters", "/queues/{queue}/redrive"]
)
methods = st.sampled_from(["POST", "GET", "PUT"])
idempotency = st.none() | st.text(max_size=12)
#: Authorization values; http.client sends each character as one Latin-1 byte, so most are not UTF-8.
authorizations = st.none() | st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=16).map(
    lambda text: "Bearer " + text
)


@pytest.fixture
def fuzz_api(api_process: Any, settings: Settings) -> str:
    return str(api_process()[1])


@pytest.fixture
def log_queue(settings: Settings) -> str:
    return settings.queue_name("log")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=methods, path=paths, body=bodies, content_type=content_types, key=idempotency, auth=authorizations)
def test_no_request_gets_a_server_error(
    fuzz_api: str,
    log_queue: str,
    method: str,
    path: str,
    body: bytes,
    content_type: str,
    key: str | None,
    auth: str | None,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    if key is not None and key.isascii() and key.isprintable():
        headers["Idempotency-Key"] = key
    if auth is not None:
        headers["Authorization"] = auth
    request = urllib.request.Request(
        fuzz_api + path.format(queue=log_queue), data=body if method != "GET" else None, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, raw, media = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, raw, media = error.code, error.read(), error.headers.get_content_type()
    assert status in CLIENT_STATUSES, (status, raw[:300])
    document = json.loads(raw)
    if status >= 400:
        assert media == "application/problem+json"
        assert document["status"] == status
        assert document["detail"]
