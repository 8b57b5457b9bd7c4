"""Fault drills for Microsoft Graph (client pre-authorization), through the HTTP API: Graph down while a
decision is cached, and Graph throttling with nothing cached. The rules (entra-tokens.md §2, the
pre-authorizer in authz/preauth.py): a cached answer is served while Graph fails, up to the maximum
staleness; without one, session start is 503 with Retry-After, never allowed and never denied; a 429's
Retry-After is honoured before Graph is asked again. Unit-level cases live in tests/authz/test_preauth.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.gateway.conftest import AGENT_ID
from tests.gateway.test_preauthorization import Enforcing, enforcing_gateway
from tests.gateway.test_session_start import assert_error
from tests.support.entra import SPA_CLIENT_ID, FakeResponse
from tests.support.graph import SCOPE_ID, application

pytestmark = pytest.mark.anyio

TTL = 300  # the pre-authorizer's cache TTL in enforcing_gateway (plus up to 10 % jitter)
MAX_STALE = 3600
OUTAGE = FakeResponse.json(503, {"error": {"code": "ServiceUnavailable", "message": "Graph is down"}})


@pytest.fixture
async def graph(database_url: str) -> AsyncIterator[Enforcing]:
    """An enforcing gateway whose Graph allows the SPA client, with fresh Graph tokens on every call."""
    async for running in enforcing_gateway(database_url, token_lifetime=60):
        running.graph.put(application(AGENT_ID, preauthorized={SPA_CLIENT_ID: [SCOPE_ID]}))
        yield running


async def test_graph_outage_serves_the_cached_decision_until_the_maximum_staleness(graph: Enforcing) -> None:
    """While Graph is down, sessions keep starting from the last good answer (one Graph attempt per backoff,
    not one per request); past the maximum staleness they get 503 with Retry-After and no row, and they
    start again by themselves once Graph answers."""
    gateway = graph.gateway
    assert (await gateway.start()).status_code == 200
    assert graph.graph.calls == 1
    gateway.entra.override("graph", OUTAGE)

    gateway.clock.advance(TTL * 1.2)  # the cached answer is no longer fresh
    responses = await asyncio.gather(*(gateway.start() for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert graph.graph.calls == 2  # one failed refresh for all ten

    gateway.clock.advance(MAX_STALE - TTL * 1.2 - 60)
    await gateway.register_agent(enforce=True)  # the registration lasts an hour; the drill lasts longer
    assert (await gateway.start()).status_code == 200
    gateway.clock.advance(120)  # past the maximum staleness
    rows = await gateway.session_rows()
    response = await gateway.start()
    body = assert_error(response, 503, "service_unavailable")
    assert "Microsoft Graph" in body["message"]
    assert int(response.headers["retry-after"]) >= 1
    assert await gateway.session_rows() == rows

    gateway.entra.override("graph", None)
    gateway.clock.advance(int(response.headers["retry-after"]))
    assert (await gateway.start()).status_code == 200


async def test_graph_throttling_is_503_with_its_retry_after_and_no_calls_before_then(
    graph: Enforcing,
) -> None:
    """A 429 from Graph with nothing cached makes session start 503 carrying Graph's Retry-After; until
    that time passes lkps does not call Graph again however many requests arrive, and then it recovers."""
    gateway = graph.gateway
    graph.graph.fail(429, times=1, retry_after=30)
    first = await gateway.start()
    assert_error(first, 503, "service_unavailable")
    assert 30 <= int(first.headers["retry-after"]) <= 33  # Graph's value plus at most 10 % spread
    responses = await asyncio.gather(*(gateway.start() for _ in range(20)))
    assert {r.status_code for r in responses} == {503}
    assert graph.graph.calls == 1
    assert await gateway.session_rows() == 0

    gateway.clock.advance(int(first.headers["retry-after"]))
    assert (await gateway.start()).status_code == 200
    assert graph.graph.calls == 2
