"""The KEDA example in deploy/: only fields KEDA knows, triggers that point at what the product serves.

No network here: the field names below are copied from KEDA's documentation (keda.sh, v2.13-2.17):
the ScaledObject specification (reference/scaledobject-spec), the TriggerAuthentication
specification (concepts/authentication), and the scaler pages `metrics-api` and `aws-sqs`.
"""

from __future__ import annotations

from typing import Any

import yaml

from api.middlewares import OPEN_PATHS
from api.openapi import build_openapi
from queue_manager import scaling
from queue_manager.settings import Settings
from queue_manager.sqs.queues import fifo_name
from schemas import SchemaRegistry
from tests.conftest import ROOT

EXAMPLE = ROOT / "deploy" / "keda-scaledobject.yaml"

# reference/scaledobject-spec
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
    "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
SCALE_TARGET_REF = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "metadata", "name", "useCachedMetrics", "authenticationRef", "metricType"}
METRIC_TYPES = {"AverageValue", "Value", "Utilization"}
# scalers/metrics-api
METRICS_API = {
    "url", "format", "valueLocation", "targetValue", "activationTargetValue", "unsafeSsl", "authMode", "method",
    "keyParamName", "aggregateFromKubeServiceEndpoints", "aggregationType",
}  # fmt: skip
METRICS_API_REQUIRED = {"url", "valueLocation", "targetValue"}
METRICS_API_AUTH_MODES = {"apiKey", "basic", "tls", "bearer"}
# scalers/aws-sqs
AWS_SQS = {
    "queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion", "awsEndpoint",
    "identityOwner", "scaleOnInFlight", "scaleOnDelayed",
}  # fmt: skip
# concepts/authentication: TriggerAuthentication
TRIGGER_AUTH_SPEC = {"podIdentity", "secretTargetRef", "env", "hashiCorpVault", "azureKeyVault", "configMapTargetRef"}
SECRET_TARGET_REF = {"parameter", "name", "key"}
POD_IDENTITY = {"provider", "identityId", "roleArn", "identityOwner"}


def documents() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]


def _keys_within(mapping: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(mapping) - allowed
    assert not unknown, f"{where}: KEDA knows no {sorted(unknown)}"


def test_the_example_uses_only_fields_keda_documents() -> None:
    docs = documents()
    kinds = [d["kind"] for d in docs]
    assert kinds.count("ScaledObject") == 1
    auths = {d["metadata"]["name"]: d for d in docs if d["kind"] == "TriggerAuthentication"}
    for doc in docs:
        assert doc["apiVersion"] == "keda.sh/v1alpha1"
    scaled = next(d for d in docs if d["kind"] == "ScaledObject")
    spec = scaled["spec"]
    _keys_within(spec, SCALED_OBJECT_SPEC, "spec")
    _keys_within(spec["scaleTargetRef"], SCALE_TARGET_REF, "scaleTargetRef")
    assert "name" in spec["scaleTargetRef"]
    _keys_within(spec.get("advanced", {}), ADVANCED, "advanced")
    _keys_within(spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}), HPA_CONFIG, "hpa config")
    for trigger in spec["triggers"]:
        _keys_within(trigger, TRIGGER, "trigger")
        assert trigger.get("metricType", "AverageValue") in METRIC_TYPES
        # KEDA's trigger metadata is a map of strings
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["metadata"]
        if "authenticationRef" in trigger:
            assert trigger["authenticationRef"]["name"] in auths
    for auth in auths.values():
        _keys_within(auth["spec"], TRIGGER_AUTH_SPEC, "TriggerAuthentication")
        for ref in auth["spec"].get("secretTargetRef", []):
            _keys_within(ref, SECRET_TARGET_REF, "secretTargetRef")
        _keys_within(auth["spec"].get("podIdentity", {}), POD_IDENTITY, "podIdentity")


def test_the_metrics_api_trigger_reads_workers_needed_from_scaling_with_an_api_key() -> None:
    spec = next(d for d in documents() if d["kind"] == "ScaledObject")["spec"]
    (trigger,) = [t for t in spec["triggers"] if t["type"] == "metrics-api"]
    metadata = trigger["metadata"]
    _keys_within(metadata, METRICS_API, "metrics-api")
    assert set(metadata) >= METRICS_API_REQUIRED
    assert metadata["authMode"] in METRICS_API_AUTH_MODES
    # /scaling is served, behind the API keys like /queues
    assert metadata["url"].endswith("/scaling")
    document = build_openapi(SchemaRegistry.load(Settings().schemas_dir), Settings(), fifo_types=frozenset())
    assert "security" not in document["paths"]["/scaling"]["get"]  # the document's default: bearer
    assert "/scaling" not in OPEN_PATHS
    # valueLocation (a GJSON path; here plain dots) names a number in the answer
    answer = scaling.figures([("log", "qm_log", {"visible": 0, "in_flight": 0, "delayed": 0})], [],
                             target_latency_seconds=30)  # fmt: skip
    node: Any = answer
    for part in metadata["valueLocation"].split("."):
        node = node[part]
    assert node is None  # no reports: null, and the sqs triggers decide
    assert metadata["valueLocation"] == "total.workers_needed"


def test_the_sqs_triggers_watch_every_shipped_queue_on_visible_messages_only() -> None:
    spec = next(d for d in documents() if d["kind"] == "ScaledObject")["spec"]
    triggers = [t for t in spec["triggers"] if t["type"] == "aws-sqs-queue"]
    for trigger in triggers:
        _keys_within(trigger["metadata"], AWS_SQS, "aws-sqs-queue")
        assert trigger["metadata"]["scaleOnInFlight"] == "false"
        assert "awsRegion" in trigger["metadata"]
    settings = Settings()
    registry = SchemaRegistry.load(settings.schemas_dir)
    names = {t: settings.queue_name(t) for t in registry.types}
    expected = {fifo_name(name) if t in registry.fifo_types else name for t, name in names.items()}
    assert {t["metadata"]["queueURL"].rsplit("/", 1)[1] for t in triggers} == expected
