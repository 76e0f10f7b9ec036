"""The operations console's server side: /ui and its headers, API keys with roles, the shared depth
sampler behind /console/overview, filtered dead-letter listings, delete by id, and validation
without sending. The browser drives it in tests/test_console_browser.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any

import pytest

from api import access, keys
from api.app import create_app
from api.console.sampler import SAMPLER
from queue_manager.settings import Settings
from tests.support import dead_letter, problem, queue_depth, queued_ids

pytestmark = pytest.mark.api

KEYS = ("ops:operator-secret:operator", "watch:viewer-secret:viewer", "legacy-bare-key")
OPERATOR = {"Authorization": "Bearer operator-secret"}
VIEWER = {"Authorization": "Bearer viewer-secret"}
LEGACY = {"Authorization": "Bearer legacy-bare-key"}


@pytest.fixture
async def keyed(aiohttp_client: Any, settings: Settings) -> Any:
    """The API with an operator, a viewer and a bare (old-form) key."""
    return await aiohttp_client(create_app(dataclasses.replace(settings, api_keys=KEYS)))


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
def test_keys_are_name_key_role_or_a_bare_key_that_is_an_operator() -> None:
    parsed = access.parse_keys(["ops:s1:operator", "watch:s2:viewer", "plain", "a:b:admin", "x:y", ":k:viewer"])
    assert parsed == [
        access.ApiKey("ops", "s1", "operator"),
        access.ApiKey("watch", "s2", "viewer"),
        access.ApiKey("key#2", "plain", "operator"),
        # not the three-part form with a known role: the whole entry is a bare key, as before roles
        access.ApiKey("key#3", "a:b:admin", "operator"),
        access.ApiKey("key#4", "x:y", "operator"),
        access.ApiKey("key#5", ":k:viewer", "operator"),
    ]


async def test_the_keys_file_takes_both_forms_too(aiohttp_client: Any, settings: Settings, tmp_path: Any) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text("# the on-call dashboard\nboard:board-secret:viewer\nold-style-key\n")
    client = await aiohttp_client(create_app(dataclasses.replace(settings, api_keys_file=keys_file)))
    viewer = {"Authorization": "Bearer board-secret"}
    assert (await (await client.get("/console/session", headers=viewer)).json())["role"] == "viewer"
    await problem(await client.post("/queues/log/redrive", json={}, headers=viewer), 403)
    operator = {"Authorization": "Bearer old-style-key"}
    assert (await client.post("/queues/log/redrive", json={}, headers=operator)).status == 200


async def test_a_viewer_reads_but_its_changes_are_403_problems(keyed: Any) -> None:
    # A viewer reads what anyone reads
    for path in ("/queues", "/queues/log/dead-letters", "/console/overview", "/schemas"):
        assert (await keyed.get(path, headers=VIEWER)).status == 200, path
    # But every change is refused, with a problem naming the key and the role it needs
    for path, body in (
        ("/queues/log/redrive", {}),
        ("/queues/log/dead-letters/delete", {"ids": ["x"]}),
        ("/messages", {"type": "log", "payload": {"message": "hi"}}),
        ("/messages/batch", {"messages": [{"type": "log", "payload": {"message": "hi"}}]}),
        ("/console/validate", {"type": "log", "payload": {"message": "hi"}}),
    ):
        refused = await problem(await keyed.post(path, json=body, headers=VIEWER), 403)
        assert refused["type"] == "urn:queue-manager:problem:forbidden"
        assert "'watch' is a viewer's" in refused["detail"] and "operator" in refused["detail"]
    # While an operator, and a key of the old bare form, may change things
    assert (await keyed.post("/queues/log/redrive", json={}, headers=OPERATOR)).status == 200
    assert (
        await keyed.post("/messages", json={"type": "log", "payload": {"message": "a"}}, headers=LEGACY)
    ).status == 202
    # And no key at all is still a 401
    assert (await keyed.post("/queues/log/redrive", json={})).status == 401


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_the_session_tells_the_console_the_keys_name_and_role(keyed: Any, api_client: Any) -> None:
    assert await (await keyed.get("/console/session", headers=VIEWER)).json() == {
        "auth_required": True,
        "name": "watch",
        "role": "viewer",
        "may_change": False,
    }
    assert (await (await keyed.get("/console/session", headers=LEGACY)).json())["name"] == "key#2"
    assert (await keyed.get("/console/session")).status == 401
    assert await (await api_client.get("/console/session")).json() == {
        "auth_required": False,
        "name": "anonymous",
        "role": "operator",
        "may_change": True,
    }


async def test_cross_site_requests_are_refused_but_a_link_to_the_console_opens(keyed: Any) -> None:
    cross = {**OPERATOR, "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors"}
    await problem(await keyed.post("/queues/log/redrive", json={}, headers=cross), 403)
    await problem(await keyed.get("/queues", headers=cross), 403)
    navigate = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert (await keyed.get("/ui", headers=navigate)).status == 200
    same = {**OPERATOR, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert (await keyed.get("/queues", headers=same)).status == 200


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_the_console_page_is_open_with_a_strict_policy_and_its_data_is_not(keyed: Any) -> None:
    page = await keyed.get("/ui")
    assert page.status == 200
    assert page.content_type == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = await page.text()
    assert '<script src="/ui/static/app.js" defer></script>' in html
    assert "<script>" not in html and " style=" not in html  # nothing inline for the policy to allow
    for name, media_type in (("app.js", "text/javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        asset = await keyed.get(f"/ui/static/{name}")
        assert asset.status == 200 and asset.content_type == media_type, name
    await problem(await keyed.get("/ui/static/..%2F..%2Fapp.py"), 404)
    await problem(await keyed.get("/ui/static/secret.txt"), 404)
    assert (await keyed.get("/console/overview")).status == 401


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_the_index_links_to_the_console(api_client: Any) -> None:
    links = await (await api_client.get("/")).json()
    assert links["links"]["console"] == "/ui"
    html = await (await api_client.get("/", headers={"Accept": "text/html"})).text()
    assert '<a href="/ui">Operations console</a>' in html


async def test_the_overview_shows_the_depths_queues_reports_from_one_shared_poller(
    aiohttp_client: Any, settings: Settings, sqs: Any
) -> None:
    # Given the API with a half-second sampler, and three delayed log messages
    client = await aiohttp_client(create_app(dataclasses.replace(settings, console_sample_seconds=0.5)))
    app = client.server.app
    for _ in range(3):
        body = {"type": "log", "payload": {"message": "later"}, "delay_seconds": 600}
        assert (await client.post("/messages", json=body)).status == 202
    broker = app[keys.BROKER]
    before = broker.request_counts()
    # When eight viewers poll the overview for two seconds
    started = time.monotonic()

    async def viewer() -> list[dict[str, Any]]:
        seen = []
        while time.monotonic() - started < 2.0:
            seen.append(await (await client.get("/console/overview")).json())
        return seen

    answers = [a for seen in await asyncio.gather(*(viewer() for _ in range(8))) for a in seen]
    after = broker.request_counts()
    sampler = app[SAMPLER]
    assert 2 <= sampler.samples_taken <= (time.monotonic() - started) / 0.5 + 1
    # Then the overview shows what /queues reports
    queues = {q["type"]: q for q in (await (await client.get("/queues")).json())["queues"]}
    log = next(t for t in answers[-1]["types"] if t["type"] == "log")
    assert log["counts"] == {k: queues["log"][k] for k in ("visible", "in_flight", "delayed")}
    assert log["counts"]["delayed"] == 3
    assert log["dead_letter_counts"] == {
        k: queues["log"]["dead_letter"][k] for k in ("visible", "in_flight", "delayed")
    }
    assert (
        log["queue"] == settings.queue_name("log") and log["dead_letter_queue"] == settings.queue_name("log") + "_dlq"
    )
    assert sampler.sent["log"] == 3
    # And however many viewers, SQS was asked once per queue and dead-letter queue per interval, and never received from
    types = len(app[keys.REGISTRY].types)
    elapsed = time.monotonic() - started
    calls = after.get("GetQueueAttributes", 0) - before.get("GetQueueAttributes", 0)
    assert 2 * types * 2 <= calls <= 2 * types * (elapsed / 0.5 + 1)
    assert after.get("ReceiveMessage", 0) == before.get("ReceiveMessage", 0)
    assert queue_depth(sqs, settings.queue_name("log"))["delayed"] == 3
    # And a rate once two samples are close enough to make one (on a loaded machine a sample can come
    # more than three intervals after the one before, and a rate across such a gap is left out)
    deadline = time.monotonic() + 10
    while log["in_per_second"] is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        log = next(t for t in (await (await client.get("/console/overview")).json())["types"] if t["type"] == "log")
    assert log["in_per_second"] is not None and log["in_per_second"] >= 0
    # And the history has a point per sample: at, visible, in flight, delayed, dead letters
    assert len(log["history"]) >= 2 and log["history"][-1][1:] == [0, 0, 3, 0]


async def test_a_viewer_with_the_newest_sample_waits_for_the_next(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, console_sample_seconds=0.5)))
    first = await (await client.get("/console/overview")).json()
    assert first["sampled_at"] is not None
    started = time.monotonic()
    second = await (await client.get(f"/console/overview?after={first['sampled_at']}")).json()
    assert second["sampled_at"] > first["sampled_at"]
    assert time.monotonic() - started < 1.5
    await problem(await client.get("/console/overview?after=soon"), 422)


@pytest.mark.one_server  # makes no SQS request but its API's start-up (counted on moto server)
async def test_nobody_watching_means_no_sqs_requests(aiohttp_client: Any, settings: Settings) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, console_sample_seconds=0.5)))
    broker = client.server.app[keys.BROKER]
    before = broker.request_counts().get("GetQueueAttributes", 0)
    await asyncio.sleep(1.2)  # the API idles: the sampler has not started
    assert broker.request_counts().get("GetQueueAttributes", 0) == before
    assert client.server.app[SAMPLER].samples_taken == 0


async def test_dead_letters_are_filtered_by_error_id_and_age_with_payloads(
    api_client: Any, sqs: Any, settings: Settings
) -> None:
    app = api_client.server.app
    timeouts = await asyncio.to_thread(
        dead_letter, app, sqs, settings, {"message": "a"}, {"message": "b"}, error="Timeout: slow"
    )
    refused = await asyncio.to_thread(dead_letter, app, sqs, settings, {"message": "c"}, error="PermanentFailure: 400")
    # By error text, case-insensitively: every match's id, and the payload when asked
    body = await (await api_client.get("/queues/log/dead-letters?error=timeout&payload=true&limit=1")).json()
    assert body["matched"] == 2 and sorted(body["matched_ids"]) == sorted(timeouts)
    assert body["count"] == 1 and body["scanned"] == 3
    assert body["messages"][0]["payload"] in ({"message": "a"}, {"message": "b"})
    # By id
    body = await (await api_client.get(f"/queues/log/dead-letters?id={refused[0][:8]}")).json()
    assert body["matched_ids"] == refused and "payload" not in body["messages"][0]
    # By age: all are new
    body = await (await api_client.get("/queues/log/dead-letters?older_than_seconds=3600")).json()
    assert body["matched"] == 0
    body = await (await api_client.get("/queues/log/dead-letters?newer_than_seconds=3600&limit=500")).json()
    assert body["matched"] == 3
    # Nothing left the queue or stayed hidden
    assert queue_depth(sqs, settings.queue_name("log") + "_dlq") == {"visible": 3, "in_flight": 0, "delayed": 0}


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize(
    "query", ["older_than_seconds=-1", "newer_than_seconds=x", "scan=0", "scan=1001", "limit=1001&scan=5", "limit=101"]
)
async def test_a_bad_filter_is_422(api_client: Any, query: str) -> None:
    await problem(await api_client.get(f"/queues/log/dead-letters?{query}"), 422)


async def test_delete_removes_exactly_the_ids_asked_and_is_audited_by_key_name(
    aiohttp_client: Any, sqs: Any, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, api_keys=KEYS)))
    ids = await asyncio.to_thread(
        dead_letter, client.server.app, sqs, settings, *({"message": str(i)} for i in range(4))
    )
    # A peek first: its receipt handles are stale by the time of the delete, and are never used
    assert (await client.get("/queues/log/dead-letters", headers=OPERATOR)).status == 200
    with caplog.at_level(logging.INFO, logger="queue_manager.audit"):
        response = await client.post(
            "/queues/log/dead-letters/delete", json={"ids": [ids[0], ids[2], "no-such-id"]}, headers=OPERATOR
        )
    assert response.status == 200
    result = await response.json()
    assert sorted(result["ids"]) == sorted([ids[0], ids[2]])
    assert result["deleted"] == 2 and result["not_found"] == ["no-such-id"] and result["failed"] == []
    dlq = settings.queue_name("log") + "_dlq"
    assert sorted(await asyncio.to_thread(queued_ids, sqs, dlq)) == sorted([ids[1], ids[3]])
    assert [r.getMessage() for r in caplog.records if r.name == "queue_manager.audit"] == [
        f"who=ops what=delete queue={dlq} count=2."
    ]


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
@pytest.mark.parametrize("body", [{}, {"ids": []}, {"ids": "x"}, {"ids": ["a"], "all": True}])
async def test_a_bad_delete_body_is_422(api_client: Any, body: Any) -> None:
    await problem(await api_client.post("/queues/log/dead-letters/delete", json=body), 422)


async def test_validate_answers_the_violations_and_sends_nothing(api_client: Any, sqs: Any, settings: Settings) -> None:
    bad = {"type": "webhook", "payload": {"url": "ftp://nope"}, "delay_seconds": 9999}
    verdict = await (await api_client.post("/console/validate", json=bad)).json()
    assert verdict["valid"] is False and verdict["status"] == 422
    paths = {e["path"] for e in verdict["errors"]}
    assert {"/payload/url", "/payload", "/delay_seconds"} <= paths
    good = {"type": "log", "payload": {"message": "hi"}}
    assert await (await api_client.post("/console/validate", json=good)).json() == {"valid": True}
    assert queue_depth(sqs, settings.queue_name("log")) == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert queue_depth(sqs, settings.queue_name("webhook")) == {"visible": 0, "in_flight": 0, "delayed": 0}


@pytest.mark.one_server  # makes no SQS request while it runs (counted on moto server)
async def test_the_openapi_document_describes_the_console_endpoints(api_client: Any) -> None:
    document = await (await api_client.get("/openapi.json")).json()
    for path, method in (
        ("/console/overview", "get"),
        ("/console/session", "get"),
        ("/console/validate", "post"),
        ("/queues/{name}/dead-letters/delete", "post"),
        ("/ui", "get"),
    ):
        assert method in document["paths"][path], path
    listing = document["paths"]["/queues/{name}/dead-letters"]["get"]
    assert {"error", "id", "older_than_seconds", "newer_than_seconds", "scan", "payload"} <= {
        p["name"] for p in listing["parameters"]
    }
    assert "403" in document["paths"]["/queues/{name}/redrive"]["post"]["responses"]


async def test_messages_sent_while_watched_show_as_messages_in_per_second(
    aiohttp_client: Any, settings: Settings
) -> None:
    client = await aiohttp_client(create_app(dataclasses.replace(settings, console_sample_seconds=0.5)))
    await client.get("/console/overview")
    for _ in range(5):
        assert (
            await client.post("/messages", json={"type": "log", "payload": {"message": "x"}, "delay_seconds": 600})
        ).status == 202

    async def rate() -> float:
        body = await (await client.get("/console/overview")).json()
        return float(next(t for t in body["types"] if t["type"] == "log")["in_per_second"] or 0)

    samples: list[float] = []

    async def positive() -> bool:
        samples.append(await rate())
        return samples[-1] > 0

    deadline = time.monotonic() + 5
    while not await positive():
        assert time.monotonic() < deadline, samples
        await asyncio.sleep(0.2)
    # Delayed messages stay: nothing went out
    body = await (await client.get("/console/overview")).json()
    assert next(t for t in body["types"] if t["type"] == "log")["out_per_second"] == 0


async def test_the_chart_history_survives_a_restart(aiohttp_client: Any, settings: Settings, tmp_path: Any) -> None:
    # Given an API that kept state in QM_STATE_DIR and sampled for a while
    kept = dataclasses.replace(settings, console_sample_seconds=0.5, state_dir=tmp_path)
    first = await aiohttp_client(create_app(kept))
    seen = await (await first.get("/console/overview")).json()
    seen = await (await first.get(f"/console/overview?after={seen['sampled_at']}")).json()
    before = next(t for t in seen["types"] if t["type"] == "log")["history"]
    assert len(before) >= 2
    # When it stops and starts again
    await first.close()
    second = await aiohttp_client(create_app(kept))
    # Then the chart still has what the first run sampled, then the new samples
    after = next(t for t in (await (await second.get("/console/overview")).json())["types"] if t["type"] == "log")
    assert [p[0] for p in after["history"][: len(before)]] == [p[0] for p in before]
    assert len(after["history"]) > len(before)


@pytest.mark.one_server  # an outage made by pausing the server: the same on any implementation
async def test_while_sqs_is_unreachable_the_overview_keeps_its_history_and_says_why(
    aiohttp_client: Any, settings: Settings, sqs_server: Any
) -> None:
    # Given a console watching, with samples taken
    client = await aiohttp_client(create_app(dataclasses.replace(settings, console_sample_seconds=0.5)))
    seen = await (await client.get("/console/overview")).json()
    kept = len(seen["types"][0]["history"])
    assert seen["error"] is None and kept >= 1
    # When SQS stops answering
    sqs_server.pause()
    try:
        deadline = time.monotonic() + 20
        while seen["error"] is None:
            assert time.monotonic() < deadline, "the overview never said SQS is unreachable"
            seen = await (await client.get(f"/console/overview?after={seen['sampled_at']}")).json()
    finally:
        sqs_server.resume()
    # Then the overview still answers, with the history it had and why nothing newer came (no endpoint named)
    assert seen["error"] == "Could not read queue depths: SQS cannot be reached (ReadTimeoutError)"
    assert len(seen["types"][0]["history"]) >= kept
    assert sqs_server.url.split("//")[1] not in json.dumps(seen)
    # And once SQS answers again, so does the sampler
    deadline = time.monotonic() + 20
    while seen["error"] is not None:
        assert time.monotonic() < deadline, "the sampler did not recover"
        seen = await (await client.get(f"/console/overview?after={seen['sampled_at']}")).json()
