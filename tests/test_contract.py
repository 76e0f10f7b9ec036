"""Schemas fail fast and name the file; every message type has its actor; settings name their ranges."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from api.app import create_app
from schemas import SchemaLoadError, SchemaRegistry, json_pointer
from schemas.checks import destination_error
from settings import Settings, SettingsError


@pytest.mark.parametrize(
    ("content", "reason"),
    [("{not json", "not readable JSON"), ('{"type": 12}', "not a valid JSON Schema (draft 2020-12)")],
)
def test_a_broken_schema_stops_start_up_naming_the_file(
    tmp_path: Path, settings: Settings, content: str, reason: str
) -> None:
    (tmp_path / "good.json").write_text('{"type": "object"}')
    (tmp_path / "broken.json").write_text(content)
    with pytest.raises(SchemaLoadError, match=re.escape(f"broken.json: {reason}")):
        SchemaRegistry.load(tmp_path)
    with pytest.raises(SchemaLoadError, match=re.escape("broken.json")):
        create_app(dataclasses.replace(settings, schemas_dir=tmp_path))


def test_every_message_type_has_an_actor_of_the_same_name_and_queue() -> None:
    import actors

    registry = SchemaRegistry.load(Settings().schemas_dir)
    assert set(registry.types) == set(actors.broker.actors)
    for name, actor in actors.broker.actors.items():
        assert actor.queue_name == name


def test_json_pointers_escape_tilde_and_slash() -> None:
    assert json_pointer(["payload", "a/b", "c~d", 0]) == "/payload/a~1b/c~0d/0"


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://127.0.0.1:8080/x", None),
        ("https://localhost/x", None),
        ("http://api.test:8443/x", None),
        ("http://api.test:9000/x", "host api.test:9000 is not in QM_WEBHOOK_ALLOWED_HOSTS (127.0.0.1, api.test:8443)"),
        ("ftp://127.0.0.1/x", "the scheme must be http or https"),
        ("http://u:p@127.0.0.1/x", "credentials in the URL are not allowed; use headers"),
    ],
)
def test_webhook_destinations_are_checked_against_the_allow_list(url: str, error: str | None) -> None:
    allowed = ["127.0.0.1", "api.test:8443"] if "api.test" in url else ["127.0.0.1", "localhost"]
    assert destination_error(url, allowed) == error


def test_settings_are_parsed_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:1",
            "AWS_REGION": "eu-west-1",
            "QM_PORT": "9000",
            "QM_CREATE_QUEUES": "false",
            "QM_WEBHOOK_ALLOWED_HOSTS": "Example.com, 127.0.0.1:80",
            "QM_WEBHOOK_TIMEOUT_SECONDS": "2.5",
            "QM_SCHEMAS_DIR": "/tmp/s",
            "QM_API_KEYS": "AbC,dEf",
        }
    )
    assert settings.endpoint_url == "http://127.0.0.1:1"
    assert settings.region == "eu-west-1"
    assert settings.port == 9000
    assert settings.create_queues is False
    assert settings.webhook_allowed_hosts == ("example.com", "127.0.0.1:80")
    assert settings.webhook_timeout_seconds == 2.5
    assert settings.schemas_dir == Path("/tmp/s")
    assert settings.api_keys == ("AbC", "dEf")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QM_MAX_RETRIES": "1000"}, "QM_MAX_RETRIES must be between 0 and 999, got 1000."),
        ({"QM_VISIBILITY_TIMEOUT_SECONDS": "2"}, "QM_VISIBILITY_TIMEOUT_SECONDS must be between 5 and 43200, got 2."),
        ({"QM_PORT": "eighty"}, "QM_PORT must be a int, got 'eighty'."),
        ({"QM_CREATE_QUEUES": "maybe"}, "QM_CREATE_QUEUES must be a bool, got 'maybe'."),
    ],
)
def test_out_of_range_settings_name_the_variable_and_its_range(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value) == message
