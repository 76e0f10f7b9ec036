"""The deployment files agree with each other and with what the code does."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from queue_manager.settings import Settings
from tests.conftest import ROOT, Proc, Receiver
from tests.support import post_json, queue_depth, wait_for

#: SQS actions and the IAM action that authorises each (batches use the single-message permission).
IAM_ACTION = {
    "SendMessageBatch": "sqs:SendMessage",
    "DeleteMessageBatch": "sqs:DeleteMessage",
    "ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    # Large messages: S3 requests are counted as `s3:<Action>`; DeleteObjects needs s3:DeleteObject.
    "s3:DeleteObjects": "s3:DeleteObject",
}


def supervisord_programs() -> dict[str, dict[str, str]]:
    parser = configparser.RawConfigParser()
    parser.read(ROOT / "supervisord.conf")
    return {s.split(":", 1)[1]: dict(parser[s]) for s in parser.sections() if s.startswith("program:")}


def test_compose_runs_the_same_programs_as_supervisord() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    programs = supervisord_programs()
    assert set(compose["services"]) == set(programs) == {"sqs", "api", "worker"}
    # The worker runs the same command with the same shutdown timeout, and gets as long to drain
    worker_command = shlex.split(programs["worker"]["command"].split("exec ", 1)[1].rstrip("'"))
    dramatiq_at = next(i for i, arg in enumerate(worker_command) if arg.endswith("/dramatiq"))
    dramatiq_args = worker_command[dramatiq_at + 1 :]
    compose_worker = compose["services"]["worker"]["command"]
    assert compose_worker[compose_worker.index("dramatiq") + 1 :] == dramatiq_args
    assert compose["services"]["worker"]["stop_grace_period"] == f"{programs['worker']['stopwaitsecs']}s"
    assert compose["services"]["api"]["stop_grace_period"] == f"{programs['api']['stopwaitsecs']}s"
    # Both wait for SQS before starting, and publish on loopback only
    for name in ("api", "worker"):
        assert compose["services"][name]["command"][:3] == ["python", "-m", "queue_manager.sqs.wait"]
        assert compose["services"][name]["depends_on"]["sqs"]["condition"] == "service_healthy"
    for service in compose["services"].values():
        assert all(str(p).startswith("127.0.0.1:") for p in service.get("ports", []))


def test_the_api_keeps_its_idempotency_keys_on_a_volume_in_compose_as_under_supervisord() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    app_stage = dockerfile[dockerfile.index("AS app") :]
    # The image points QM_STATE_DIR at /state, owned by its user, and compose mounts a named volume there
    assert "QM_STATE_DIR=/state" in app_stage
    assert "chown qm /state" in app_stage
    api = compose["services"]["api"]
    assert "api-state:/state" in api["volumes"]
    assert "api-state" in compose["volumes"]
    # supervisord keeps them under .state as well
    assert 'QM_STATE_DIR="${QM_STATE_DIR:-%(here)s/.state/api}"' in (ROOT / "supervisord.conf").read_text()
    # and the workers share that folder, where they publish their workload for GET /scaling
    assert "api-state:/state" in compose["services"]["worker"]["volumes"]
    programs = (ROOT / "supervisord.conf").read_text().split("[program:worker]", 1)[1]
    worker_command = next(line for line in programs.splitlines() if line.startswith("command="))
    assert 'QM_STATE_DIR="${QM_STATE_DIR:-%(here)s/.state/api}"' in worker_command


def test_dockerfile_is_multi_stage_non_root_with_healthchecks() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 3
    assert [line for line in lines if line.startswith("USER ")] == ["USER 10001", "USER 10001"]
    assert sum(line.startswith("HEALTHCHECK ") for line in lines) == 2
    assert 'CMD ["qm-api"]' in lines


@pytest.mark.e2e
def test_the_iam_policy_allows_every_sqs_action_a_run_makes(
    api_process: Callable[..., tuple[Proc, str]],
    worker_process: Callable[..., Proc],
    receiver: Receiver,
    settings: Settings,
    sqs: Any,
    sqs_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # Given an API and a worker that record the SQS (and S3) actions they make
    import urllib.request

    stats = tmp_path / "stats"
    # (with large messages on: a bucket of the test's own, named as the policy's resource is)
    bucket = boto3.client("s3", endpoint_url=sqs_env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1")
    bucket_name = f"{settings.queue_prefix}-payloads"
    bucket.create_bucket(Bucket=bucket_name)
    env = {"QM_STATS_DIR": str(stats), "QM_PAYLOAD_BUCKET": bucket_name}
    api, url = api_process(env=env)
    worker = worker_process(threads=2, env=env)
    receiver.statuses["/flaky"] = [500, 200]
    receiver.statuses["/gone"] = [404]

    def post(document: dict[str, Any], path: str = "/messages") -> None:
        status, answer = post_json(url + path, document, timeout=10)
        assert status == 202, answer

    # When messages take every path: success, retry, dead letter, batch, depth reads
    post({"type": "webhook", "payload": {"url": receiver.url("/flaky"), "body": 1}})
    post({"type": "webhook", "payload": {"url": receiver.url("/gone"), "body": 2}})
    post({"messages": [{"type": "log", "payload": {"message": "x"}}] * 3}, "/messages/batch")
    post({"type": "webhook", "payload": {"url": receiver.url("/big"), "body": "x" * 2_000_000}})  # through S3
    with urllib.request.urlopen(url + "/queues", timeout=10) as response:
        assert response.status == 200
    wait_for(
        lambda: len(receiver.to("/flaky")) == 2 and receiver.to("/gone") and receiver.to("/big"),
        timeout=30,
        what="all paths",
    )
    empty = {"visible": 0, "in_flight": 0, "delayed": 0}
    wait_for(
        lambda: (
            queue_depth(sqs, settings.queue_name("webhook")) == empty
            and queue_depth(sqs, settings.queue_name("log")) == empty
            and queue_depth(sqs, settings.queue_name("webhook") + "_dlq")["visible"] == 1
            and not bucket.list_objects_v2(Bucket=bucket_name).get("Contents")  # the large one's, deleted after its ack
        ),
        timeout=30,
        what="every message done: acknowledged, or dead-lettered",
    )
    worker.signal(15)
    worker.wait(timeout=40)
    api.signal(15)
    api.wait(timeout=40)
    # Then every action they made is allowed by deploy/iam-policy.json
    actions: set[str] = set()
    for path in stats.glob("*.json"):
        actions |= set(json.loads(path.read_text())["sqs_requests"])
    # (a batch of one goes as SendMessage, and on a busy machine the batch's three may each go alone)
    assert {"ReceiveMessage", "DeleteMessageBatch"} <= actions, actions
    assert actions & {"SendMessage", "SendMessageBatch"}, actions
    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    allowed = {a for statement in policy["Statement"] for a in statement["Action"]}
    needed = {IAM_ACTION.get(action, action if ":" in action else f"sqs:{action}") for action in actions}
    assert {"s3:PutObject", "s3:GetObject", "s3:DeleteObject"} <= needed, needed
    assert needed <= allowed, needed - allowed
    # And S3 only within the bucket and the queue prefix (the policy's are the defaults: qm-payloads, qm)
    [s3_statement] = [s for s in policy["Statement"] if any(a.startswith("s3:") for a in s["Action"])]
    assert s3_statement["Resource"] == "arn:aws:s3:::qm-payloads/qm/*"


def _copy_lines(stage: str) -> list[tuple[list[str], str]]:
    """The (sources, destination) of each plain COPY in one stage of the Dockerfile."""
    copies: list[tuple[list[str], str]] = []
    current = None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words[:1] == ["FROM"]:
            current = words[-1] if "AS" in words else None
        elif current == stage and words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            copies.append((words[1:-1], words[-1]))
    return copies


def test_the_image_build_stage_copies_everything_the_wheel_and_the_programs_need(tmp_path: Path) -> None:
    # Given only what the Dockerfile's build stage copies, placed where it places it
    context = tmp_path / "src"
    context.mkdir()
    copies = _copy_lines("build")
    assert copies, "the Dockerfile has no build stage with COPY lines"
    for sources, destination in copies:
        for source in sources:
            target = context / destination if destination.rstrip("/") not in (".", "./") else context / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(ROOT / source, target if not target.is_dir() else target / source)
    # When the wheel is built there, as `pip install .` does in the image
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    wheel = next(tmp_path.glob("queue_manager-*.whl"))
    unpacked = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    # Then the API, the workers' actors and the client import from the wheel alone, schemas and console assets included
    probe = (
        "import api.app, actors, broker, queue_manager.client.cli, queue_manager.sqs.wait, schemas;"
        "from pathlib import Path;"
        "assert Path(api.app.__file__).is_relative_to(Path.cwd()), api.app.__file__;"
        "from queue_manager.settings import DEFAULT_SCHEMAS_DIR;"
        "assert sorted(p.name for p in DEFAULT_SCHEMAS_DIR.glob('*.json')), DEFAULT_SCHEMAS_DIR;"
        "import api.console.handlers as console;"
        "assert all((console.STATIC / n).is_file() for n in [*console.ASSETS, 'index.html']), console.STATIC;"
        "print(sorted(p.name for p in DEFAULT_SCHEMAS_DIR.glob('*.json')))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(unpacked),
        "AWS_REGION": "us-east-1",
        "QM_WORKER_METRICS_PORT": "0",
    }
    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=unpacked, env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0, ran.stderr
    shipped = sorted(p.name for p in (ROOT / "schemas").glob("*.json"))
    assert ran.stdout.strip() == repr(shipped)


@pytest.mark.api
async def test_the_iam_policy_allows_every_dynamodb_action_the_state_store_makes_on_its_table(
    settings: Settings, sqs_env: dict[str, str]
) -> None:
    # Given the state store on a table named as the policy's, and every DynamoDB call it makes recorded
    import dataclasses
    import fnmatch

    from queue_manager.state import dynamodb
    from queue_manager.state.base import ACCEPTED, StatusEvent
    from queue_manager.state.dynamodb import DynamoStatusEvents
    from queue_manager.state.dynamodb_keys import DynamoIdempotencyKeys

    policy = json.loads((ROOT / "deploy" / "iam-policy.json").read_text())
    statements = [s for s in policy["Statement"] if any(a.startswith("dynamodb:") for a in s["Action"])]
    table = statements[0]["Resource"].rsplit("/", 1)[1]
    state = dataclasses.replace(settings, state_table=table, state_endpoint_url=sqs_env["AWS_ENDPOINT_URL_DYNAMODB"])
    client = dynamodb.client(state, timeout_seconds=dynamodb.TABLE_CALL_TIMEOUT_SECONDS)
    made: set[str] = set()
    client.meta.events.register("before-call.dynamodb", lambda model, **_: made.add(model.name))
    try:
        # When it creates its table and takes every path: status written and read, keys claimed,
        # replayed, done, unknown, taken over and freed
        keys = DynamoIdempotencyKeys(state, lease_seconds=30, client=client)
        await keys.open()
        status = DynamoStatusEvents(client, table)
        status.write([StatusEvent("m-1", ACCEPTED, 1.0)])
        assert status.read("m-1")
        _, unknown, freed = [await keys.claim(k, "fp") for k in ("done", "unknown", "freed")]
        keys.done("done", "fp", {"id": "m-1"})
        keys.failed("unknown", unknown.owner or "", unknown=True)
        keys.failed("freed", freed.owner or "", unknown=False)
        await keys.flush()
        assert (await keys.claim("done", "fp")).answer == {"id": "m-1"}
        assert (await keys.claim("unknown", "fp")).resend
        await keys.close()
    finally:
        made_creating = set(made)
        client.delete_table(TableName=table)
    # Then every action is allowed on that table, and only creating the table needs the second statement
    assert {"CreateTable", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchWriteItem"} <= made_creating
    allowed = {a for s in statements for a in s["Action"]}
    assert {f"dynamodb:{name}" for name in made_creating} <= allowed, made_creating
    runtime = next(s for s in statements if s["Sid"] == "QueueManagerState")
    assert not any(a.endswith(("CreateTable", "UpdateTimeToLive")) for a in runtime["Action"])
    for statement in statements:
        assert fnmatch.fnmatch(f"arn:aws:dynamodb:us-east-1:123456789012:table/{table}", statement["Resource"])


def test_compose_passes_opentelemetrys_variables_through_to_the_api_and_the_worker() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    wanted = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER"}
    for name in ("api", "worker"):
        environment = compose["services"][name]["environment"]
        # without a value: taken from the shell when set there, else unset (tracing off), never ""
        assert {k: environment.get(k, "missing") for k in wanted} == dict.fromkeys(wanted)
        assert environment["OTEL_SDK_DISABLED"] is None
