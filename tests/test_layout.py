"""The shape of the code: no import circles, every module importable alone, the layers' rules kept.

A layer rule that breaks here is a design change: move the name to where it is decided (DESIGN.md,
"The layout") rather than loosening the rule.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from queue_manager.settings import Settings
from tests.conftest import ROOT

#: The product's code: what `make run` runs and what a user imports (tests and the bench are not).
PACKAGES = ("api", "actors", "queue_manager", "schemas")


def product_modules() -> dict[str, Path]:
    """Every module of the product, by dotted name."""
    modules = {"broker": ROOT / "broker.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Each module's imports of other product modules: every import statement, at any depth
    (inside functions and `if TYPE_CHECKING:` too), as written; a package's import of a submodule
    it names counts, the implicit import of a parent package does not."""
    modules = product_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circles() -> None:
    # Given every import of every product module, function-local and type-only ones included
    graph = import_graph()
    assert len(graph) > 40, sorted(graph)  # the walk found the product, not an empty folder
    # Then no module reaches itself through others
    assert cycles(graph) == []


def test_a_circle_is_found_when_there_is_one() -> None:
    # The detector itself: a two-module circle and a three-module one, beside an acyclic part
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # The API learns queue kinds from the schemas, never from the actors.
        ("api", ("actors",)),
        # Middleware never knows the concrete broker (Dramatiq's rule).
        ("queue_manager.sqs.middleware", ("queue_manager.sqs.broker", "broker")),
        # Consumers are given a context; they never reach back into the broker.
        ("queue_manager.sqs.consumer", ("queue_manager.sqs.broker", "broker")),
        # The client runs where the server's dependencies do not.
        ("queue_manager.client", ("api", "actors", "broker", "queue_manager.sqs")),
        # The contract is the ground: it imports nothing of the product.
        ("schemas", ("api", "actors", "broker", "queue_manager")),
        # The state store serves the API and the workers alike; it knows neither.
        ("queue_manager.state", ("api", "actors", "broker", "queue_manager.sqs")),
        # Tracing serves the API and the workers alike, and knows of SQS only its wire names (constants).
        (
            "queue_manager.tracing",
            (
                "api",
                "actors",
                "broker",
                "queue_manager.sqs.broker",
                "queue_manager.sqs.consumer",
                "queue_manager.sqs.acks",
                "queue_manager.sqs.middleware",
                "queue_manager.sqs.sending",
            ),
        ),
        # Large messages (S3) serve the API and the workers alike: they know neither, nor the broker or consumers.
        (
            "queue_manager.payloads",
            ("api", "actors", "broker", "queue_manager.sqs.broker", "queue_manager.sqs.consumer"),
        ),
        # The embedded server's long-poll wake runs in ministack's interpreter, where none of the product is.
        ("queue_manager.local_sqs_wake", ("queue_manager", "api", "actors", "broker", "schemas")),
        # Wire names and quotas are the bottom of the SQS package.
        ("queue_manager.sqs.constants", ("queue_manager", "api", "actors", "broker", "schemas")),
    ],
)
def test_a_layer_never_reaches_what_is_above_it(layer: str, forbidden: tuple[str, ...]) -> None:
    graph = import_graph()
    for module in [m for m in graph if m == layer or m.startswith(layer + ".")]:
        reached = reaches(graph, module)
        bad = sorted(r for r in reached if any(r == f or r.startswith(f + ".") for f in forbidden))
        assert bad == [], f"{module} reaches {bad}"


#: Run in one interpreter: preload the third-party libraries, then import each product module in a
#: forked child of its own, so each child starts with no product module loaded (fast, and as alone
#: as `python -c "import X"` for what matters here: the order product modules load in).
IMPORT_EACH_ALONE = """
import importlib, os, sys, traceback
import aiohttp.web, boto3, botocore, dramatiq, dramatiq_sqs, jsonschema, prometheus_client  # noqa: F401
failed = []
for module in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        failed.append(module)
print(",".join(failed))
"""


def test_every_module_imports_alone() -> None:
    # Given each product module, imported first in an interpreter of its own, no QM_ or AWS_ settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QM_", "AWS_"))}
    modules = sorted(product_modules())
    # When each is imported alone (`actors` builds the broker from the local defaults, as
    # `dramatiq actors` does: that needs no server)
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, *modules],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    # Then every one imports: no circle resolves only in some import order
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", done.stderr


def test_a_module_that_only_imports_in_some_order_is_caught(tmp_path: Path) -> None:
    # The check itself: two modules that import each other's names fail when the second comes first
    (tmp_path / "first.py").write_text("import second\nVALUE = 1\n")
    (tmp_path / "second.py").write_text("from first import VALUE\n")
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, "first", "second"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "first", done.stderr


def test_create_app_uses_only_the_settings_it_was_given(settings: Settings, tmp_path: Path) -> None:
    # Given an environment that would break the API were it read (a bad port, a bad retry count,
    # an SQS endpoint nobody listens on), and settings that point at the test's SQS server
    hostile = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("QM_", "AWS_ENDPOINT"))},
        "QM_PORT": "99999",
        "QM_MAX_RETRIES": "-1",
        "QM_QUEUE_PREFIX": "hostile",
        "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:9",
    }
    given = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    script = f"""
import asyncio, json, sys
from pathlib import Path
import dramatiq.broker
from aiohttp import web
from api import keys
from api.app import create_app
from queue_manager.settings import Settings

fields = json.loads({json.dumps(json.dumps(given, default=str))})
fields["schemas_dir"] = Path(fields["schemas_dir"])
fields = {{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}}
for name in ("stats_dir", "state_dir", "api_keys_file"):
    if fields.get(name) is not None:
        fields[name] = Path(fields[name])

async def main():
    app = create_app(Settings(**fields))
    runner = web.AppRunner(app)
    await runner.setup()
    broker = app[keys.BROKER]
    answer = {{
        "namespace": broker.namespace,
        "endpoint": broker.client.meta.endpoint_url,
        "max_receive_count": broker.max_receive_count("log"),
        "fifo": sorted(app[keys.FIFO_TYPES]),
        "queue_url": broker.ensure_queue("log").url,
        "actors_imported": "actors" in sys.modules,
        "global_broker": dramatiq.broker.global_broker is not None,
    }}
    await runner.cleanup()
    print(json.dumps(answer))

asyncio.run(main())
"""
    # When the app is built and started from those settings in that environment
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=hostile, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    # Then only the settings were used: their prefix, endpoint and retries; no actors, no global broker
    assert answer["namespace"] == settings.queue_prefix
    assert answer["endpoint"] == settings.endpoint_url
    assert answer["max_receive_count"] == settings.max_retries + 1 + settings.spare_receives
    assert answer["fifo"] == ["ordered"]
    assert f"/{settings.queue_prefix}_log" in answer["queue_url"]
    assert answer["actors_imported"] is False
    assert answer["global_broker"] is False
