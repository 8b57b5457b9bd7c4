"""Optional OpenTelemetry tracing: spans for API requests, continued traces, no credentials recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.observability.tracing import build_tracer_provider
from gateway.services import build_services
from tests.support.clock import FakeClock
from tests.support.entra import FakeEntra, make_settings

pytestmark = pytest.mark.anyio
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
async def traced(database_url: str) -> AsyncIterator[tuple[AsyncTestClient, InMemorySpanExporter, FakeEntra]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = FakeClock()
    entra = FakeEntra(clock=clock)
    settings = make_settings(database_url=database_url)
    app = create_app(
        settings, build_services(settings, clock=clock, http=entra.client()), tracer_provider=provider
    )
    async with AsyncTestClient(app) as client:
        yield client, exporter, entra


async def test_request_span_continues_the_callers_trace(traced) -> None:  # type: ignore[no-untyped-def]
    """A session start produces a server span on the caller's trace, named by route, without headers."""
    client, exporter, entra = traced
    token = entra.mint_user_token()
    response = await client.post(
        "/api/session/start",
        headers={"Authorization": f"Bearer {token}", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        json={"agent_entra_app_id": "5b7d9f1a-3c5e-4a7b-9d1f-2a4c6e8b0d2f"},
    )
    assert response.status_code == 404
    [span] = [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert span.attributes is not None
    assert span.attributes.get("http.route") == "POST /api/session/start"
    assert token not in repr(span.attributes)
    assert not any("authorization" in key.lower() for key in span.attributes)


async def test_probes_are_not_traced(traced) -> None:  # type: ignore[no-untyped-def]
    """Liveness and readiness probes produce no spans."""
    client, exporter, _ = traced
    await client.get("/api/health/live")
    assert exporter.get_finished_spans() == ()


def test_tracing_is_off_without_an_endpoint() -> None:
    """No OTLP endpoint configured means no tracer provider and no tracing middleware."""
    assert build_tracer_provider(make_settings()) is None
    assert build_tracer_provider(make_settings(otel_exporter_endpoint="http://127.0.0.1:4318")) is not None
