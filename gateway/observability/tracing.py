"""Optional OpenTelemetry tracing: on when an OTLP endpoint is configured, off (and free) otherwise.

Incoming `traceparent` headers are continued, so a client's trace shows lkps's part of a session start.
No request or response headers are recorded: the Authorization header must never reach a tracing backend.
"""

from __future__ import annotations

from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from config import Settings

# Probes and scrapes would be most of the spans and none of the insight.
_UNTRACED = ["/api/health/live", "/api/health/ready", "/metrics"]


def build_tracer_provider(settings: Settings) -> TracerProvider | None:
    if settings.otel_exporter_endpoint is None:
        return None
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel_service_name, "deployment.environment": settings.environment}
        )
    )
    endpoint = f"{settings.otel_exporter_endpoint}/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def tracing_plugin(provider: TracerProvider) -> OpenTelemetryPlugin:
    return OpenTelemetryPlugin(
        OpenTelemetryConfig(tracer_provider=provider, exclude=_UNTRACED, exclude_spans=["receive", "send"])
    )
