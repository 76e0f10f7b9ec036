"""Declaring a message type: one import, defaults from the settings, options that override them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import json
from broker import PermanentFailure, Retry, broker, message_type

@message_type("invoice", max_retries=1)
def invoice(payload):
    raise Retry(delay=10)

actors = {name: {**actor.options, "queue_name": actor.queue_name} for name, actor in broker.actors.items()}
print(json.dumps({n: {k: v for k, v in o.items() if k != "throws"} | {"throws": [t.__name__ for t in o["throws"]]}
                  for n, o in actors.items()}))
"""


def test_a_message_type_takes_its_defaults_from_the_settings_and_its_options_override_them() -> None:
    # Given settings for retries, backoff and the time limit in the environment
    env = {"QM_MAX_RETRIES": "7", "QM_MIN_BACKOFF_MS": "250", "QM_MAX_BACKOFF_MS": "9000", "QM_TIME_LIMIT_MS": "4000"}
    # When a module declares a message type with one import and one option
    done = subprocess.run(
        [sys.executable, "-c", "import actors\n" + PROBE],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "AWS_REGION": "us-east-1", "QM_WORKER_METRICS_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    declared = json.loads(done.stdout)
    # Then its queue is its name, the settings fill every default and its own option wins
    assert declared["invoice"] == {
        "queue_name": "invoice",
        "max_retries": 1,
        "min_backoff": 250,
        "max_backoff": 9000,
        "time_limit": 4000,
        "throws": ["PermanentFailure"],
    }
    # And the shipped types are declared the same way
    assert declared["webhook"]["max_retries"] == 7
    assert declared["webhook"]["throws"] == ["PermanentFailure"]
    assert declared["log"]["throws"] == []
