"""The Python client and the `qm` CLI against a real `qm-api` process: local validation with the
server's rules, sends, retries that honour Retry-After, and the command's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from queue_manager.client import QMClient, Unavailable, ValidationFailed
from queue_manager.settings import Settings
from tests.conftest import ROOT, SQSServer
from tests.support import post_json, queue_depth, queued_ids, wait_for

pytestmark = pytest.mark.api

BAD_LOG = {"level": "loud"}


def qm(url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI as users do: a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-m", "queue_manager.client.cli", "--url", url, *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_local_validation_matches_the_server_and_needs_no_request(api_process: Any) -> None:
    # Given a client that has fetched the log schema, and the server's own verdict on a bad payload
    proc, url = api_process()
    client = QMClient(url)
    assert client.validate("log", {"message": "fine"}) == []
    status, refused = post_json(url + "/messages", {"type": "log", "payload": BAD_LOG}, timeout=10)
    assert status == 422, refused
    server_errors = refused["errors"]
    # When the API is gone and the client is asked to send the bad payload
    proc.kill_all()
    proc.wait(timeout=10)
    with pytest.raises(ValidationFailed) as failed:
        client.send("log", BAD_LOG)
    # Then it was refused locally, with exactly the server's violations
    assert [v.as_dict() for v in failed.value.violations] == server_errors
    # And an unknown type is caught locally too, as the server words it
    with pytest.raises(ValidationFailed) as unknown:
        client.send("nope", {})
    assert unknown.value.violations[0].path == "/type"


def test_send_and_send_batch_put_messages_on_the_queue(api_process: Any, settings: Settings, sqs: Any) -> None:
    _, url = api_process()
    client = QMClient(url)
    one = client.send("log", {"message": "one"}, delay_seconds=0, idempotency_key="k-1")
    again = client.send("log", {"message": "one"}, idempotency_key="k-1")
    batch = client.send_batch([{"type": "log", "payload": {"message": str(i)}} for i in range(3)])
    assert again["id"] == one["id"]
    assert [r["status"] for r in batch["results"]] == [202] * 3
    expected = [one["id"], *(r["id"] for r in batch["results"])]
    assert sorted(queued_ids(sqs, settings.queue_name("log"))) == sorted(expected)


def test_an_invalid_entry_stops_the_whole_batch_before_sending(api_process: Any, settings: Settings, sqs: Any) -> None:
    _, url = api_process()
    client = QMClient(url)
    with pytest.raises(ValidationFailed) as failed:
        client.send_batch([{"type": "log", "payload": {"message": "ok"}}, {"type": "log", "payload": BAD_LOG}])
    assert {v.path for v in failed.value.violations} == {"/messages/1/payload", "/messages/1/payload/level"}
    assert queue_depth(sqs, settings.queue_name("log"))["visible"] == 0


def test_a_503_is_retried_after_its_retry_after(
    api_process: Any, settings: Settings, sqs: Any, sqs_server: SQSServer
) -> None:
    # Given an API that answers 503 within a second while SQS is stopped
    _, url = api_process(env={"QM_SQS_TIMEOUT_SECONDS": "1", "QM_REQUEST_TIMEOUT_SECONDS": "1"})
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    client = QMClient(url, max_attempts=10, max_retry_seconds=20, sleep=sleep)
    client.types()  # the schemas come from the API alone, not SQS
    client.validator("log")
    result: dict[str, Any] = {}
    sqs_server.pause()
    try:
        sender = threading.Thread(target=lambda: result.update(client.send("log", {"message": "patient"})))
        sender.start()
        # When SQS comes back after a couple of 503s
        wait_for(lambda: len(waits) >= 2, timeout=10, what="two 503s")
    finally:
        sqs_server.resume()
    sender.join(timeout=20)
    # Then the client waited as Retry-After said (1 s) between attempts, and the message got through
    assert result.get("id"), result
    assert waits and all(w == 1.0 for w in waits), waits
    assert result["id"] in queued_ids(sqs, settings.queue_name("log"))


def test_retries_stop_at_the_attempt_limit(api_process: Any, sqs_server: SQSServer) -> None:
    _, url = api_process(env={"QM_SQS_TIMEOUT_SECONDS": "1", "QM_REQUEST_TIMEOUT_SECONDS": "1"})
    waits: list[float] = []
    client = QMClient(url, max_attempts=2, sleep=waits.append)
    client.validator("log")
    sqs_server.pause()
    try:
        with pytest.raises(Unavailable) as gave_up:
            client.send("log", {"message": "never"})
    finally:
        sqs_server.resume()
    assert gave_up.value.status == 503
    assert waits == [1.0]


def test_the_cli_sends_lists_and_tends_dead_letters(
    api_process: Any, settings: Settings, sqs: Any, tmp_path: Path
) -> None:
    _, url = api_process()
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"message": "from the cli"}))
    bad.write_text(json.dumps(BAD_LOG))
    lines = tmp_path / "batch.jsonl"
    lines.write_text("\n".join(json.dumps({"type": "log", "payload": {"message": str(i)}}) for i in range(2)))

    sent = qm(url, "send", "log", str(good), "--delay", "0")
    assert sent.returncode == 0, sent.stderr
    refused = qm(url, "send", "log", str(bad))
    assert refused.returncode == 2
    assert "/payload/level" in refused.stderr and "Nothing was sent" in refused.stderr
    batch = qm(url, "send-batch", str(lines))
    assert batch.returncode == 0, batch.stderr
    ids = [json.loads(sent.stdout)["id"], *(r["id"] for r in json.loads(batch.stdout)["results"])]
    assert sorted(queued_ids(sqs, settings.queue_name("log"))) == sorted(ids)

    schemas = qm(url, "schemas")
    assert {t["type"] for t in json.loads(schemas.stdout)["types"]} == {"log", "ordered", "webhook"}
    assert json.loads(qm(url, "schemas", "log").stdout)["type"] == "object"
    listing = qm(url, "dlq", "list")
    assert listing.returncode == 0 and "webhook" in listing.stdout
    shown = qm(url, "dlq", "show", "log", "--limit", "5")
    assert shown.returncode == 0 and json.loads(shown.stdout)["messages"] == []
    redriven = qm(url, "dlq", "redrive", "log", "--id", "nope")
    assert json.loads(redriven.stdout)["not_found"] == ["nope"]
    assert qm(url, "dlq", "show", "nope").returncode == 1
    assert "exit codes" in qm(url, "--help").stdout


def test_the_cli_says_when_the_api_cannot_be_reached(tmp_path: Path) -> None:
    from tests.support import free_port

    result = qm(f"http://127.0.0.1:{free_port()}", "--attempts", "2", "schemas")
    assert result.returncode == 3
    assert "unavailable" in result.stderr
    assert "cannot reach" in result.stderr


def test_the_client_imports_no_server_module() -> None:
    # When the client and its CLI are imported in a fresh interpreter
    probe = (
        "import sys, queue_manager.client, queue_manager.client.cli;"
        "server = ('api', 'actors', 'broker', 'dramatiq', 'dramatiq_sqs', 'boto3', 'botocore', 'aiohttp');"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in server"
        " or m.startswith('queue_manager.sqs') or m == 'queue_manager.settings'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    # Then nothing of the API, the workers or the SQS machinery was loaded
    assert done.stdout.strip() == "[]"


def test_envelope_rules_come_from_the_server_and_are_checked_locally(api_process: Any) -> None:
    # Given a client that has talked to the API once, and the server's verdict on a bad envelope
    proc, url = api_process()
    client = QMClient(url)
    assert client.validate("log", {"message": "fine"}) == []
    bad = {"type": "log", "payload": {"message": "hi"}, "delay_seconds": 901, "colour": "red"}
    status, refused = post_json(url + "/messages", bad, timeout=10)
    assert status == 422, refused
    server_errors = refused["errors"]
    proc.kill_all()
    proc.wait(timeout=10)
    # When the API is gone and the client checks the same envelope
    local = client.envelope_violations(bad)
    # Then it finds the same fields wrong, for the same reasons
    assert {(v.path, v.keyword) for v in local} == {(e["path"], e["keyword"]) for e in server_errors}
    assert client.max_batch_messages() == 100


#: Envelopes that break their envelope's rules and their payload's at once.
BROKEN_TWICE = [
    pytest.param({"type": "log", "delay_seconds": -1, "payload": BAD_LOG}, id="log-negative-delay-bad-level"),
    pytest.param({"type": "ordered", "payload": {"url": "http://127.0.0.1:9/x"}}, id="ordered-no-group-no-body"),
]


@pytest.mark.parametrize("document", BROKEN_TWICE)
def test_the_client_reports_envelope_and_payload_violations_together_as_the_api_does(
    api_process: Any, document: dict[str, Any]
) -> None:
    # Given the API's one answer to an envelope that breaks both its own rules and its payload's
    _, url = api_process()
    status, answer = post_json(url + "/messages", document)
    assert status == 422, answer
    # When the client is asked to send the same message
    client = QMClient(url)
    with pytest.raises(ValidationFailed) as failed:
        client.send(document["type"], document["payload"], delay_seconds=document.get("delay_seconds"))
    # Then it refuses it locally with the API's words: the same detail, the same violations in the same order
    assert failed.value.detail == answer["detail"]
    assert [v.as_dict() for v in failed.value.violations] == answer["errors"]
    assert {e["path"].split("/")[1] for e in answer["errors"]} >= {"payload"}
    assert len({e["path"].split("/")[1] for e in answer["errors"]}) == 2  # the envelope's field and the payload


def test_the_cli_tells_envelope_errors_from_payload_errors_and_says_nothing_was_sent_once(
    api_process: Any, settings: Settings, sqs: Any, tmp_path: Path
) -> None:
    _, url = api_process()
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps({"message": "fine"}))
    bad.write_text(json.dumps(BAD_LOG))
    # An envelope error is the envelope's, not the payload's
    envelope = qm(url, "send", "log", str(good), "--delay", "-1")
    assert envelope.returncode == 2, envelope.stderr
    assert envelope.stderr.splitlines()[0] == "qm: The envelope is not valid for a 'log' message. Nothing was sent."
    assert "  /delay_seconds: -1 is less than the minimum of 0 (minimum)" in envelope.stderr.splitlines()
    # Both at once are named together
    both = qm(url, "send", "log", str(bad), "--delay", "-1")
    assert both.returncode == 2, both.stderr
    assert both.stderr.splitlines()[0] == (
        "qm: The envelope and the payload are not valid for a 'log' message. Nothing was sent."
    )
    assert [line.split(":")[0].strip() for line in both.stderr.splitlines()[1:]] == [
        "/delay_seconds",
        "/payload",
        "/payload/level",
    ]
    # A batch with an invalid entry says once that nothing was sent
    batch = tmp_path / "batch.json"
    batch.write_text(json.dumps([{"type": "log", "payload": {"message": "ok"}}, {"type": "log", "payload": BAD_LOG}]))
    refused = qm(url, "send-batch", str(batch))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.lower().count("nothing was sent") == 1, refused.stderr
    assert refused.stderr.splitlines()[0] == "qm: 1 of the 2 messages is not valid. Nothing was sent."
    assert queue_depth(sqs, settings.queue_name("log"))["visible"] == 0


def test_a_redrive_of_an_unknown_id_exits_non_zero(api_process: Any) -> None:
    # Given an API whose log dead-letter queue does not hold the id asked for
    _, url = api_process()
    # When `qm dlq redrive` is asked to move it
    redriven = qm(url, "dlq", "redrive", "log", "--id", "nope")
    # Then the answer is still printed, but the exit status tells a script that not everything moved
    assert json.loads(redriven.stdout)["not_found"] == ["nope"]
    assert redriven.returncode == 1, redriven.stderr
    assert "nope" in redriven.stderr
    assert "redrive" in qm(url, "--help").stdout.split("exit codes")[1]


def test_a_batch_of_chunks_never_sends_an_entry_of_a_fifo_group_after_one_that_was_refused(
    api_process: Any, settings: Settings, sqs: Any
) -> None:
    # Given 150 ordered entries in two groups, sent in two chunks of at most 100, unchecked by the
    # client: entry 10 (group a) is refused by the API in the first chunk, entry 121 (group b) in the second
    _, url = api_process()
    client = QMClient(url)
    hook = "http://127.0.0.1:9/never-called"
    items: list[dict[str, Any]] = [
        {"type": "ordered", "group_id": "ab"[i % 2], "payload": {"url": hook, "body": {"n": i}}} for i in range(150)
    ]
    items[10]["payload"] = {"url": hook}
    items[121]["payload"] = {"url": hook}
    # When the batch is sent
    results = client.send_batch(items, validate=False)["results"]
    # Then each group is sent up to its refused entry, and nothing of it after, in either chunk
    assert [r["index"] for r in results] == list(range(150))
    statuses = {r["index"]: r["status"] for r in results}
    assert statuses[10] == statuses[121] == 422
    held = {r["index"]: r["waits_on"] for r in results if r["status"] == 424}
    assert held == {**{i: 10 for i in range(12, 150, 2)}, **{i: 121 for i in range(123, 150, 2)}}
    assert "entry 121 of group 'b'" in results[149]["detail"] and "entry 10 of group 'a'" in results[148]["detail"]
    sent = [i for i, s in statuses.items() if s == 202]
    assert sent == sorted([*range(0, 10, 2), *range(1, 121, 2)])
    assert queue_depth(sqs, settings.queue_name("ordered") + ".fifo")["visible"] == len(sent)
