"""What the settings say about tracing: the one decision of whether it is on, and where spans go."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from queue_manager.settings import Settings


@dataclasses.dataclass(frozen=True)
class TraceConfig:
    """What the settings say about tracing (the SDK reads the rest of OpenTelemetry's variables itself)."""

    #: The OTLP/HTTP traces URL, or None.
    traces_url: str | None
    #: The exporters asked for: otlp, console.
    exporters: tuple[str, ...]
    #: OTEL_SDK_DISABLED=true.
    disabled: bool
    #: QM_TRACE_CONSUMER=link: a process span only links to the message's creation, in a trace of its own.
    consumer_link_only: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> TraceConfig:
        url = settings.otlp_traces_endpoint
        if url is None and settings.otlp_endpoint is not None:
            url = settings.otlp_endpoint.rstrip("/") + "/v1/traces"
        exporters = tuple(e for e in settings.otel_traces_exporter if e != "none")
        if "none" in settings.otel_traces_exporter:
            exporters = ()
        if url is None:  # no endpoint: OTLP has nowhere to go (the spec's default would be localhost)
            exporters = tuple(e for e in exporters if e != "otlp")
        return cls(url, exporters, settings.otel_sdk_disabled, settings.trace_consumer == "link")

    @property
    def enabled(self) -> bool:
        """Whether spans go anywhere: an exporter configured, and the SDK not disabled."""
        return bool(self.exporters) and not self.disabled
