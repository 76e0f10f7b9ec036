"""Settings: every QM_ variable is parsed by its type, out-of-range values name the variable and its
range, and the AWS variables choose the endpoint and region."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from queue_manager.settings import DEFAULT_SCHEMAS_DIR, Settings, SettingsError, variable_names
from tests.conftest import settings_env


def test_no_variables_mean_the_defaults() -> None:
    assert Settings.from_env({}) == Settings()
    assert Settings().endpoint_url is None
    assert Settings().region == "us-east-1"
    assert Settings().schemas_dir == DEFAULT_SCHEMAS_DIR


def test_every_variable_round_trips_through_the_environment() -> None:
    # Given settings that differ from the defaults in a field of every type
    settings = Settings(
        endpoint_url="http://127.0.0.1:4566",
        region="eu-west-1",
        host="0.0.0.0",
        port=9000,
        queue_prefix="orders-eu",
        create_queues=False,
        max_retries=7,
        webhook_allowed_hosts=("hooks.test", "api.test:8443"),
        webhook_timeout_seconds=2.5,
        schemas_dir=Path("/srv/schemas"),
        stats_dir=Path("/var/stats"),
        api_keys=("Key-One", "Key-Two"),
        allow_unauthenticated=True,
        log_format="json",
    )
    # When they are written as QM_ and AWS_ variables and read back
    env = {**settings_env(settings), "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:4566", "AWS_REGION": "eu-west-1"}
    # Then every field comes back as it was
    assert Settings.from_env(env) == settings
    # And so do the defaults, written out in full
    assert Settings.from_env(settings_env(Settings())) == Settings()


@pytest.mark.parametrize(
    ("env", "field", "value"),
    [
        pytest.param({"QM_PORT": " 9000 "}, "port", 9000, id="int"),
        pytest.param({"QM_MAX_QUEUE_DEPTH": "1_000"}, "max_queue_depth", 1000, id="int-with-underscore"),
        pytest.param({"QM_SQS_TIMEOUT_SECONDS": "2.5"}, "sqs_timeout_seconds", 2.5, id="float"),
        pytest.param({"QM_REQUEST_TIMEOUT_SECONDS": "3"}, "request_timeout_seconds", 3.0, id="float-from-int"),
        pytest.param(
            {"QM_WEBHOOK_ALLOWED_HOSTS": " Hooks.Test, 127.0.0.1:8080 ,, "},
            "webhook_allowed_hosts",
            ("hooks.test", "127.0.0.1:8080"),
            id="tuple-of-hosts-lowercased",
        ),
        pytest.param({"QM_API_KEYS": "AbC, dEf"}, "api_keys", ("AbC", "dEf"), id="tuple-of-keys-keeps-case"),
        pytest.param({"QM_API_KEYS": ""}, "api_keys", (), id="empty-tuple"),
        pytest.param({"QM_SCHEMAS_DIR": "/srv/schemas"}, "schemas_dir", Path("/srv/schemas"), id="path"),
        pytest.param({"QM_STATS_DIR": "/var/stats"}, "stats_dir", Path("/var/stats"), id="optional-path"),
        pytest.param({"QM_API_KEYS_FILE": "/run/keys"}, "api_keys_file", Path("/run/keys"), id="optional-path-2"),
        pytest.param({"QM_QUEUE_PREFIX": "orders"}, "queue_prefix", "orders", id="str"),
        pytest.param({"QM_LOG_FORMAT": "text"}, "log_format", "text", id="choice"),
    ],
)
def test_each_variable_is_parsed_by_its_type(env: dict[str, str], field: str, value: object) -> None:
    settings = Settings.from_env(env)
    assert getattr(settings, field) == value
    assert type(getattr(settings, field)) is type(value)


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("Yes", True),
        (" ON ", True),
        ("0", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
    ],
)
def test_booleans_accept_the_usual_spellings(raw: str, value: bool) -> None:
    assert Settings.from_env({"QM_CREATE_QUEUES": raw}).create_queues is value
    assert Settings.from_env({"QM_ALLOW_UNAUTHENTICATED": raw}).allow_unauthenticated is value


def test_from_env_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QM_PORT", "9001")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    settings = Settings.from_env()
    assert (settings.port, settings.region) == (9001, "ap-south-1")


@pytest.mark.parametrize(
    ("env", "endpoint_url", "region"),
    [
        pytest.param({}, None, "us-east-1", id="none"),
        pytest.param(
            {"AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:4566", "AWS_REGION": "eu-west-1"},
            "http://127.0.0.1:4566",
            "eu-west-1",
            id="sqs-endpoint-and-region",
        ),
        pytest.param(
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_DEFAULT_REGION": "eu-central-1"},
            "http://127.0.0.1:1",
            "eu-central-1",
            id="general-fallbacks",
        ),
        pytest.param(
            {
                "AWS_ENDPOINT_URL_SQS": "http://127.0.0.1:2",
                "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
                "AWS_REGION": "eu-west-1",
                "AWS_DEFAULT_REGION": "eu-central-1",
            },
            "http://127.0.0.1:2",
            "eu-west-1",
            id="specific-wins",
        ),
        pytest.param(
            {"QM_ENDPOINT_URL": "http://127.0.0.1:3", "QM_REGION": "sa-east-1"},
            None,
            "us-east-1",
            id="qm-names-ignored",
        ),
    ],
)
def test_the_aws_variables_choose_the_endpoint_and_region(
    env: dict[str, str], endpoint_url: str | None, region: str
) -> None:
    settings = Settings.from_env(env)
    assert (settings.endpoint_url, settings.region) == (endpoint_url, region)


#: Every integer variable with a range, and that range (with the other variables at their defaults).
RANGES = [
    ("QM_PORT", 0, 65535),
    ("QM_MAX_RETRIES", 0, 999),
    ("QM_MIN_BACKOFF_MS", 1, 43_200_000),
    ("QM_MAX_BACKOFF_MS", 1000, 43_200_000),
    ("QM_VISIBILITY_TIMEOUT_SECONDS", 5, 43_200),
    ("QM_TIME_LIMIT_MS", 1, 43_200_000),
    ("QM_MAX_AGE_MS", 0, 1_209_600_000),
    ("QM_ACK_FLUSH_INTERVAL_MS", 1, 1000),
    ("QM_RECEIVE_WAIT_SECONDS", 1, 20),
    ("QM_SEND_CONCURRENCY", 1, 1024),
    ("QM_RECEIVE_LINGER_MS", 0, 1000),
    ("QM_RECEIVE_LOOKAHEAD", 0, 10),
    ("QM_IDEMPOTENCY_WINDOW_SECONDS", 0, 604_800),
    ("QM_SEND_LINGER_MS", 0, 1000),
    ("QM_MAX_WAITING_SENDS", 1, 1_000_000),
    ("QM_MAX_QUEUE_DEPTH", 0, 1_000_000_000),
    ("QM_WORKER_METRICS_PORT", 0, 65535),
]


@pytest.mark.parametrize(("name", "low", "high"), RANGES, ids=[r[0] for r in RANGES])
def test_an_integer_out_of_range_is_refused_naming_the_variable_and_its_range(name: str, low: int, high: int) -> None:
    # Given (so that the highest shortest backoff is allowed) the longest backoff at its highest
    others = {"QM_MAX_BACKOFF_MS": "43200000"} if name == "QM_MIN_BACKOFF_MS" else {}
    # Then both ends of the range are accepted
    assert getattr(Settings.from_env({**others, name: str(low)}), name.removeprefix("QM_").lower()) == low
    assert getattr(Settings.from_env({**others, name: str(high)}), name.removeprefix("QM_").lower()) == high
    # And one past either end is refused, naming the variable, its range and the value
    for value in (low - 1, high + 1):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**others, name: str(value)})
        assert str(raised.value) == f"{name} must be between {low} and {high}, got {value}."


def test_the_longest_backoff_may_not_be_shorter_than_the_shortest() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"QM_MIN_BACKOFF_MS": "2000", "QM_MAX_BACKOFF_MS": "1500"})
    assert str(raised.value) == "QM_MAX_BACKOFF_MS must be between 2000 and 43200000, got 1500."


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QM_PORT": "eighty"}, "QM_PORT must be an integer, got 'eighty'."),
        ({"QM_PORT": ""}, "QM_PORT must be an integer, got ''."),
        ({"QM_SQS_TIMEOUT_SECONDS": "soon"}, "QM_SQS_TIMEOUT_SECONDS must be a finite number, got 'soon'."),
        (
            {"QM_CREATE_QUEUES": "maybe"},
            "QM_CREATE_QUEUES must be a boolean (true/false, yes/no, on/off, 1/0), got 'maybe'.",
        ),
        ({"QM_LOG_FORMAT": "xml"}, "QM_LOG_FORMAT must be auto, json or text, got 'xml'."),
        (
            {"QM_QUEUE_PREFIX": "my.queues"},
            "QM_QUEUE_PREFIX must be 1-40 letters, digits, '-' or '_', got 'my.queues'.",
        ),
        ({"QM_QUEUE_PREFIX": "q" * 41}, f"QM_QUEUE_PREFIX must be 1-40 letters, digits, '-' or '_', got {'q' * 41!r}."),
    ],
    ids=["int", "empty-int", "float", "bool", "log-format", "prefix-characters", "prefix-length"],
)
def test_a_value_that_does_not_parse_is_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("name", "raw", "message"),
    [
        ("QM_SQS_TIMEOUT_SECONDS", "-1", "QM_SQS_TIMEOUT_SECONDS must be between 0.001 and 300, got -1.0."),
        ("QM_SQS_TIMEOUT_SECONDS", "0", "QM_SQS_TIMEOUT_SECONDS must be between 0.001 and 300, got 0.0."),
        ("QM_WEBHOOK_TIMEOUT_SECONDS", "-1", "QM_WEBHOOK_TIMEOUT_SECONDS must be between 0.001 and 3600, got -1.0."),
        ("QM_REQUEST_TIMEOUT_SECONDS", "-1", "QM_REQUEST_TIMEOUT_SECONDS must be between 0.001 and 3600, got -1.0."),
        ("QM_SHUTDOWN_TIMEOUT_SECONDS", "-1", "QM_SHUTDOWN_TIMEOUT_SECONDS must be between 0 and 3600, got -1.0."),
        ("QM_SQS_TIMEOUT_SECONDS", "nan", "QM_SQS_TIMEOUT_SECONDS must be a finite number, got 'nan'."),
        ("QM_REQUEST_TIMEOUT_SECONDS", "inf", "QM_REQUEST_TIMEOUT_SECONDS must be a finite number, got 'inf'."),
    ],
)
def test_a_timeout_that_is_negative_zero_or_not_a_number_is_refused(name: str, raw: str, message: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({name: raw})
    assert str(raised.value) == message


def test_a_float_out_of_range_given_in_code_is_refused_too() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings(sqs_timeout_seconds=float("nan"))
    assert str(raised.value) == "QM_SQS_TIMEOUT_SECONDS must be between 0.001 and 300, got nan."


def test_an_empty_schemas_dir_is_refused_rather_than_read_as_the_working_directory() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"QM_SCHEMAS_DIR": " "})
    assert str(raised.value) == "QM_SCHEMAS_DIR must be a path, got ' '."


def test_every_setting_has_a_meaning_a_parser_and_a_row_in_the_readme() -> None:
    readme = (DEFAULT_SCHEMAS_DIR.parent / "README.md").read_text(encoding="utf-8")
    for field in dataclasses.fields(Settings):
        assert field.metadata["doc"].endswith("."), field.name
        assert callable(field.metadata["parse"]), field.name
        name = variable_names(field)[0]  # QM_<FIELD>, or the AWS variable a field reads (AWS_REGION, ...)
        assert f"`{name}`" in readme, f"{name} is not in the README"


@pytest.mark.parametrize("name", ["QM_STATS_DIR", "QM_API_KEYS_FILE"])
def test_an_empty_optional_path_means_unset(name: str) -> None:
    settings = Settings.from_env({name: ""})
    assert getattr(settings, name.removeprefix("QM_").lower()) is None


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_api_keys_come_from_the_variable_then_the_file_without_comments_or_blanks(tmp_path: Path) -> None:
    # Given one key in QM_API_KEYS and two more in a file with a comment and a blank line
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated 2026-01\nkey-two\n\n  key-three  \n")
    settings = Settings.from_env({"QM_API_KEYS": "key-one", "QM_API_KEYS_FILE": str(keys_file)})
    # Then all three are accepted, in that order
    assert settings.accepted_api_keys() == ["key-one", "key-two", "key-three"]


def test_an_unreadable_api_keys_file_is_a_settings_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(SettingsError, match=f"^QM_API_KEYS_FILE {missing} cannot be read: "):
        Settings.from_env({"QM_API_KEYS_FILE": str(missing)}).accepted_api_keys()
